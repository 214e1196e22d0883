"""Every metric of the contract (docs/DESIGN.md), with exactly its labels, from one test app
that goes through every entry point of the extension."""

import re

import pytest
from flask import Flask

from flask_mpesa_monitor import (
    MPesaMonitor,
    metrics,
    monitor_database_operation,
    monitor_mcp_tool,
    monitor_mpesa_operation,
)

CONTRACT = {
    "mpesa_mcp_requests_total": ("counter", {"method", "endpoint", "status", "organization"}),
    "mpesa_mcp_request_duration_seconds": ("histogram", {"method", "endpoint", "organization"}),
    "mpesa_mcp_requests_in_progress": ("gauge", set()),
    "mpesa_mcp_active_connections": ("gauge", {"state"}),
    "mpesa_api_calls_total": ("counter", {"operation", "organization", "outcome"}),
    "mpesa_api_duration_seconds": ("histogram", {"operation", "organization"}),
    "mpesa_token_refreshes_total": ("counter", {"organization", "status"}),
    "mpesa_token_expiry_timestamp_seconds": ("gauge", {"organization"}),
    "mpesa_transactions_total": ("counter", {"organization", "type", "outcome"}),
    "mpesa_revenue_total": ("counter", {"organization", "currency"}),
    "mpesa_stk_pushes_total": ("counter", {"organization"}),
    "mpesa_stk_callback_delay_seconds": ("histogram", {"organization"}),
    "mpesa_stk_pending": ("gauge", {"organization"}),
    "mpesa_stk_callbacks_missing_total": ("counter", {"organization"}),
    "mpesa_rate_limit_hits_total": ("counter", {"organization", "limit"}),
    "mpesa_auth_attempts_total": ("counter", {"organization", "result"}),
    "mpesa_cross_tenant_attempts_total": ("counter", {"organization"}),
    "mpesa_security_events_total": ("counter", {"event_type", "severity", "organization"}),
    "mpesa_suspicious_ips": ("gauge", {"ip"}),
    "mpesa_db_query_duration_seconds": ("histogram", {"operation"}),
    "mpesa_mcp_tool_calls_total": ("counter", {"tool", "organization", "outcome"}),
    "mpesa_mcp_tool_duration_seconds": ("histogram", {"tool"}),
    "mpesa_api_quota_limit": ("gauge", {"organization"}),
    "mpesa_audit_tampered_entries": ("gauge", set()),
    "mpesa_health_check_status": ("gauge", {"check"}),
    "mpesa_health_check_duration_seconds": ("gauge", {"check"}),
    "mpesa_alerts_sent_total": ("counter", {"severity", "result"}),
    "mpesa_label_overflow_total": ("counter", {"label"}),
    "mpesa_system_cpu_usage_ratio": ("gauge", set()),
    "mpesa_system_memory_usage_ratio": ("gauge", set()),
    "mpesa_system_disk_usage_ratio": ("gauge", set()),
    "mpesa_mcp_build_info": ("gauge", {"version"}),
    "mpesa_revenue_unverified_total": ("counter", {"organization", "currency", "reason"}),
    "mpesa_stk_callbacks_late_total": ("counter", {"organization"}),
    # M-Pesa flows beyond STK push, and the seed's helpers
    "mpesa_c2b_validation_duration_seconds": ("histogram", {"organization"}),
    "mpesa_c2b_validations_total": ("counter", {"organization", "shortcode", "result", "reason"}),
    "mpesa_c2b_confirmations_total": ("counter", {"organization", "shortcode"}),
    "mpesa_async_queue_timeouts_total": ("counter", {"organization", "api"}),
    "mpesa_payouts_total": ("counter", {"organization", "currency"}),
    "mpesa_b2c_float_balance": ("gauge", {"organization", "currency"}),
    "mpesa_stk_reconciled_total": ("counter", {"organization", "result"}),
    "mpesa_mobile_app_requests_total": ("counter", {"app_version"}),
    "mpesa_cache_requests_total": ("counter", {"cache", "result"}),
    "mpesa_daraja_environment_info": ("gauge", {"daraja_environment"}),
}


def test_catalogue_is_exactly_the_contract():
    assert set(metrics.CATALOGUE) == set(CONTRACT)
    for name, (kind, labels) in CONTRACT.items():
        metric = metrics.CATALOGUE[name]
        assert metric.type == kind, name
        assert set(metric.labelnames) == labels, name


def test_catalogue_metrics_are_what_their_specs_declare():
    """The prometheus_client objects, read through their public ``collect()``, carry the
    name, type and help of their catalogue row; every row but the scrape-time gauges has one."""
    described = {}
    for metric in metrics.client_metrics():
        (family,) = metric.collect()
        described[family.name + ("_total" if family.type == "counter" else "")] = (family.type, family.documentation)
    assert described == {name: (spec.type, spec.documentation)
                         for name, spec in metrics.CATALOGUE.items() if not spec.scrape_time}
    assert [name for name, spec in metrics.CATALOGUE.items() if spec.scrape_time] == ["mpesa_stk_pending"]


def _exercise_every_entry_point():
    app = Flask(__name__)
    app.config["MPESA_MONITOR_AUTH_FAILURE_THRESHOLD"] = 1
    monitor = MPesaMonitor(app)

    @monitor_mpesa_operation("token_refresh")
    def token(org_id):
        return {"access_token": "t", "expires_in": "3599"}

    @monitor_mpesa_operation("stk_push")
    def stk_push(org_id):
        return {"CheckoutRequestID": "ws_CO_contract", "ResponseCode": "0"}

    @monitor_database_operation("select_org")
    def db():
        return 1

    @monitor_mcp_tool("stk_push")
    def tool(org_id):
        return {"content": []}

    @app.post("/orgs/<org_id>/stk")
    def stk(org_id):
        token(org_id)
        ack = stk_push(org_id)
        monitor.record_stk_push(org_id, ack["CheckoutRequestID"], 10)
        db()
        tool(org_id)
        return ack

    client = app.test_client()
    client.post("/orgs/contract/stk")
    monitor.record_stk_callback({"Body": {"stkCallback": {
        "MerchantRequestID": "m", "CheckoutRequestID": "ws_CO_contract", "ResultCode": 0, "ResultDesc": "ok",
        "CallbackMetadata": {"Item": [{"Name": "Amount", "Value": 10}]}}}}, "contract")
    monitor.record_stk_push("contract", "ws_CO_contract_lost", 10)
    monitor._state().transactions.expire(now=10**10)
    monitor.record_stk_callback({"Body": {"stkCallback": {  # late: its push was counted missing
        "CheckoutRequestID": "ws_CO_contract_lost", "ResultCode": 0,
        "CallbackMetadata": {"Item": [{"Name": "Amount", "Value": 12}]}}}}, "contract")
    monitor.record_rate_limit_hit("contract", "per_minute")
    monitor.record_auth_attempt("contract", False, ip="127.0.0.77")
    monitor.verify_tenant_isolation("contract", "elsewhere")
    monitor.set_api_limit("contract", 100)
    metrics.audit_tampered_entries.set(0)
    metrics.active_connections.labels("idle").set(0)
    metrics.health_check_status.labels("database").set(1)
    metrics.health_check_duration_seconds.labels("database").set(0.001)
    metrics.alerts_sent_total.labels("critical", "sent").inc(0)
    metrics.system_cpu_usage_ratio.set(0.1)
    metrics.system_memory_usage_ratio.set(0.1)
    metrics.system_disk_usage_ratio.set(0.1)
    monitor_mpesa_operation("stk_push")(lambda org_id: None)("a b")  # an overflowing label
    # M-Pesa flows beyond STK push, and the seed's helpers
    monitor.record_stk_push("contract", "ws_CO_contract_query", 10)
    monitor._state().transactions.expire(now=10**10)
    monitor.record_stk_query("contract", "ws_CO_contract_query", {"ResultCode": "0", "ResultDesc": "ok"})
    monitor.record_stk_push("contract", "ws_CO_contract_waiting", 10)  # mpesa_stk_pending: 1
    monitor.record_c2b_validation("contract", "600984", "0", 0.2)
    monitor.record_c2b_confirmation({"TransID": "CONTRACT01", "TransAmount": "10", "BusinessShortCode": "600984"},
                                    "contract")
    monitor.record_mpesa_result({"Result": {"ResultCode": 0, "ConversationID": "AG_contract", "ResultParameters": {
        "ResultParameter": [{"Key": "TransactionAmount", "Value": 10},
                            {"Key": "B2CUtilityAccountAvailableFunds", "Value": 1000}]}}}, "contract")
    monitor.record_queue_timeout("contract", "b2c")
    monitor.record_cache("tokens", True)
    metrics.daraja_environment_info.labels("sandbox").set(1)
    client.get("/metrics", headers={"X-App-Version": "1.0.0"})
    return client.get("/metrics").text


def test_every_contract_metric_exported_with_exactly_its_labels():
    text = _exercise_every_entry_point()
    for name, (kind, labels) in CONTRACT.items():
        sample = name + ("_count" if kind == "histogram" else "")
        lines = [line for line in text.splitlines() if re.match(re.escape(sample) + r"(\{| )", line)]
        assert lines, f"{sample} not exported"
        for line in lines:
            found = set(re.findall(r'(\w+)="', line.split(" ")[0]))
            assert found == labels, line


def test_metrics_text_passes_promtool_check_metrics():
    import shutil
    import subprocess

    text = _exercise_every_entry_point()
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: scripts/test.sh installs Debian's prometheus package")
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), (
        result.stdout + result.stderr)
