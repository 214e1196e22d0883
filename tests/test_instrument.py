import asyncio

import pytest
import requests
from metric_values import Delta, value

from flask_mpesa_monitor import MPesaMonitor, monitor_database_operation, monitor_mcp_tool, monitor_mpesa_operation


def calls(operation, organization, outcome):
    return Delta("mpesa_api_calls_total", operation=operation, organization=organization, outcome=outcome)


def test_mpesa_operation_sync_counts_outcome_and_keeps_metadata():
    @monitor_mpesa_operation("stk_push")
    def stk_push(org_id, phone, amount):
        """Send an STK push."""
        return {"MerchantRequestID": "m1", "CheckoutRequestID": "c1", "ResponseCode": "0"}

    count = calls("stk_push", "acme", "success")
    duration = Delta("mpesa_api_duration_seconds_count", operation="stk_push", organization="acme")
    assert stk_push("acme", "254700000001", 10)["ResponseCode"] == "0"
    assert stk_push.__name__ == "stk_push" and stk_push.__doc__ == "Send an STK push."
    assert count.change() == 1 and duration.change() == 1


def test_mpesa_operation_organization_from_keyword_and_organization_id():
    @monitor_mpesa_operation("stk_query")
    def query(checkout_id, *, organization_id):
        return {"ResponseCode": "0", "ResultCode": "1037"}

    count = calls("stk_query", "jambo", "timeout")
    query("c1", organization_id="jambo")
    assert count.change() == 1


def test_mpesa_operation_async_under_asyncio_run():
    @monitor_mpesa_operation("b2c")
    async def b2c(org_id, amount):
        await asyncio.sleep(0)
        return {"ResultCode": 2001}

    count = calls("b2c", "duka", "system_error")
    assert asyncio.run(b2c("duka", 100)) == {"ResultCode": 2001}
    assert count.change() == 1


def test_mpesa_operation_async_exception_passes_through_untouched():
    error = requests.Timeout("daraja too slow")

    @monitor_mpesa_operation("stk_push")
    async def stk_push(org_id):
        raise error

    count = calls("stk_push", "duka", "provider_error")
    with pytest.raises(requests.Timeout) as info:
        asyncio.run(stk_push("duka"))
    assert info.value is error
    assert count.change() == 1


def test_mpesa_operation_http_error_with_daraja_body():
    response = requests.Response()
    response.status_code = 500
    response._content = b'{"requestId": "1", "errorCode": "500.003.02", "errorMessage": "Spike arrest violation"}'

    @monitor_mpesa_operation("stk_push")
    def stk_push(org_id):
        response.raise_for_status()

    count = calls("stk_push", "acme", "provider_error")
    with pytest.raises(requests.HTTPError):
        stk_push("acme")
    assert count.change() == 1


def test_mpesa_operation_returning_a_response_object():
    response = requests.Response()
    response.status_code = 400
    response._content = b'{"errorCode": "400.002.02", "errorMessage": "Bad Request - Invalid PhoneNumber"}'

    @monitor_mpesa_operation("c2b_register", organization_arg="tenant")
    def register(tenant):
        return response

    count = calls("c2b_register", "safari", "system_error")
    assert register("safari") is response
    assert count.change() == 1


def test_mpesa_operation_connection_error_and_unknown_organization():
    @monitor_mpesa_operation("account_balance")
    def balance():
        raise requests.ConnectionError("refused")

    count = calls("account_balance", "unknown", "provider_error")
    with pytest.raises(requests.ConnectionError):
        balance()
    assert count.change() == 1


def test_token_refresh_counts_and_sets_expiry(monkeypatch):
    @monitor_mpesa_operation("token_refresh")
    def refresh(org_id, fail=False):
        if fail:
            raise requests.HTTPError(response=_bad_credentials())
        return {"access_token": "secret-token", "expires_in": "3599"}

    ok = Delta("mpesa_token_refreshes_total", organization="acme", status="success")
    failed = Delta("mpesa_token_refreshes_total", organization="acme", status="failure")
    monkeypatch.setattr("time.time", lambda: 1_000_000.0)
    refresh("acme")
    with pytest.raises(requests.HTTPError):
        refresh("acme", fail=True)
    assert ok.change() == 1 and failed.change() == 1
    assert value("mpesa_token_expiry_timestamp_seconds", organization="acme") == 1_003_599.0


def _bad_credentials():
    response = requests.Response()
    response.status_code = 400
    response._content = b'{"errorCode": "400.008.01", "errorMessage": "Invalid Authentication passed"}'
    return response


def test_database_operation_sync_and_async_errors_included():
    @monitor_database_operation("load_org")
    def load(fail):
        if fail:
            raise LookupError("gone")
        return 1

    @monitor_database_operation("load_org")
    async def aload():
        return 2

    count = Delta("mpesa_db_query_duration_seconds_count", operation="load_org")
    assert load(False) == 1
    with pytest.raises(LookupError):
        load(True)
    assert asyncio.run(aload()) == 2
    assert count.change() == 3


def test_mcp_tool_outcomes():
    @monitor_mcp_tool("stk_push")
    def tool(org_id, mode):
        if mode == "raise":
            raise RuntimeError("bug")
        if mode == "error":
            return {"isError": True, "content": [{"type": "text", "text": "failed"}]}
        if mode == "daraja":
            return {"errorCode": "500.003.02", "errorMessage": "Spike arrest violation"}
        return {"content": [{"type": "text", "text": "ok"}]}

    deltas = {o: Delta("mpesa_mcp_tool_calls_total", tool="stk_push", organization="acme", outcome=o)
              for o in ("success", "system_error", "provider_error")}
    duration = Delta("mpesa_mcp_tool_duration_seconds_count", tool="stk_push")
    tool("acme", "ok")
    tool("acme", "error")
    tool("acme", "daraja")
    with pytest.raises(RuntimeError):
        tool("acme", "raise")
    assert {o: d.change() for o, d in deltas.items()} == {"success": 1, "system_error": 2, "provider_error": 1}
    assert duration.change() == 4


def test_set_api_limit():
    from flask import Flask

    monitor = MPesaMonitor(Flask(__name__))
    monitor.set_api_limit("acme", 600)
    assert value("mpesa_api_quota_limit", organization="acme") == 600
    with pytest.raises(ValueError, match="per_minute"):
        monitor.set_api_limit("acme", -1)
