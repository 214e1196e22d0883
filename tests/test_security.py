import pytest
from flask import Flask
from metric_values import Delta, value

from flask_mpesa_monitor import MPesaMonitor, tenancy


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


# --- callback source ------------------------------------------------------------------
def _callback_app(**config):
    app = Flask(__name__)
    app.config.update({key if key.startswith("MPESA_MONITOR_") else f"MPESA_MONITOR_{key}": item
                       for key, item in config.items()})
    monitor = MPesaMonitor(app)

    @app.post("/mpesa/callback/<org_id>")
    def stk_callback(org_id):
        return {"known": monitor.check_callback_source(org_id)}

    return app.test_client()


def _unknown_source(org):
    return Delta("mpesa_security_events_total", event_type="callback_unknown_source", severity="medium",
                 organization=org)


@pytest.mark.parametrize("remote, forwarded, known", [
    ("196.201.214.200", None, True),
    ("196.201.212.69", None, True),
    ("::ffff:196.201.213.114", None, True),
    ("203.0.113.9", None, False),
    ("127.0.0.1", None, False),                   # loopback only where configured (the local stack)
    ("203.0.113.9", "196.201.214.200", False),    # X-Forwarded-For from an untrusted peer proves nothing
])
def test_callback_source_against_the_shipped_safaricom_list(remote, forwarded, known):
    client = _callback_app()
    event = _unknown_source("src-default")
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    answer = client.post("/mpesa/callback/src-default", headers=headers, environ_base={"REMOTE_ADDR": remote})
    assert answer.status_code == 200 and answer.get_json() == {"known": known}  # never refused
    assert event.change() == (0 if known else 1)


@pytest.mark.parametrize("forwarded, known", [
    ("196.201.214.200", True),
    ("10.0.0.1, 196.201.214.200", True),           # client-written entries on the left are ignored
    ("196.201.214.200, 203.0.113.9", False),       # the address the proxy saw is the last one
    ("196.201.214.200, 127.0.0.5", True),          # a second trusted proxy hop
    ("not-an-ip", False),
    ("", False),                                   # the peer itself (a proxy) is not Safaricom
])
def test_callback_source_through_a_trusted_proxy(forwarded, known):
    client = _callback_app(**{"MPESA_MONITOR_CALLBACK_TRUSTED_PROXIES": "127.0.0.0/8"})
    event = _unknown_source("src-proxy")
    answer = client.post("/mpesa/callback/src-proxy", headers={"X-Forwarded-For": forwarded},
                         environ_base={"REMOTE_ADDR": "127.0.0.1"})
    assert answer.get_json() == {"known": known} and event.change() == (0 if known else 1)


def test_callback_source_list_is_configurable_and_can_be_switched_off():
    local = _callback_app(CALLBACK_ALLOWED_IPS="safaricom, 127.0.0.0/8, ::1")
    assert local.post("/mpesa/callback/src-local").get_json() == {"known": True}
    off = _callback_app(CALLBACK_ALLOWED_IPS="")
    assert off.post("/mpesa/callback/src-off", environ_base={"REMOTE_ADDR": "203.0.113.9"}).get_json() == \
        {"known": True}
    with pytest.raises(ValueError, match="CALLBACK_ALLOWED_IPS"):
        _callback_app(CALLBACK_ALLOWED_IPS="196.201.999.1")


def test_record_stk_callback_checks_its_source_on_its_own():
    app = Flask(__name__)
    monitor = MPesaMonitor(app)

    @app.post("/cb/<org_id>")
    def cb(org_id):
        monitor.record_stk_push(org_id, "ws_CO_src", 1)
        result = monitor.record_stk_callback({"Body": {"stkCallback": {
            "CheckoutRequestID": "ws_CO_src", "ResultCode": 0,
            "CallbackMetadata": {"Item": [{"Name": "Amount", "Value": 1}]}}}}, org_id)
        return {"match": result.match}

    event = _unknown_source("src-auto")
    revenue = Delta("mpesa_revenue_total", organization="src-auto", currency="KES")
    answer = app.test_client().post("/cb/src-auto", environ_base={"REMOTE_ADDR": "198.51.100.4"})
    assert answer.get_json() == {"match": "matched"} and event.change() == 1 and revenue.change() == 1


def test_shipped_list_has_its_date_and_stays_in_safaricoms_ranges():
    import ipaddress

    from flask_mpesa_monitor.security import SAFARICOM_CALLBACK_IPS, SAFARICOM_CALLBACK_IPS_AS_OF

    assert SAFARICOM_CALLBACK_IPS_AS_OF.count("-") == 2 and 10 <= len(SAFARICOM_CALLBACK_IPS) <= 20
    ranges = [ipaddress.ip_network(f"196.201.{third}.0/24") for third in (212, 213, 214)]
    assert all(any(ipaddress.ip_address(ip) in net for net in ranges) for ip in SAFARICOM_CALLBACK_IPS)
