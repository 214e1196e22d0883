import time

import pytest
from flask import Flask
from metric_values import Delta
from prometheus_client.parser import text_string_to_metric_families

from flask_mpesa_monitor import InvalidCallback, MPesaMonitor


def callback(checkout, code, amount=None, receipt="NLJ7RT61SV", phone=254708374149):
    stk = {"MerchantRequestID": "29115-34620561-1", "CheckoutRequestID": checkout,
           "ResultCode": code, "ResultDesc": "desc"}
    if amount is not None:
        stk["CallbackMetadata"] = {"Item": [
            {"Name": "Amount", "Value": amount},
            {"Name": "MpesaReceiptNumber", "Value": receipt},
            {"Name": "TransactionDate", "Value": 20191219102115},
            {"Name": "PhoneNumber", "Value": phone},
        ]}
    return {"Body": {"stkCallback": stk}}


def scraped_pending(monitor, organization):
    """``mpesa_stk_pending`` as a scrape of this app's ``/metrics`` shows it (read at scrape time)."""
    body, _ = monitor._state().exporter.render(None)
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == "mpesa_stk_pending" and sample.labels == {"organization": organization}:
                return sample.value
    return 0.0


@pytest.fixture
def monitor():
    app = Flask(__name__)
    app.config["MPESA_MONITOR_STK_CALLBACK_TIMEOUT"] = 60
    app.config["MPESA_MONITOR_MAX_PENDING_STK"] = 5
    return MPesaMonitor(app)


def test_stk_push_then_successful_callback(monitor):
    pushes = Delta("mpesa_stk_pushes_total", organization="acme")
    ok = Delta("mpesa_transactions_total", organization="acme", type="stk_push", outcome="success")
    revenue = Delta("mpesa_revenue_total", organization="acme", currency="KES")
    delays = Delta("mpesa_stk_callback_delay_seconds_count", organization="acme")
    pending = scraped_pending(monitor, "acme")
    monitor.record_stk_push("acme", "ws_CO_1", 150)
    assert scraped_pending(monitor, "acme") == pending + 1
    result = monitor.record_stk_callback(callback("ws_CO_1", 0, amount=150.0), "acme")
    assert result.outcome == "success" and result.amount == 150.0 and not result.duplicate
    assert result.delay_seconds is not None and result.delay_seconds >= 0
    assert pushes.change() == 1 and ok.change() == 1 and revenue.change() == 150.0 and delays.change() == 1
    assert scraped_pending(monitor, "acme") == pending


def test_stk_callback_delay_from_initiated_at(monitor):
    bucket = Delta("mpesa_stk_callback_delay_seconds_bucket", organization="jambo", le="30.0")
    below = Delta("mpesa_stk_callback_delay_seconds_bucket", organization="jambo", le="20.0")
    monitor.record_stk_push("jambo", "ws_CO_delay", 1)
    monitor.record_stk_callback(callback("ws_CO_delay", 0, amount=1), "jambo", initiated_at=time.time() - 25)
    assert bucket.change() == 1 and below.change() == 0


def test_duplicate_callback_counted_once(monitor):
    ok = Delta("mpesa_transactions_total", organization="acme", type="stk_push", outcome="success")
    revenue = Delta("mpesa_revenue_total", organization="acme", currency="KES")
    monitor.record_stk_push("acme", "ws_CO_dup", 10)
    first = monitor.record_stk_callback(callback("ws_CO_dup", 0, amount=10), "acme")
    second = monitor.record_stk_callback(callback("ws_CO_dup", 0, amount=10), "acme")
    assert not first.duplicate and second.duplicate
    assert ok.change() == 1 and revenue.change() == 10


@pytest.mark.parametrize("code, outcome", [(1032, "customer_cancelled"), ("1", "customer_error"),
                                           (1037, "timeout"), (1025, "provider_error")])
def test_failed_callback_counts_outcome_and_no_revenue(monitor, code, outcome):
    count = Delta("mpesa_transactions_total", organization="duka", type="stk_push", outcome=outcome)
    revenue = Delta("mpesa_revenue_total", organization="duka", currency="KES")
    monitor.record_stk_push("duka", f"ws_CO_{code}", 99)
    monitor.record_stk_callback(callback(f"ws_CO_{code}", code, amount=99), "duka")
    assert count.change() == 1 and revenue.change() == 0


@pytest.mark.parametrize(
    "payload, missing",
    [
        ("not json", "Body.stkCallback"),
        ({}, "Body"),
        ({"Body": {}}, "Body.stkCallback"),
        ({"Body": {"stkCallback": {"ResultCode": 0}}}, "CheckoutRequestID"),
        ({"Body": {"stkCallback": {"CheckoutRequestID": "x"}}}, "ResultCode"),
    ],
)
def test_malformed_callback_raises_and_counts_security_event(monitor, payload, missing):
    event = Delta("mpesa_security_events_total", event_type="invalid_callback", severity="medium",
                  organization="acme")
    with pytest.raises(InvalidCallback, match=missing):
        monitor.record_stk_callback(payload, "acme")
    assert event.change() == 1


def test_pending_push_past_timeout_counts_missing_once(monitor):
    state = monitor._state()
    missing = Delta("mpesa_stk_callbacks_missing_total", organization="safari")
    monitor.record_stk_push("safari", "ws_CO_lost", 5)
    assert state.transactions.expire(now=time.time() + 30) == 0
    assert state.transactions.expire(now=time.time() + 61) == 1
    assert state.transactions.expire(now=time.time() + 200) == 0
    assert missing.change() == 1


def test_pending_table_is_bounded(monitor):
    missing = Delta("mpesa_stk_callbacks_missing_total", organization="bounded")
    for i in range(8):
        monitor.record_stk_push("bounded", f"ws_CO_b{i}", 1)
    assert monitor._state().transactions.pending_count() == 5
    assert missing.change() == 3


def test_record_transaction_revenue_only_for_collections(monitor):
    c2b = Delta("mpesa_revenue_total", organization="acme", currency="KES")
    b2c = Delta("mpesa_transactions_total", organization="acme", type="b2c", outcome="success")
    assert monitor.record_transaction("acme", "c2b", outcome="success", amount=500) == "success"
    assert monitor.record_transaction("acme", "b2c", result_code=0, amount=10_000) == "success"
    assert monitor.record_transaction("acme", "b2c", result_code=2001) == "system_error"
    assert c2b.change() == 500 and b2c.change() == 1


@pytest.mark.parametrize(
    "kwargs, message",
    [({}, "outcome or a result_code"), ({"outcome": "great"}, "Unknown outcome"),
     ({"outcome": "success", "amount": -5}, "between 0"),
     ({"outcome": "success", "amount": float("inf")}, "finite"),
     ({"outcome": "success", "amount": 1e308}, "finite"),
     ({"outcome": "success", "amount": float("nan")}, "finite"),
     ({"outcome": "success", "currency": "shillings"}, "ISO 4217")],
)
def test_record_transaction_bad_input(monitor, kwargs, message):
    with pytest.raises(ValueError, match=message):
        monitor.record_transaction("acme", "c2b", **kwargs)


def _tracker(path, timeout=60.0):
    from flask_mpesa_monitor.stk_store import SQLitePendingStore
    from flask_mpesa_monitor.transactions import TransactionTracker

    return TransactionTracker(timeout, store=SQLitePendingStore(str(path), max_pending=100))


def test_shared_store_matches_callback_in_another_worker(tmp_path):
    """Two gunicorn workers: one sends the push, the other receives the callback, twice."""
    worker_a, worker_b = _tracker(tmp_path / "stk.sqlite"), _tracker(tmp_path / "stk.sqlite")
    ok = Delta("mpesa_transactions_total", organization="shared", type="stk_push", outcome="success")
    revenue = Delta("mpesa_revenue_total", organization="shared", currency="KES")
    missing = Delta("mpesa_stk_callbacks_missing_total", organization="shared")
    delays = Delta("mpesa_stk_callback_delay_seconds_count", organization="shared")
    worker_a.record_stk_push("shared", "ws_CO_shared", 70)
    assert worker_b.pending_count() == 1
    first = worker_b.record_stk_callback(callback("ws_CO_shared", 0, amount=70), "shared")
    again = worker_a.record_stk_callback(callback("ws_CO_shared", 0, amount=70), "shared")
    assert not first.duplicate and again.duplicate and first.delay_seconds is not None
    assert worker_a.expire(now=time.time() + 3600) == 0
    assert ok.change() == 1 and revenue.change() == 70 and missing.change() == 0 and delays.change() == 1


def test_shared_store_expires_a_push_once(tmp_path):
    worker_a, worker_b = _tracker(tmp_path / "stk.sqlite"), _tracker(tmp_path / "stk.sqlite")
    missing = Delta("mpesa_stk_callbacks_missing_total", organization="shared-lost")
    worker_a.record_stk_push("shared-lost", "ws_CO_lost_shared", 1)
    later = time.time() + 61
    assert worker_b.expire(now=later) + worker_a.expire(now=later) == 1
    assert missing.change() == 1


def test_default_store_is_shared_when_metrics_are_multiprocess(tmp_path, monkeypatch):
    from flask_mpesa_monitor.stk_store import MemoryPendingStore, SQLitePendingStore, default_store

    assert isinstance(default_store(10), MemoryPendingStore)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    store = default_store(10)
    assert isinstance(store, SQLitePendingStore) and not store.path.endswith(".db")


def test_shared_store_survives_workers_opening_it_together(tmp_path):
    """Four processes open the shared table at the same moment (gunicorn workers after
    fork): every push is remembered, none fails with "database is locked"."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(4)
    results = context.Queue()

    def worker(index):
        from flask_mpesa_monitor.stk_store import Push, SQLitePendingStore

        store = SQLitePendingStore(str(tmp_path / "race.sqlite"), max_pending=100)
        barrier.wait(10)
        try:
            store.add(f"ws_CO_race_{index}", Push("race", time.time(), 1.0))
            results.put("ok")
        except Exception as exc:  # reported to the test
            results.put(repr(exc))

    processes = [context.Process(target=worker, args=(i,)) for i in range(4)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(30)
    assert sorted(results.get(timeout=5) for _ in processes) == ["ok"] * 4
    from flask_mpesa_monitor.stk_store import SQLitePendingStore

    assert SQLitePendingStore(str(tmp_path / "race.sqlite"), 100).pending_count() == 4


def test_store_failure_does_not_break_the_payment_flow(monitor):
    class BrokenStore:
        def add(self, *args):
            raise OSError("disk full")

        complete = expire = add

        def pending_count(self):
            return 0

    monitor._state().transactions.store = BrokenStore()
    ok = Delta("mpesa_transactions_total", organization="broken", type="stk_push", outcome="success")
    kept = Delta("mpesa_revenue_unverified_total", organization="broken", currency="KES",
                 reason="store_unavailable")
    monitor.record_stk_push("broken", "ws_CO_broken", 5)
    result = monitor.record_stk_callback(callback("ws_CO_broken", 0, amount=5), "broken")
    assert result.outcome == "success" and ok.change() == 1
    assert kept.change() == 5  # not verifiable, but not lost either
