"""``mpesa_stk_pending`` is read from the STK table at scrape time, by every renderer.

Pushes and callbacks of one payment often land on different gunicorn workers; a gauge
kept as per-worker increments and decrements then drifts, and goes negative once the
worker that counted the push dies. Read from the shared table it is exact.
"""

import subprocess
import sys
import time

from flask import Flask
from prometheus_client.parser import text_string_to_metric_families

from flask_mpesa_monitor import MPesaMonitor
from flask_mpesa_monitor.collectors import StkPendingCollector
from flask_mpesa_monitor.exposition import MetricsExporter
from flask_mpesa_monitor.stk_store import Push, SQLitePendingStore
from flask_mpesa_monitor.transactions import TransactionTracker

OPENMETRICS = "application/openmetrics-text; version=1.0.0"

WORKER = r'''
import sys
from flask_mpesa_monitor.stk_store import SQLitePendingStore
from flask_mpesa_monitor.transactions import TransactionTracker
directory, action = sys.argv[1], sys.argv[2]
tracker = TransactionTracker(120, 100, store=SQLitePendingStore(directory + "/mpesa_monitor_stk.sqlite", 100))
if action == "push":
    for i in range(3):
        tracker.record_stk_push("acme", f"ws_CO_{i}", 10)
    tracker.record_stk_push("globex", "ws_CO_g", 10)
else:
    tracker.record_stk_callback({"Body": {"stkCallback": {
        "CheckoutRequestID": "ws_CO_0", "ResultCode": 0,
        "CallbackMetadata": {"Item": [{"Name": "Amount", "Value": 10}]}}}}, "acme")
'''


def pending(body, organization):
    values = [s.value for family in text_string_to_metric_families(body.decode()) for s in family.samples
              if s.name == "mpesa_stk_pending" and s.labels == {"organization": organization}]
    assert len(values) <= 1
    return values[0] if values else 0.0


def missing(body, organization):
    return sum(s.value for family in text_string_to_metric_families(body.decode()) for s in family.samples
               if s.name == "mpesa_stk_callbacks_missing_total" and s.labels == {"organization": organization})


def test_pending_is_the_table_in_one_process_text_and_openmetrics():
    app = Flask(__name__)
    monitor = MPesaMonitor(app)
    exporter = monitor._state().exporter
    monitor.record_stk_push("pendco", "ws_CO_p1", 5)
    monitor.record_stk_push("pendco", "ws_CO_p2", 5)
    for accept in (None, OPENMETRICS):
        body, _ = exporter.render(accept)
        assert pending(body, "pendco") == 2
        assert body.count(b"# TYPE mpesa_stk_pending gauge") == 1
    monitor.record_stk_callback({"Body": {"stkCallback": {"CheckoutRequestID": "ws_CO_p1", "ResultCode": 1032}}},
                                "pendco")
    assert pending(exporter.render(None)[0], "pendco") == 1


def test_a_scrape_expires_old_pushes_without_any_traffic():
    app = Flask(__name__)
    monitor = MPesaMonitor(app)
    state = monitor._state()
    state.transactions.store.add("ws_CO_old", Push("expireco", time.time() - 10 * state.config.stk_callback_timeout, 1))
    before = missing(state.exporter.render(None)[0], "expireco")  # this scrape expires it ...
    assert pending(state.exporter.render(None)[0], "expireco") == 0
    after = missing(state.exporter.render(None)[0], "expireco")
    assert after == before == 1  # ... counted once, in that same scrape


def test_pending_exact_after_the_worker_that_pushed_died(tmp_path, monkeypatch):
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PATH": "/usr/bin:/bin", "PYTHONPATH": "."}
    for action in ("push", "callback"):  # two workers: one pushes, the other gets a callback; both exit
        subprocess.run([sys.executable, "-c", WORKER, str(tmp_path), action], env=env, check=True, timeout=60)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    exporter = MetricsExporter()
    tracker = TransactionTracker(120, 100, store=SQLitePendingStore(str(tmp_path / "mpesa_monitor_stk.sqlite"), 100))
    exporter.register(StkPendingCollector(tracker))
    renders = [exporter.render(None)[0], exporter.render(OPENMETRICS)[0]]
    exporter._renderer = None  # the MultiProcessCollector fallback writes it too
    renders.append(exporter.render(None)[0])
    for body in renders:
        assert pending(body, "acme") == 2 and pending(body, "globex") == 1
        assert b"mpesa_stk_pushes_total" in body  # the workers' files are still rendered


def test_a_failing_collector_never_fails_the_scrape():
    class Broken:
        def collect(self):
            raise RuntimeError("table unavailable")

    exporter = MetricsExporter()
    exporter.register(Broken())
    body, _ = exporter.render(None)
    assert b"mpesa_mcp_build_info" in body


def test_an_app_registers_its_own_scrape_time_collector():
    from prometheus_client.core import GaugeMetricFamily

    class QueueDepth:  # e.g. read from the app's own shared queue at each scrape
        def collect(self):
            yield GaugeMetricFamily("app_queue_depth", "Jobs waiting.", value=7)

    app = Flask(__name__)
    monitor = MPesaMonitor(app)
    monitor.register_collector(QueueDepth())
    client = app.test_client()
    for accept in ("text/plain", OPENMETRICS):
        body = client.get("/metrics", headers={"Accept": accept}).data
        values = [s.value for family in text_string_to_metric_families(body.decode().replace("# EOF\n", ""))
                  for s in family.samples if s.name == "app_queue_depth"]
        assert values == [7.0]
