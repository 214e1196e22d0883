"""App-side alerts: a real Alertmanager (Debian's 0.25) receives them, outages do not slow requests."""

import json
import logging
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from flask import Flask
from metric_values import Delta

from examples.demo.servers import free_port, wait_until
from flask_mpesa_monitor import AlertLevel, MPesaMonitor
from flask_mpesa_monitor.alerts import AlertSender, alert_name

ROOT = Path(__file__).resolve().parent.parent
PHONE = "254712345678"
AM_CONFIG = """
route:
  receiver: "null"
  group_wait: 1h
receivers:
  - name: "null"
"""


def make_app(**config):
    app = Flask(__name__)
    app.config.update(config)
    monitor = MPesaMonitor(app)
    return app, monitor


@pytest.fixture
def sender_cleanup():
    """Forget waiting alerts of the apps a test made, so nothing is flushed at exit."""
    apps = []
    yield apps.append
    for app in apps:
        sender = app.extensions["mpesa_monitor"].alerts
        sender.discard_pending()
        sender.stop()


def test_alert_name_is_camel_case_of_the_title():
    assert alert_name("Cross-tenant access attempt") == "CrossTenantAccessAttempt"
    assert alert_name("MPesa API down") == "MPesaAPIDown"
    assert alert_name("2 many retries!") == "App2ManyRetries"
    assert alert_name("CrossTenantAccessAttempt") == "CrossTenantAccessAttempt"
    assert alert_name(f"Paid by {PHONE}") == "PaidBy"
    assert alert_name(f"Pay{PHONE}") == "Pay"


def test_alert_reaches_alertmanager_with_labels_and_masked_annotations(alertmanager_factory, sender_cleanup):
    am = alertmanager_factory(AM_CONFIG)
    app, monitor = make_app(MPESA_MONITOR_ALERTMANAGER_URL=am.url,
                            MPESA_MONITOR_DASHBOARD_URL="http://grafana.example:3000",
                            MPESA_MONITOR_RUNBOOK_URL="https://wiki.example/mpesa/runbooks")
    sender_cleanup(app)
    sent = Delta("mpesa_alerts_sent_total", severity="critical", result="sent")
    assert monitor.send_alert(
        AlertLevel.CRITICAL, "Float running low", f"Paybill float low; last payer {PHONE}",
        details={"phone": PHONE, "consumer_secret": "s3cr3t-value", "balance": 9500, "note": f"call {PHONE}"},
        organization="acme",
    ) is True
    [alert] = am.wait_for(lambda: am.alerts(labels={"alertname": "FloatRunningLow"}), timeout=10)
    labels = alert["labels"]
    assert {k: labels[k] for k in ("alertname", "severity", "service", "organization", "source")} == {
        "alertname": "FloatRunningLow", "severity": "critical", "service": "mpesa-mcp",
        "organization": "acme", "source": "app"}
    notes = alert["annotations"]
    assert notes["summary"] == "Float running low"
    assert notes["runbook_url"] == "https://wiki.example/mpesa/runbooks#floatrunninglow"
    assert notes["dashboard_url"] == "http://grafana.example:3000/d/mpesa-organization?var-organization=acme"
    assert json.loads(notes["details"])["balance"] == 9500
    text = json.dumps(alert)
    assert PHONE not in text and "s3cr3t-value" not in text
    assert "2547******78" in notes["description"]
    assert alert["endsAt"] > alert["startsAt"]
    wait_until(lambda: sent.change() == 1, timeout=5)


def test_alert_cross_tenant_attempt_raises_critical_alert(alertmanager_factory, sender_cleanup):
    am = alertmanager_factory(AM_CONFIG)
    app, monitor = make_app(MPESA_MONITOR_ALERTMANAGER_URL=am.url)
    sender_cleanup(app)
    assert monitor.verify_tenant_isolation("acme", "jambo") is False
    [alert] = am.wait_for(lambda: am.alerts(labels={"alertname": "CrossTenantAccessAttempt"}), timeout=10)
    assert alert["labels"]["severity"] == "critical"
    assert alert["labels"]["organization"] == "acme" and alert["labels"]["source"] == "app"
    assert alert["annotations"]["target_organization"] == "jambo"
    # No MPESA_MONITOR_RUNBOOK_URL: no runbook link (none is served by default).
    assert "runbook_url" not in alert["annotations"]


def test_alert_outage_keeps_requests_fast_and_delivers_after_restart(alertmanager_factory, sender_cleanup):
    am = alertmanager_factory(AM_CONFIG)
    app, monitor = make_app(MPESA_MONITOR_ALERTMANAGER_URL=am.url, MPESA_MONITOR_ALERT_TIMEOUT=2.0)
    sender_cleanup(app)
    sender = app.extensions["mpesa_monitor"].alerts
    sender.backoff_max = 1.0  # keep the test short; the default bound is 10 s

    @app.post("/pay/<org_id>")
    def pay(org_id):
        monitor.send_alert(AlertLevel.HIGH, "Payment anomaly", "odd payment pattern", organization=org_id)
        return "ok"

    client = app.test_client()

    def timed_requests(count=40):
        durations = []
        for _ in range(count):
            started = time.perf_counter()
            assert client.post("/pay/acme").status_code == 200
            durations.append(time.perf_counter() - started)
        return statistics.median(durations), max(durations)

    baseline_median, _ = timed_requests()
    am.wait_for(lambda: am.alerts(labels={"alertname": "PaymentAnomaly"}), timeout=10)

    am.stop()
    marker = uuid.uuid4().hex[:8]
    monitor.send_alert(AlertLevel.CRITICAL, "During outage", f"marker {marker}", alertname=f"Outage{marker}")
    outage_median, outage_max = timed_requests()
    # Generous bounds: the request never waits on Alertmanager (whose timeout is 2 s).
    assert outage_median < max(10 * baseline_median, 0.05), (baseline_median, outage_median)
    assert outage_max < 1.0
    wait_until(lambda: sender.status()[am.url]["failures"] >= 1, timeout=5)

    am.start()  # same port, alerts are gone from memory: only our retries bring them back
    alerts = am.wait_for(lambda: am.alerts(labels={"alertname": f"Outage{marker}"}), timeout=20)
    assert alerts[0]["annotations"]["description"] == f"marker {marker}"
    am.wait_for(lambda: am.alerts(labels={"alertname": "PaymentAnomaly"}), timeout=10)


def test_alert_queue_full_drops_and_counts(sender_cleanup):
    app, monitor = make_app(MPESA_MONITOR_ALERTMANAGER_URL=f"http://127.0.0.1:{free_port()}",
                            MPESA_MONITOR_ALERT_QUEUE_SIZE=2)
    sender_cleanup(app)
    dropped = Delta("mpesa_alerts_sent_total", severity="medium", result="dropped")
    results = [monitor.send_alert("medium", f"Queue test {i}", "nobody listens") for i in range(5)]
    assert results == [True, True, False, False, False]
    assert dropped.change() == 3
    # the same alert again is merged into the waiting one, not queued twice
    assert monitor.send_alert("medium", "Queue test 0", "nobody listens, still") is True
    assert app.extensions["mpesa_monitor"].alerts.pending == 2


def test_alert_info_is_recorded_not_sent(http_recorder, sender_cleanup):
    am = http_recorder()
    app, monitor = make_app(MPESA_MONITOR_ALERTMANAGER_URL=am.url)
    sender_cleanup(app)
    logged = Delta("mpesa_alerts_sent_total", severity="info", result="logged")
    assert monitor.send_alert(AlertLevel.INFO, "Nightly report ready", "fyi") is True
    monitor.send_alert(AlertLevel.MEDIUM, "Something medium", "to Slack")
    am.wait_for(1, path="/api/v2/alerts")
    posted = [a["labels"]["alertname"] for r in am.received(path="/api/v2/alerts") for a in r.json()]
    assert posted == ["SomethingMedium"]
    assert logged.change() == 1


def test_alert_without_url_is_logged_at_error_and_counted(caplog):
    app, monitor = make_app()
    logged = Delta("mpesa_alerts_sent_total", severity="high", result="logged")
    with caplog.at_level(logging.ERROR, logger="flask_mpesa_monitor.alerts"):
        assert monitor.send_alert("high", "Payout failed", f"B2C to {PHONE} failed", organization="duka")
    assert logged.change() == 1
    [record] = [r for r in caplog.records if "PayoutFailed" in r.getMessage()]
    assert record.levelno == logging.ERROR
    assert "duka" in record.getMessage() and PHONE not in record.getMessage()



@pytest.mark.parametrize("args, kwargs", [
    (("urgent", "Bad level", "x"), {}),
    (("high", ["a", "title"], {"a": "message"}), {"details": ["not", "a", "mapping"]}),
    (("high", "Odd organization", "x"), {"organization": ["acme"], "details": {"k": object()}}),
    ((None, None, None), {}),
])
def test_send_alert_never_raises(args, kwargs):
    """A bad level or odd arguments cost the alert at most (logged, counted), never the caller."""
    app, monitor = make_app()
    result = monitor.send_alert(*args, **kwargs)
    assert result in (True, False)


def test_send_alert_with_a_bad_level_is_dropped_and_counted(caplog):
    app, monitor = make_app()
    dropped = Delta("mpesa_alerts_sent_total", severity="unknown", result="dropped")
    with caplog.at_level(logging.ERROR, logger="flask_mpesa_monitor.alerts"):
        assert monitor.send_alert("urgent", "Bad level", "x") is False
    assert dropped.change() == 1


def test_alert_sent_to_every_url_of_an_ha_pair(http_recorder, sender_cleanup):
    first, second = http_recorder(), http_recorder()
    app, monitor = make_app(MPESA_MONITOR_ALERTMANAGER_URL=f"{first.url},{second.url}")
    sender_cleanup(app)
    sent = Delta("mpesa_alerts_sent_total", severity="high", result="sent")
    monitor.send_alert("high", "HA test", "both get it")
    for am in (first, second):
        [request] = am.wait_for(1, path="/api/v2/alerts", method="POST")
        assert request.json()[0]["labels"]["alertname"] == "HATest"
    wait_until(lambda: sent.change() == 1, timeout=5)


def test_alert_expired_before_delivery_counts_failed():
    sender = AlertSender((f"http://127.0.0.1:{free_port()}",), resolve_after=0.3, backoff_base=0.05,
                         backoff_max=0.1)
    failed = Delta("mpesa_alerts_sent_total", severity="high", result="failed")
    try:
        sender.send("high", "Never delivered", "no server")
        wait_until(lambda: sender.pending == 0, timeout=5)
        assert failed.change() == 1
        assert sender.status()[sender.urls[0]]["failures"] >= 2
    finally:
        sender.stop()


def test_alert_rejected_by_alertmanager_is_not_retried(http_recorder, sender_cleanup):
    am = http_recorder()
    am.set_response("/api/v2/alerts", 400, {"message": "bad alert"})
    sender = AlertSender((am.url,))
    failed = Delta("mpesa_alerts_sent_total", severity="medium", result="failed")
    try:
        sender.send("medium", "Bad one", "rejected")
        wait_until(lambda: sender.pending == 0, timeout=5)
        assert failed.change() == 1 and len(am.received(path="/api/v2/alerts")) == 1
    finally:
        sender.stop()


def test_alert_queued_alerts_are_flushed_at_interpreter_exit(http_recorder):
    am = http_recorder()
    # The sender thread is kept from starting: only the exit flush can deliver the alert.
    script = (
        "from flask import Flask\n"
        "from flask_mpesa_monitor import MPesaMonitor\n"
        "app = Flask('exit')\n"
        f"app.config['MPESA_MONITOR_ALERTMANAGER_URL'] = {am.url!r}\n"
        "monitor = MPesaMonitor(app)\n"
        "app.extensions['mpesa_monitor'].alerts._ticker.ensure_started = lambda: None\n"
        "monitor.send_alert('critical', 'Sent at exit', 'flush me')\n"
        "assert app.extensions['mpesa_monitor'].alerts.pending == 1\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                            timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    posted = [a["labels"]["alertname"] for r in am.received(path="/api/v2/alerts") for a in r.json()]
    assert "SentAtExit" in posted
