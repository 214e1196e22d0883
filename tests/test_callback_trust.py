"""Callback trust: only a callback that matches a recorded push of the same organization is
revenue, for at most the pushed amount; everything else is kept apart and signalled, and
real traffic (fast callbacks, late callbacks, retries, restarts) still matches once."""

import json
import math
import time

import pytest
from flask import Flask
from metric_values import Delta, value
from test_transactions import callback

from flask_mpesa_monitor import InvalidCallback, MPesaMonitor


@pytest.fixture
def monitor():
    app = Flask(__name__)
    app.config["MPESA_MONITOR_STK_CALLBACK_TIMEOUT"] = 60
    app.config["MPESA_MONITOR_STK_CALLBACK_GRACE"] = 10
    return MPesaMonitor(app)


def tracker(monitor):
    return monitor._state().transactions


class Watch:
    """The counters of one organization that these tests read."""

    def __init__(self, org):
        self.revenue = Delta("mpesa_revenue_total", organization=org, currency="KES")
        self.ok = Delta("mpesa_transactions_total", organization=org, type="stk_push", outcome="success")
        self.late = Delta("mpesa_stk_callbacks_late_total", organization=org)
        self.missing = Delta("mpesa_stk_callbacks_missing_total", organization=org)
        self.org = org

    def unverified(self, reason):
        return Delta("mpesa_revenue_unverified_total", organization=self.org, currency="KES", reason=reason)

    def event(self, event_type, severity):
        return Delta("mpesa_security_events_total", event_type=event_type, severity=severity,
                     organization=self.org)


def test_forged_callback_for_an_unknown_push_is_never_revenue(monitor):
    acme = Watch("trust-acme")
    unmatched, event = acme.unverified("unmatched"), acme.event("callback_unmatched", "medium")
    result = monitor.record_stk_callback(callback("ws_CO_forged", 0, amount=5000), "trust-acme")
    assert result.match == "held" and result.verified_amount == 0
    assert tracker(monitor).expire(now=time.time() + 5) == 0
    assert unmatched.change() == 0 and event.change() == 0  # still within the grace period
    tracker(monitor).expire(now=time.time() + 11)
    tracker(monitor).expire(now=time.time() + 3600)  # given up once, not again
    assert acme.revenue.change() == 0 and acme.ok.change() == 0
    assert unmatched.change() == 5000 and event.change() == 1


def test_callback_is_revenue_for_at_most_the_pushed_amount(monitor):
    acme = Watch("trust-cap")
    excess, event = acme.unverified("amount_mismatch"), acme.event("callback_amount_mismatch", "high")
    monitor.record_stk_push("trust-cap", "ws_CO_cap", 10)
    result = monitor.record_stk_callback(callback("ws_CO_cap", 0, amount=250_000), "trust-cap")
    assert result.match == "matched" and result.verified_amount == 10
    assert acme.revenue.change() == 10 and excess.change() == 250_000 - 10 and event.change() == 1


def test_pushed_amount_unknown_means_no_cap(monitor):
    acme = Watch("trust-nocap")
    event = acme.event("callback_amount_mismatch", "high")
    monitor.record_stk_push("trust-nocap", "ws_CO_nocap")
    monitor.record_stk_callback(callback("ws_CO_nocap", 0, amount=1234), "trust-nocap")
    assert acme.revenue.change() == 1234 and event.change() == 0


def test_callback_on_another_tenants_url_is_credited_to_neither(monitor):
    acme, globex = Watch("trust-acme2"), Watch("trust-globex")
    wrong = globex.unverified("wrong_organization")
    event = globex.event("callback_wrong_organization", "high")
    monitor.record_stk_push("trust-acme2", "ws_CO_acme_push", 700)
    result = monitor.record_stk_callback(callback("ws_CO_acme_push", 0, amount=700), "trust-globex")
    again = monitor.record_stk_callback(callback("ws_CO_acme_push", 0, amount=700), "trust-globex")
    assert result.match == "wrong_organization" and again.duplicate
    assert acme.revenue.change() == 0 and globex.revenue.change() == 0
    assert wrong.change() == 700 and event.change() == 1


@pytest.mark.parametrize("amount", [1e308, float("inf"), float("nan"), -5, 0, 250_000.01, True, "lots", [1]])
def test_impossible_amounts_are_invalid_and_revenue_stays_finite(monitor, amount):
    event = Delta("mpesa_security_events_total", event_type="invalid_callback", severity="medium",
                  organization="trust-inf")
    monitor.record_stk_push("trust-inf", "ws_CO_inf", 0)
    for _ in range(2):
        with pytest.raises(InvalidCallback, match="Amount"):
            monitor.record_stk_callback(callback("ws_CO_inf", 0, amount=amount), "trust-inf")
    assert event.change() == 2
    assert math.isfinite(value("mpesa_revenue_total", organization="trust-inf", currency="KES"))


def test_largest_allowed_amount_is_configurable(monitor):
    app = Flask(__name__)
    app.config["MPESA_MONITOR_MAX_TRANSACTION_AMOUNT"] = 500
    small = MPesaMonitor(app)
    small.record_stk_push("trust-max", "ws_CO_max", 0)
    with pytest.raises(InvalidCallback, match="at most 500"):
        small.record_stk_callback(callback("ws_CO_max", 0, amount=501), "trust-max")
    with pytest.raises(ValueError, match="between 0 and 500"):
        small.record_transaction("trust-max", "c2b", outcome="success", amount=501)


@pytest.mark.parametrize("code, outcome", [(0, "success"), ("0", "success"), (" 1032 ", "customer_cancelled"),
                                           ("SFC_IC0003", "system_error"), (2028, "system_error")])
def test_result_codes_of_every_accepted_shape(monitor, code, outcome):
    monitor.record_stk_push("trust-codes", f"ws_CO_code_{code!s}".replace(" ", ""), 1)
    result = monitor.record_stk_callback(callback(f"ws_CO_code_{code!s}".replace(" ", ""), code, amount=1),
                                         "trust-codes")
    assert result.outcome == outcome and result.match == "matched"


@pytest.mark.parametrize("code", [True, 1.5, [], {}, "abc", "0x10", "1" * 40, 10**400, "١٢"])
def test_other_result_codes_are_invalid(monitor, code):
    with pytest.raises(InvalidCallback, match="ResultCode"):
        monitor.record_stk_callback(callback("ws_CO_badcode", code), "trust-codes")


def test_summary_stays_json_when_a_figure_is_not_finite():
    from flask_mpesa_monitor.summary import SummaryWindow, json_safe

    window = SummaryWindow()
    window.record_transaction("trust-json", "stk_push", "success", 1e308)
    window.record_transaction("trust-json", "stk_push", "success", 1e308)
    window.record_transaction("trust-json", "stk_push", "success", float("inf"))
    figures = window.summary("trust-json")
    json.loads(json.dumps(figures, allow_nan=False))
    assert figures["revenue_24h"] is None or math.isfinite(figures["revenue_24h"])
    assert json_safe({"a": float("nan"), "b": {"c": float("-inf")}, "d": 1.5}) == {"a": None, "b": {"c": None},
                                                                                   "d": 1.5}


def test_metrics_summary_is_valid_json_after_huge_callbacks():
    app = Flask(__name__)
    app.config["MPESA_MONITOR_STK_MATCHING"] = False
    plain = MPesaMonitor(app)
    for i in range(2):
        with pytest.raises(InvalidCallback):
            plain.record_stk_callback(callback(f"ws_CO_huge{i}", 0, amount=1e308), "trust-huge")
    body = app.test_client().get("/metrics/summary").get_data(as_text=True)
    json.loads(body, parse_constant=lambda name: pytest.fail(f"{name} is not JSON"))


# --- real traffic that must still match ------------------------------------------------
def test_callback_that_beats_its_push_matches_once(monitor):
    acme = Watch("trust-fast")
    unmatched = acme.event("callback_unmatched", "medium")
    result = monitor.record_stk_callback(callback("ws_CO_fast", 0, amount=300), "trust-fast")
    assert result.match == "held" and acme.revenue.change() == 0
    retry = monitor.record_stk_callback(callback("ws_CO_fast", 0, amount=300), "trust-fast")
    assert retry.duplicate
    monitor.record_stk_push("trust-fast", "ws_CO_fast", 300)  # the app records it after Daraja answered
    tracker(monitor).expire(now=time.time() + 3600)
    assert acme.revenue.change() == 300 and acme.ok.change() == 1
    assert unmatched.change() == 0 and acme.missing.change() == 0


def test_callback_after_its_push_was_counted_missing_matches_once_as_late(monitor):
    acme = Watch("trust-late")
    monitor.record_stk_push("trust-late", "ws_CO_late", 80)
    assert tracker(monitor).expire(now=time.time() + 61) == 1
    result = monitor.record_stk_callback(callback("ws_CO_late", 0, amount=80), "trust-late")
    again = monitor.record_stk_callback(callback("ws_CO_late", 0, amount=80), "trust-late")
    assert result.match == "late" and again.duplicate
    assert acme.missing.change() == 1 and acme.late.change() == 1
    assert acme.revenue.change() == 80 and acme.ok.change() == 1


def test_stk_query_result_and_callback_resolve_a_push_once(monitor):
    acme = Watch("trust-query")
    monitor.record_stk_push("trust-query", "ws_CO_query", 40)
    monitor.record_transaction("trust-query", "stk_push", result_code=0, amount=40,
                               checkout_request_id="ws_CO_query")
    result = monitor.record_stk_callback(callback("ws_CO_query", 0, amount=40), "trust-query")
    assert result.duplicate and acme.revenue.change() == 40 and acme.ok.change() == 1


def test_record_transaction_stk_push_without_id_is_unverified(monitor):
    acme = Watch("trust-noid")
    kept = acme.unverified("no_checkout_id")
    monitor.record_transaction("trust-noid", "stk_push", outcome="success", amount=55)
    assert acme.revenue.change() == 0 and kept.change() == 55 and acme.ok.change() == 1


def test_matching_off_counts_callbacks_as_they_claim():
    app = Flask(__name__)
    app.config["MPESA_MONITOR_STK_MATCHING"] = "off"
    plain = MPesaMonitor(app)
    acme = Watch("trust-off")
    result = plain.record_stk_callback(callback("ws_CO_off", 0, amount=75), "trust-off")
    again = plain.record_stk_callback(callback("ws_CO_off", 0, amount=75), "trust-off")
    assert result.match == "unchecked" and again.duplicate
    assert acme.revenue.change() == 75 and acme.ok.change() == 1
    plain.record_transaction("trust-off", "stk_push", outcome="success", amount=5)
    assert acme.revenue.change() == 80


# --- bounds in bytes -------------------------------------------------------------------
def test_oversized_checkout_ids_are_refused_and_never_stored(monitor, tmp_path):
    from flask_mpesa_monitor.stk_store import SQLitePendingStore
    from flask_mpesa_monitor.transactions import TransactionTracker

    store = SQLitePendingStore(str(tmp_path / "stk.sqlite"), max_pending=100)
    shared = TransactionTracker(60, store=store)
    huge = "ws_CO_" + "x" * (1 << 20)
    shared.record_stk_push("trust-bytes", huge, 1)
    with pytest.raises(InvalidCallback, match="CheckoutRequestID"):
        shared.record_stk_callback(callback(huge, 0, amount=1), "trust-bytes")
    assert store.pending_count() == 0
    with pytest.raises(InvalidCallback, match="CheckoutRequestID"):
        shared.record_stk_callback(callback("ws CO spaced", 0, amount=1), "trust-bytes")


def test_shared_table_file_has_a_byte_bound(tmp_path):
    """A flood of the longest allowed ids keeps the file under its bound: rows are
    bounded in number and length, and SQLite's page limit is the backstop."""
    import os

    from flask_mpesa_monitor.stk_store import SQLitePendingStore, max_bytes
    from flask_mpesa_monitor.transactions import TransactionTracker

    path = tmp_path / "stk.sqlite"
    shared = TransactionTracker(60, store=SQLitePendingStore(str(path), max_pending=50), grace=0.001)
    for i in range(600):
        checkout = f"ws_CO_{i:06d}_" + "y" * 51
        assert len(checkout) == 64
        shared.record_stk_push("trust-flood", checkout, 1) if i % 2 else None
        shared.record_stk_callback(callback(checkout[::-1][:64], 0, amount=1), "trust-flood")
    shared.expire(now=time.time() + 3600)
    size = sum(os.path.getsize(p) for p in tmp_path.glob("stk.sqlite*"))
    assert size < max_bytes(50) + (4 << 20)  # file plus the WAL's checkpoint window
    assert os.path.getsize(path) <= max_bytes(50)


def test_callback_body_size_is_capped():
    app = Flask(__name__)
    app.config["MPESA_MONITOR_MAX_CALLBACK_BYTES"] = 2048
    capped = MPesaMonitor(app)
    errors = []

    @app.post("/cb/<org_id>")
    def cb(org_id):
        try:
            capped.record_stk_callback(callback("ws_CO_big", 0, amount=1), org_id)
        except InvalidCallback as exc:
            errors.append(str(exc))
            return {"ResultCode": 1}, 400
        return {"ResultCode": 0}

    event = Delta("mpesa_security_events_total", event_type="invalid_callback", severity="medium",
                  organization="trust-big")
    client = app.test_client()
    assert client.post("/cb/trust-big", data=b"x" * 3000, content_type="application/json").status_code == 400
    assert "3000 bytes" in errors[0] and event.change() == 1
    capped.record_stk_push("trust-big", "ws_CO_big", 1)
    assert client.post("/cb/trust-big", data=b"x" * 100, content_type="application/json").status_code == 200


# --- restarts and several hosts --------------------------------------------------------
def test_start_hook_keeps_the_pending_table_and_drops_old_rows(tmp_path, monkeypatch):
    """gunicorn restarted between a push and its callback: the master's start hook clears
    the metric files, the table keeps the push (rows older than a day go)."""
    import sqlite3

    from examples.demo import gunicorn_conf
    from flask_mpesa_monitor.stk_store import FILE_NAME, SQLitePendingStore
    from flask_mpesa_monitor.transactions import TransactionTracker

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    before = TransactionTracker(60, store=SQLitePendingStore(str(tmp_path / FILE_NAME), 100))
    before.record_stk_push("trust-restart", "ws_CO_across_restart", 20)
    before.record_stk_push("trust-restart", "ws_CO_ancient", 20)
    with sqlite3.connect(tmp_path / FILE_NAME) as conn:
        conn.execute("UPDATE mpesa_monitor_stk SET updated = updated - 2 * 86400, started = started - 2 * 86400 "
                     "WHERE checkout = 'ws_CO_ancient'")
    (tmp_path / "counter_123.db").write_bytes(b"old metrics")
    gunicorn_conf.on_starting(None)
    assert not (tmp_path / "counter_123.db").exists()
    acme = Watch("trust-restart")
    after = TransactionTracker(60, store=SQLitePendingStore(str(tmp_path / FILE_NAME), 100))
    assert after.pending_count() == 1
    result = after.record_stk_callback(callback("ws_CO_across_restart", 0, amount=20), "trust-restart")
    assert result.match == "matched" and acme.revenue.change() == 20


def test_start_hook_removes_an_unreadable_table(tmp_path):
    from flask_mpesa_monitor.stk_store import FILE_NAME, prune_on_start

    (tmp_path / FILE_NAME).write_bytes(b"not a database" * 100)
    assert prune_on_start(tmp_path) == 0
    assert not (tmp_path / FILE_NAME).exists()


def test_shared_postgres_table_matches_callbacks_across_hosts(postgres):
    """Host A sends the push, host B gets the callback (and A its retry): one match."""
    import psycopg2

    from flask_mpesa_monitor.stk_store import PostgresPendingStore
    from flask_mpesa_monitor.transactions import TransactionTracker

    with psycopg2.connect(postgres.dsn) as conn, conn.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS mpesa_monitor_stk")
    host_a = TransactionTracker(60, store=PostgresPendingStore(postgres.dsn, 100))
    host_b = TransactionTracker(60, store=PostgresPendingStore(postgres.dsn, 100))
    acme = Watch("trust-pg")
    unmatched = acme.unverified("unmatched")
    host_a.record_stk_push("trust-pg", "ws_CO_pg_1", 90)
    assert host_b.pending_count() == 1
    first = host_b.record_stk_callback(callback("ws_CO_pg_1", 0, amount=90), "trust-pg")
    retry = host_a.record_stk_callback(callback("ws_CO_pg_1", 0, amount=90), "trust-pg")
    assert first.match == "matched" and retry.duplicate
    # A fast callback on host B, its push recorded on host A just after.
    assert host_b.record_stk_callback(callback("ws_CO_pg_2", 0, amount=15), "trust-pg").match == "held"
    host_a.record_stk_push("trust-pg", "ws_CO_pg_2", 15)
    # A forged one, never pushed, given up once by whichever host expires first.
    host_b.record_stk_callback(callback("ws_CO_pg_forged", 0, amount=500), "trust-pg")
    later = time.time() + 3600
    assert host_a.expire(now=later) + host_b.expire(now=later) == 0
    assert acme.revenue.change() == 105 and acme.ok.change() == 2 and unmatched.change() == 500
    # Bounded like the SQLite table: the oldest pending pushes are evicted as missing.
    small = TransactionTracker(60, store=PostgresPendingStore(postgres.dsn, 3))
    for i in range(5):
        small.record_stk_push("trust-pg", f"ws_CO_pg_bound_{i}", 1)
    assert small.pending_count() == 3 and acme.missing.change() == 2


def test_extension_uses_the_shared_store_setting(postgres):
    from flask_mpesa_monitor.stk_store import PostgresPendingStore

    app = Flask(__name__)
    app.config["MPESA_MONITOR_STK_STORE_URL"] = postgres.dsn
    shared = MPesaMonitor(app)
    assert isinstance(shared._state().transactions.store, PostgresPendingStore)
    shared.record_stk_push("trust-pg-ext", "ws_CO_pg_ext", 5)
    assert shared._state().transactions.pending_count() >= 1


def test_bounds_hold_within_a_small_slack_when_checked_every_few_writes():
    from flask_mpesa_monitor.stk_store import MemoryPendingStore
    from flask_mpesa_monitor.transactions import TransactionTracker

    store = MemoryPendingStore(1000)
    busy = TransactionTracker(60, store=store)
    missing = Delta("mpesa_stk_callbacks_missing_total", organization="trust-slack")
    for i in range(3000):
        busy.record_stk_push("trust-slack", f"ws_CO_slack_{i}", 1)
        assert store.pending_count() <= 1000 + store.check_every
    assert missing.change() >= 2000 - store.check_every
    # The newest pushes are the ones kept: their callbacks still match.
    assert busy.record_stk_callback(callback("ws_CO_slack_2999", 0, amount=1), "trust-slack").match == "matched"


def test_shared_postgres_table_down_never_breaks_the_payment_flow(postgres, monkeypatch):
    from flask_mpesa_monitor.stk_store import PostgresPendingStore
    from flask_mpesa_monitor.transactions import TransactionTracker

    store = PostgresPendingStore(postgres.dsn, 100)
    host = TransactionTracker(60, store=store)
    acme = Watch("trust-pg-down")
    kept = acme.unverified("store_unavailable")
    postgres.stop()
    try:
        host.record_stk_push("trust-pg-down", "ws_CO_pg_down", 30)  # logged, not raised
        result = host.record_stk_callback(callback("ws_CO_pg_down", 0, amount=30), "trust-pg-down")
        assert result.match == "unchecked" and acme.ok.change() == 1 and kept.change() == 30
        assert store._retry_at > 0  # backs off instead of a connect timeout per request
    finally:
        postgres.start()
    monkeypatch.setattr(store, "_retry_at", 0.0)
    host.record_stk_push("trust-pg-down", "ws_CO_pg_back", 30)
    assert host.record_stk_callback(callback("ws_CO_pg_back", 0, amount=30), "trust-pg-down").match == "matched"


@pytest.mark.parametrize("amount", [float("inf"), float("nan"), -3, 1e308, "junk"])
def test_push_with_an_impossible_amount_is_remembered_without_a_cap(monitor, amount):
    acme = Watch("trust-pushamt")
    monitor.record_stk_push("trust-pushamt", f"ws_CO_pushamt_{len(str(amount))}_{str(amount)[:3]}", amount)
    result = monitor.record_stk_callback(
        callback(f"ws_CO_pushamt_{len(str(amount))}_{str(amount)[:3]}", 0, amount=60), "trust-pushamt")
    assert result.match == "matched" and acme.revenue.change() == 60
