"""/metrics/summary: exact figures for a known sequence, access rules, the window, Prometheus."""

import sqlite3
import threading
import time

import pytest
from flask import Flask, request
from metric_values import Delta
from werkzeug.serving import make_server

from examples.demo.servers import free_port
from flask_mpesa_monitor import MPesaMonitor, metrics
from flask_mpesa_monitor.summary import SummaryWindow, default_store_path

FIGURES = ("total_organizations", "active_users", "transactions_24h", "revenue_24h", "success_rate_24h")


@pytest.fixture(autouse=True)
def _no_multiprocess_env(monkeypatch):
    """The in-memory window, whatever the environment of the test run says."""
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.delenv("prometheus_multiproc_dir", raising=False)


def make_app(**config):
    app = Flask(__name__)
    app.config.update(config)
    monitor = MPesaMonitor(app)

    @monitor.user_resolver
    def current_user():
        return request.headers.get("X-User")

    @app.get("/orders/<org_id>")
    def orders(org_id):
        return "ok"

    return app, monitor


def stk_callback(checkout_id, code, amount=None):
    callback = {"MerchantRequestID": "m-1", "CheckoutRequestID": checkout_id, "ResultCode": code,
                "ResultDesc": "done"}
    if amount is not None:
        callback["CallbackMetadata"] = {"Item": [{"Name": "Amount", "Value": amount},
                                                 {"Name": "PhoneNumber", "Value": 254712345678}]}
    return {"Body": {"stkCallback": callback}}


def known_sequence(app, monitor):
    """acme: 4 completed (3 successes, 350 collected); duka: 3 completed (1 success, 75.50)."""
    monitor.record_stk_push("acme", "ws_CO_1", 100)
    monitor.record_stk_callback(stk_callback("ws_CO_1", 0, 100))
    monitor.record_stk_callback(stk_callback("ws_CO_1", 0, 100))       # Daraja retry: not counted
    monitor.record_stk_push("acme", "ws_CO_2", 40)
    monitor.record_stk_callback(stk_callback("ws_CO_2", "1032"))        # cancelled: not a success
    monitor.record_stk_push("acme", "ws_CO_3", 60)                      # no callback yet
    monitor.record_transaction("acme", "stk_push", "pending")           # not completed
    monitor.record_transaction("acme", "c2b", "success", amount=250)
    monitor.record_transaction("acme", "b2c", "success", amount=500)    # a payout: no revenue
    monitor.record_transaction("duka", "c2b", result_code=0, amount=75.5)
    monitor.record_transaction("duka", "reversal", "system_error")
    monitor.record_transaction("duka", "stk_push", result_code=1037)    # timeout
    client = app.test_client()
    for org, user in (("acme", "alice"), ("acme", "bob"), ("acme", "alice"), ("duka", "carol"),
                      ("duka", "alice"), ("duka", None)):
        headers = {"X-User": user} if user else {}
        assert client.get(f"/orders/{org}", headers=headers).status_code == 200
    return client


def figures(response):
    assert response.status_code == 200, response.text
    return {key: response.json[key] for key in FIGURES}


def test_summary_exact_figures_for_a_known_sequence():
    app, monitor = make_app()
    client = known_sequence(app, monitor)
    response = client.get("/metrics/summary")
    assert figures(response) == {"total_organizations": 2, "active_users": 3, "transactions_24h": 7,
                                 "revenue_24h": 425.5, "success_rate_24h": 57.1}
    assert response.json["source"] == "window" and response.json["revenue_by_currency"] == {"KES": 425.5}
    acme = client.get("/metrics/summary?organization=acme")
    assert figures(acme) == {"total_organizations": 1, "active_users": 2, "transactions_24h": 4,
                             "revenue_24h": 350.0, "success_rate_24h": 75.0}
    assert acme.json["organization"] == "acme"
    assert figures(client.get("/metrics/summary?organization=duka")) == {
        "total_organizations": 1, "active_users": 2, "transactions_24h": 3, "revenue_24h": 75.5,
        "success_rate_24h": 33.3}
    empty = figures(client.get("/metrics/summary?organization=nobody"))
    assert empty == {"total_organizations": 0, "active_users": 0, "transactions_24h": 0, "revenue_24h": 0,
                     "success_rate_24h": None}


def test_summary_guarded_like_metrics():
    app, monitor = make_app(MPESA_MONITOR_METRICS_TOKEN="summary-token")
    client = app.test_client()
    denied = client.get("/metrics/summary")
    assert denied.status_code == 401 and "WWW-Authenticate" in denied.headers
    assert client.get("/metrics/summary", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.get("/metrics/summary", headers={"Authorization": "Bearer summary-token"}).status_code == 200
    assert client.get("/metrics/summary?organization=a%20b",
                      headers={"Authorization": "Bearer summary-token"}).status_code == 400


def test_summary_tenant_cannot_read_another_tenants_summary():
    app, monitor = make_app(MPESA_MONITOR_METRICS_TOKEN="ops-token")

    @monitor.summary_access
    def who_may_see(organization):
        caller = request.headers.get("X-Caller-Org")
        return True if caller == "admin" else caller

    client = known_sequence(app, monitor)
    attempts = Delta("mpesa_cross_tenant_attempts_total", organization="acme")
    event = Delta("mpesa_security_events_total", event_type="cross_tenant_access", severity="critical",
                  organization="acme")
    as_acme = {"X-Caller-Org": "acme"}
    assert client.get("/metrics/summary?organization=duka", headers=as_acme).status_code == 403
    assert attempts.change() == 1 and event.change() == 1
    own = client.get("/metrics/summary?organization=acme", headers=as_acme)
    assert figures(own)["revenue_24h"] == 350.0
    scoped = client.get("/metrics/summary", headers=as_acme)  # no organization: only the caller's
    assert scoped.json["organization"] == "acme" and figures(scoped)["transactions_24h"] == 4
    assert attempts.change() == 1
    assert client.get("/metrics/summary").status_code == 403  # the rule names no one
    assert figures(client.get("/metrics/summary", headers={"X-Caller-Org": "admin"}))["transactions_24h"] == 7
    operator = client.get("/metrics/summary?organization=duka", headers={"Authorization": "Bearer ops-token"})
    assert figures(operator)["transactions_24h"] == 3


def test_summary_window_rolls_over_24_hours():
    window = SummaryWindow()
    start = 1_800_000_000.0
    window.record_transaction("acme", "c2b", "success", 10.0, now=start)
    window.record_user("acme", "alice", now=start)
    window.record_transaction("acme", "c2b", "success", 5.0, now=start + 3600)
    assert window.summary(now=start + 60)["transactions_24h"] == 1
    assert window.summary(now=start + 86400 - 60)["revenue_24h"] == 15.0
    later = window.summary(now=start + 86400 + 120)  # the first minute has left the window
    assert (later["transactions_24h"], later["revenue_24h"]) == (1, 5.0)
    assert window.summary(now=start + 2 * 86400)["active_users"] == 0
    assert window.summary(now=start + 2 * 86400)["transactions_24h"] == 0


def test_summary_active_users_exact_when_few_and_bounded_when_many(tmp_path):
    path = str(tmp_path / "users.sqlite")
    window = SummaryWindow(path, sketch_size=64)
    now = 1_800_000_000.0
    for i in range(63):
        window.record_user("acme", f"user-{i}", now=now)
    assert window.summary(now=now)["active_users"] == 63
    for i in range(5000):
        window.record_user("acme", f"user-{i}", now=now)
    estimate = window.summary(now=now)["active_users"]
    # K-minimum-values with K=64: ~13% standard error and a long right tail (the hash key is
    # random per store); outside half to twice the truth has a probability below 1e-5.
    assert 2500 < estimate < 10000
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM users").fetchone()[0] == 64
        assert "user-1" not in str(conn.execute("SELECT * FROM users").fetchall())


def test_summary_workers_sharing_a_store_add_up(tmp_path):
    path = str(tmp_path / "shared.sqlite")
    first, second = SummaryWindow(path), SummaryWindow(path)  # as two gunicorn workers
    first.record_transaction("acme", "c2b", "success", 100.0)
    second.record_transaction("acme", "stk_push", "customer_cancelled", 0.0)
    second.record_transaction("duka", "c2b", "success", 20.0)
    first.record_user("acme", "alice")
    second.record_user("duka", "alice")
    first.flush()
    second.flush()
    for window in (first, second):
        summary = window.summary()
        assert (summary["transactions_24h"], summary["revenue_24h"], summary["success_rate_24h"],
                summary["active_users"], summary["total_organizations"]) == (3, 120.0, 66.7, 1, 2)


def test_summary_store_defaults_beside_the_multiprocess_dir(monkeypatch, tmp_path):
    assert default_store_path(None) is None
    assert default_store_path("/data/summary.sqlite") == "/data/summary.sqlite"
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "prom") + "/")
    assert default_store_path(None) == str(tmp_path / "prom.summary.sqlite")


@pytest.mark.slow
def test_summary_from_prometheus(prometheus_factory):
    """Real Prometheus 2.42 scraping the app: the PromQL parses and the figures follow
    the counters (``increase`` extrapolates, so only approximately). About 7 s: Prometheus
    hands new targets to the scraper after its 5 s discovery delay."""
    org = "promsum"
    app, monitor = make_app()
    for outcome in ("success", "customer_cancelled"):
        metrics.transactions_total.labels(org, "c2b", outcome).inc(0)  # series at 0 before any sale
    metrics.revenue_total.labels(org, "KES").inc(0)
    port = free_port()
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        config = {"global": {"scrape_interval": "500ms", "evaluation_interval": "1s"},
                  "scrape_configs": [{"job_name": "mpesa-mcp",
                                      "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}]}
        prom = prometheus_factory(config)
        selector = f'mpesa_transactions_total{{organization="{org}",outcome="success"}}'
        prom.wait_for(lambda: (prom.value(f"count_over_time({selector}[1m])") or 0) >= 2, timeout=20)
        for _ in range(3):
            monitor.record_transaction(org, "c2b", "success", amount=100)
        monitor.record_transaction(org, "c2b", "customer_cancelled")
        prom.wait_for(lambda: prom.value(selector) == 3, timeout=20)
        time.sleep(0.7)  # one more sample after the change

        reader, _ = make_app(MPESA_MONITOR_PROMETHEUS_URL=prom.url)
        response = reader.test_client().get(f"/metrics/summary?organization={org}")
        assert response.status_code == 200, response.text
        body = response.json
        assert body["source"] == "prometheus" and body["organization"] == org
        assert body["total_organizations"] == 1
        assert 4 <= body["transactions_24h"] <= 6
        assert 300 <= body["revenue_24h"] <= 450
        # 3 of 4, each count extrapolated on its own (3 of 5 or 4 of 4 are possible too)
        assert 50 <= body["success_rate_24h"] <= 100
        everyone = reader.test_client().get("/metrics/summary")
        assert everyone.status_code == 200 and everyone.json["transactions_24h"] >= 4
    finally:
        server.shutdown()
        thread.join(5)


def test_summary_prometheus_unreachable_is_503():
    app, _ = make_app(MPESA_MONITOR_PROMETHEUS_URL=f"http://127.0.0.1:{free_port()}")
    response = app.test_client().get("/metrics/summary")
    assert response.status_code == 503 and "Prometheus did not answer" in response.json["message"]


def test_summary_unwritable_store_answers_503_and_requests_still_work(tmp_path):
    store_dir = tmp_path / "gone"
    store_dir.mkdir()  # init_app refuses a store that cannot be created
    app, monitor = make_app(MPESA_MONITOR_SUMMARY_DB=str(store_dir / "summary.sqlite"))
    store_dir.rmdir()  # and the directory disappears after start-up
    monitor.record_transaction("acme", "c2b", "success", amount=10)  # buffered: never raises
    client = app.test_client()
    assert client.get("/orders/acme", headers={"X-User": "alice"}).status_code == 200
    response = client.get("/metrics/summary")
    assert response.status_code == 503 and "could not be read" in response.json["message"]
    app.extensions["mpesa_monitor"].summary._ticker.stop()


EXIT_DURING_A_BACKGROUND_FLUSH = """
import sys, threading, time
from flask_mpesa_monitor.summary import SummaryWindow

writing, slow = threading.Event(), threading.Event()

class SlowWindow(SummaryWindow):
    def _write(self, *args, **kwargs):
        if slow.is_set():
            writing.set()
            time.sleep(0.5)  # the background flush holds the store while the process exits
        return super()._write(*args, **kwargs)

window = SlowWindow(sys.argv[1], flush_interval=0.01)
window.record_transaction("exitco", "c2b", "success", 10.0)
window.flush()  # the store is open
slow.set()
window.record_transaction("exitco", "c2b", "success", 20.0)
assert writing.wait(5)
window.record_transaction("exitco", "c2b", "success", 30.0)  # buffered behind the flush
"""


def test_summary_exit_during_a_background_flush_loses_nothing_and_never_crashes(tmp_path):
    """A worker that exits while the background thread writes the window: the store is
    closed only after that write, the last buffered figures are written, nothing is
    logged as failed. (Closing the connection under a running statement crashed the
    process with SIGSEGV.)"""
    import subprocess
    import sys

    store = tmp_path / "summary.sqlite"
    done = subprocess.run([sys.executable, "-c", EXIT_DURING_A_BACKGROUND_FLUSH, str(store)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "could not write" not in done.stderr, done.stderr
    with sqlite3.connect(store) as conn:
        completed, revenue = conn.execute("SELECT SUM(completed), SUM(revenue) FROM transactions "
                                          "WHERE organization = 'exitco'").fetchone()
    assert (completed, revenue) == (3, 60.0)
