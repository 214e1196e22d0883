"""No phone number leaves through a metric, a label or a log line the package writes."""

import logging
import re

import pytest
from flask import Flask

from flask_mpesa_monitor import MPesaMonitor, monitor_mcp_tool, monitor_mpesa_operation
from flask_mpesa_monitor.redact import mask_phone, mask_phones, redact

PHONES = ["254712345678", "254112345678", "0712345678", "+254712345678", "0112345678"]
DIGITS = re.compile(r"(?<![\d.e+])(?:\+?254|0)[17]\d{8}(?!\d)")


@pytest.mark.parametrize("phone, masked", [("254712345689", "2547******89"), ("+254712345689", "+2547******89"),
                                           ("0712345678", "07******78")])
def test_mask_phone(phone, masked):
    assert mask_phone(phone) == masked
    assert mask_phones(f"pay from {phone}.") == f"pay from {masked}."


def test_mask_leaves_amounts_and_ids_alone():
    text = "amount 1500 receipt NLJ7RT61SV shortcode 174379"
    assert mask_phones(text) == text


def test_redact_mapping_masks_secrets_and_phones():
    out = redact({"PhoneNumber": 254712345678, "Password": "pw",
                  "nested": {"consumer_secret": "s", "msg": "0712345678"},
                  "dsn": "postgresql://app:hunter2@127.0.0.1/db", "note": "postgresql://app:hunter2@db/x"})
    text = repr(out)
    assert "hunter2" not in text and "pw'" not in text and not DIGITS.search(text)


def test_phone_numbers_through_every_entry_point_never_reach_metrics_or_logs(caplog):
    caplog.set_level(logging.DEBUG)
    app = Flask(__name__)
    app.config["MPESA_MONITOR_AUTH_FAILURE_THRESHOLD"] = 1
    monitor = MPesaMonitor(app)

    @monitor_mpesa_operation("stk_push")
    def stk_push(org_id, phone):
        return {"ResponseCode": "0", "CustomerMessage": f"sent to {phone}"}

    @monitor_mcp_tool(PHONES[0])
    def tool(org_id):
        return {}

    @app.route("/orgs/<org_id>/pay/<phone>", methods=["POST"])
    def pay(org_id, phone):
        stk_push(org_id, phone)
        return {"ok": True}

    client = app.test_client()
    for phone in PHONES:
        client.post(f"/orgs/{phone}/pay/{phone}", headers={"X-Organization-ID": phone})
        client.get(f"/{phone}", headers={"X-Organization-ID": phone})
        stk_push(phone, phone)
        tool(phone)
        monitor.record_auth_attempt(phone, False, ip=phone)
        monitor.verify_tenant_isolation(phone, phone + "1")
        monitor.record_security_event(phone, "high", phone)
        monitor.record_rate_limit_hit(phone, phone)
        monitor.set_api_limit(phone, 10)
        monitor.record_stk_push(phone, "ws_CO_" + phone, 1)
        monitor.record_transaction(phone, phone, outcome="success", amount=1)
        monitor.record_stk_callback({"Body": {"stkCallback": {
            "CheckoutRequestID": "ws_CO_" + phone, "ResultCode": 0, "ResultDesc": phone,
            "CallbackMetadata": {"Item": [{"Name": "PhoneNumber", "Value": int(phone.lstrip("+"))}]}}}}, phone)
        with pytest.raises(ValueError):
            monitor.record_stk_callback({"Body": {"stkCallback": {"ResultDesc": phone}}}, phone)
    exposition = client.get("/metrics").text
    logs = "\n".join(record.getMessage() for record in caplog.records if record.name.startswith("flask_mpesa_monitor"))
    assert not DIGITS.search(exposition), DIGITS.search(exposition)
    assert not DIGITS.search(logs), DIGITS.search(logs)
    assert 'organization="unknown"' in exposition


@pytest.mark.parametrize("dsn, secret", [
    ("redis://:s3cret-pw@127.0.0.1:6379/0", "s3cret-pw"),
    ("postgresql://app:p@ss@word@127.0.0.1:5432/db", "ss@word"),
    ("postgresql://app:hunter2@127.0.0.1/db?sslmode=require", "hunter2"),
    ("host=127.0.0.1 dbname=app user=app password=hunter2 connect_timeout=2", "hunter2"),
    ("host=127.0.0.1 password='two words' user=app", "two words"),
    ("postgresql://app@127.0.0.1/db?password=hunter2&sslmode=disable", "hunter2"),
    ("Server=db;User Id=app;Pwd=hunter2;", "hunter2"),
])
def test_dsn_passwords_are_masked_in_every_common_shape(dsn, secret):
    from flask_mpesa_monitor.health.database import describe_error

    for text in (mask_phones(f"cannot reach {dsn} now"), describe_error(RuntimeError(f"failed: {dsn}")),
                 repr(redact({"error": dsn, "dsn": dsn, "url": dsn}))):
        assert secret not in text, text


def test_dsn_in_health_details_is_masked(tmp_path):
    app = Flask(__name__)
    app.config["MPESA_MONITOR_HEALTH_BACKGROUND"] = False
    app.config["MPESA_MONITOR_HEALTH_TOKEN"] = "t"
    monitor = MPesaMonitor(app)

    @monitor.health_check("cache")
    def cache():
        return {"status": "degraded", "target": "redis://:s3cret-pw@127.0.0.1:1/0",
                "libpq": "host=127.0.0.1 password=hunter2"}

    @monitor.health_check("queue")
    def queue():
        raise ConnectionError("amqp://guest:p@ss@127.0.0.1:1/ refused")

    body = app.test_client().get("/health/detailed", headers={"Authorization": "Bearer t"}).get_data(as_text=True)
    assert "cache" in body and "queue" in body
    for secret in ("s3cret-pw", "hunter2", "ss@127"):
        assert secret not in body, body
