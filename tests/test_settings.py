"""Settings whose effect no other module's tests show; and a guard that each setting has one."""

import re
import time
import types
from pathlib import Path

import pytest
from flask import Flask
from metric_values import value

from flask_mpesa_monitor import MPesaMonitor, security, tenancy
from flask_mpesa_monitor.config import SETTINGS
from flask_mpesa_monitor.state import get_state

TESTS = Path(__file__).resolve().parent


def make_app(**config):
    app = Flask(__name__)
    app.config.update(config)
    return app, MPesaMonitor(app)


def test_settings_each_documented_setting_is_exercised_by_a_test():
    """Every key of the README table is set by some test beyond the generic config tests."""
    sources = "\n".join(path.read_text() for path in TESTS.rglob("*.py")
                        if path.name != "test_config.py")
    missing = [s.config_key for s in SETTINGS if not re.search(re.escape(s.config_key) + r"\b", sources)]
    assert missing == []


@pytest.fixture
def fresh_ip_label():
    """The ``ip`` label guard is process-wide: start from nothing, leave the default."""
    tenancy.ips.reset()
    yield
    tenancy.ips.reset()
    tenancy.ips.set_limit(20)


def test_settings_max_suspicious_ips_bounds_the_ip_label(fresh_ip_label):
    _, monitor = make_app(MPESA_MONITOR_AUTH_FAILURE_THRESHOLD=1, MPESA_MONITOR_MAX_SUSPICIOUS_IPS=2)
    for host in range(40, 44):
        monitor.record_auth_attempt("acme", False, ip=f"127.0.2.{host}")
    assert value("mpesa_suspicious_ips", ip="127.0.2.40") == 1
    assert value("mpesa_suspicious_ips", ip="127.0.2.41") == 1
    assert not value("mpesa_suspicious_ips", ip="127.0.2.42")
    assert not value("mpesa_suspicious_ips", ip="127.0.2.43")
    assert value("mpesa_suspicious_ips", ip="other") == 1  # the latest count past the bound
    assert tenancy.ips.limit == 2


def test_settings_max_suspicious_ips_default_is_twenty(fresh_ip_label):
    make_app(MPESA_MONITOR_MAX_SUSPICIOUS_IPS=7)
    make_app()
    assert tenancy.ips.limit == 20


def test_settings_auth_failure_window_forgets_old_failures(monkeypatch):
    clock = types.SimpleNamespace(now=1_000_000.0)
    monkeypatch.setattr(security, "time", types.SimpleNamespace(time=lambda: clock.now))
    _, monitor = make_app(MPESA_MONITOR_AUTH_FAILURE_THRESHOLD=2, MPESA_MONITOR_AUTH_FAILURE_WINDOW=60)
    monitor.record_auth_attempt("acme", False, ip="127.0.3.1")
    clock.now += 61  # the first failure left the window
    monitor.record_auth_attempt("acme", False, ip="127.0.3.1")
    assert not value("mpesa_suspicious_ips", ip="127.0.3.1")
    clock.now += 59  # still inside the window of the second
    monitor.record_auth_attempt("acme", False, ip="127.0.3.1")
    assert value("mpesa_suspicious_ips", ip="127.0.3.1") == 2


def _busy_cpu(seconds: float = 0.2) -> None:
    """Use the CPU for a moment, so the next system-wide reading is above zero."""
    end = time.monotonic() + seconds
    for _ in range(50_000_000):
        if time.monotonic() > end:
            break


def test_settings_cpu_warning_degrades_system():
    _, monitor = make_app(MPESA_MONITOR_HEALTH_BACKGROUND=False, MPESA_MONITOR_CPU_WARNING=0.0001,
                          MPESA_MONITOR_MEMORY_WARNING=1.0, MPESA_MONITOR_DISK_WARNING=1.0)
    _busy_cpu()
    result = monitor.run_health_checks().results["system"]
    assert result.status == "degraded" and "cpu" in result.error and "disk" not in result.error
    assert result.details["cpu_warning_ratio"] == 0.0001


def test_settings_disk_warning_degrades_system():
    _, monitor = make_app(MPESA_MONITOR_HEALTH_BACKGROUND=False, MPESA_MONITOR_DISK_WARNING=0.0001,
                          MPESA_MONITOR_DISK_PATH="/", MPESA_MONITOR_CPU_WARNING=1.0,
                          MPESA_MONITOR_MEMORY_WARNING=1.0)
    result = monitor.run_health_checks().results["system"]
    assert result.status == "degraded" and "disk" in result.error and "cpu" not in result.error
    relaxed = make_app(MPESA_MONITOR_HEALTH_BACKGROUND=False, MPESA_MONITOR_DISK_WARNING=1.0,
                       MPESA_MONITOR_CPU_WARNING=1.0, MPESA_MONITOR_MEMORY_WARNING=1.0)[1]
    assert relaxed.run_health_checks().results["system"].status == "healthy"


def test_settings_runbook_url_is_the_base_of_every_app_alert():
    app, _ = make_app(MPESA_MONITOR_RUNBOOK_URL="https://runbooks.example/mpesa/")
    alert = get_state(app).alerts.build("high", "Float running low", "B2C float below 10,000 KES")
    assert alert["annotations"]["runbook_url"] == "https://runbooks.example/mpesa#floatrunninglow"


def test_settings_runbook_url_unset_means_no_runbook_link():
    """No runbook is served by default: an alert links none rather than a page that may
    not exist (the package cannot know where an installation keeps its runbooks)."""
    for config in ({}, {"MPESA_MONITOR_RUNBOOK_URL": ""}, {"MPESA_MONITOR_RUNBOOK_URL": None}):
        app, _ = make_app(**config)
        assert app.config["MPESA_MONITOR_RUNBOOK_URL"] in (None, "")
        annotations = get_state(app).alerts.build("high", "Float running low", "x")["annotations"]
        assert "runbook_url" not in annotations, (config, annotations)
        assert annotations["summary"] == "Float running low"


# --- secrets from files -----------------------------------------------------------------------
def test_settings_token_file_with_trailing_newline_does_not_lock_scrapes_out(tmp_path):
    token_file = tmp_path / "metrics_token"
    token_file.write_text("scrape-tok-5e6f\n")  # as `echo token > file` writes it
    app, _ = make_app(MPESA_MONITOR_METRICS_TOKEN_FILE=str(token_file))
    client = app.test_client()
    assert client.get("/metrics", headers={"Authorization": "Bearer scrape-tok-5e6f"}).status_code == 200
    assert client.get("/metrics", headers={"Authorization": "Bearer  scrape-tok-5e6f "}).status_code == 200
    assert client.get("/metrics", headers={"Authorization": "Bearer other"}).status_code == 401
    assert client.get("/metrics").status_code == 401


def test_settings_basic_auth_and_health_token_files(tmp_path):
    (tmp_path / "basic").write_text("prom:pw-4d5e\n")
    (tmp_path / "health").write_text("  health-tok-7a8b  \n")
    app, _ = make_app(MPESA_MONITOR_METRICS_BASIC_AUTH_FILE=str(tmp_path / "basic"),
                      MPESA_MONITOR_HEALTH_TOKEN_FILE=str(tmp_path / "health"),
                      MPESA_MONITOR_HEALTH_BACKGROUND=False)
    client = app.test_client()
    assert client.get("/metrics", auth=("prom", "pw-4d5e")).status_code == 200
    assert client.get("/metrics", auth=("prom", "pw-4d5e\n")).status_code == 401
    get_state(app).health.run_once()
    shown = client.get("/health/detailed", headers={"Authorization": "Bearer health-tok-7a8b"}).json
    hidden = client.get("/health/detailed", headers={"Authorization": "Bearer wrong"}).json
    assert "critical" in shown["checks"]["system"] and "details" in shown["checks"]["system"]
    assert "critical" not in hidden["checks"]["system"]
