import pytest
from flask import Flask

from flask_mpesa_monitor import MPesaMonitor, tenancy

from metric_values import Delta, value


@pytest.fixture
def monitor():
    app = Flask(__name__)
    app.config["MPESA_MONITOR_AUTH_FAILURE_THRESHOLD"] = 3
    return MPesaMonitor(app)


def test_auth_attempts_counted_by_result(monitor):
    ok = Delta("mpesa_auth_attempts_total", organization="acme", result="success")
    bad = Delta("mpesa_auth_attempts_total", organization="acme", result="failure")
    monitor.record_auth_attempt("acme", True, ip="127.0.0.9")
    monitor.record_auth_attempt("acme", False, ip="127.0.0.9")
    assert ok.change() == 1 and bad.change() == 1


def test_ip_past_threshold_becomes_suspicious(monitor):
    for _ in range(2):
        monitor.record_auth_attempt("acme", False, ip="127.0.0.20")
    assert value("mpesa_suspicious_ips", ip="127.0.0.20") == 0
    for _ in range(2):
        monitor.record_auth_attempt("acme", False, ip="127.0.0.20")
    assert value("mpesa_suspicious_ips", ip="127.0.0.20") == 4


def test_suspicious_ips_bounded_to_distinct_values(monitor):
    saved = tenancy.ips.limit
    tenancy.ips.reset()
    tenancy.ips.set_limit(2)
    try:
        for host in range(30, 34):
            for _ in range(3):
                monitor.record_auth_attempt("acme", False, ip=f"127.0.1.{host}")
        assert value("mpesa_suspicious_ips", ip="127.0.1.30") == 3
        assert value("mpesa_suspicious_ips", ip="127.0.1.31") == 3
        assert value("mpesa_suspicious_ips", ip="127.0.1.32") == 0
        assert value("mpesa_suspicious_ips", ip="other") == 3
    finally:
        tenancy.ips.reset()
        tenancy.ips.set_limit(saved)


def test_tenant_isolation_allows_same_org_and_counts_mismatch(monitor):
    attempts = Delta("mpesa_cross_tenant_attempts_total", organization="acme")
    event = Delta("mpesa_security_events_total", event_type="cross_tenant_access", severity="critical",
                  organization="acme")
    assert monitor.verify_tenant_isolation("acme", "acme") is True
    assert attempts.change() == 0
    assert monitor.verify_tenant_isolation("acme", "jambo") is False
    assert monitor.verify_tenant_isolation(None, "jambo") is False
    assert attempts.change() == 1 and event.change() == 1


def test_security_event_and_rate_limit(monitor):
    event = Delta("mpesa_security_events_total", event_type="sql_injection", severity="high", organization="duka")
    hits = Delta("mpesa_rate_limit_hits_total", organization="duka", limit="per_minute")
    monitor.record_security_event("sql_injection", "high", "duka")
    monitor.record_rate_limit_hit("duka", "per_minute")
    assert event.change() == 1 and hits.change() == 1
    with pytest.raises(ValueError, match="severity"):
        monitor.record_security_event("x", "urgent", "duka")
