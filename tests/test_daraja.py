"""The Daraja outcome table of docs/DESIGN.md, row by row."""

import pytest
import requests

from flask_mpesa_monitor import daraja


@pytest.mark.parametrize(
    "code, outcome",
    [
        (0, "success"), ("0", "success"),
        (1032, "customer_cancelled"), ("1032", "customer_cancelled"),
        *[(code, "customer_error") for code in (1, 2, 3, 4, 8, 2001, 8006, 1001, 17)],
        ("2001", "customer_error"),
        (1037, "timeout"), (1019, "timeout"), ("1037", "timeout"),
        (1025, "provider_error"), (9999, "provider_error"), (26, "provider_error"),
        (2028, "system_error"), ("SFC_IC0003", "system_error"),
        (123456, "system_error"),  # unknown code: ours to understand, so it can page
    ],
)
def test_result_code_table(code, outcome):
    assert daraja.classify_result_code(code) == outcome
    assert daraja.classify({"Body": {"stkCallback": {"ResultCode": code}}}) == outcome


@pytest.mark.parametrize("operation", ["b2c", "reversal", "transaction_status", "account_balance"])
@pytest.mark.parametrize("code", [1, 2001, 8006, "2001"])
def test_business_operations_own_their_float_and_credential_errors(operation, code):
    assert daraja.classify_result_code(code, operation) == "system_error"
    assert daraja.classify({"ResultCode": code}, operation=operation) == "system_error"


@pytest.mark.parametrize(
    "error_code, message, outcome",
    [
        ("500.003.02", "Spike arrest violation", "provider_error"),
        ("500.003.03", "Quota Violation", "provider_error"),
        ("500.003.1001", "Internal Server Error", "provider_error"),
        ("500.002.1001", "Server error", "provider_error"),
        ("404.001.03", "Invalid Access Token", "system_error"),
        ("400.003.01", "Invalid Access Token", "system_error"),
        ("401.002.01", "Error Occurred - Invalid Access Token", "system_error"),
        ("400.002.02", "Bad Request - Invalid Amount", "system_error"),
        ("404.001.04", "Invalid Authentication Header", "system_error"),
        ("500.001.1001", "The transaction is being processed", "pending"),
        ("500.001.1001", "Unable to lock subscriber, a transaction is already in process", "customer_error"),
        ("500.001.1001", "Wrong credentials", "system_error"),
    ],
)
def test_error_code_table(error_code, message, outcome):
    body = {"requestId": "r-1", "errorCode": error_code, "errorMessage": message}
    assert daraja.classify(body) == outcome
    # an errorCode wins over the HTTP status
    assert daraja.classify(body, http_status=200) == outcome


def test_final_result_code_wins_over_acknowledgement():
    body = {"ResponseCode": "0", "ResponseDescription": "accepted", "ResultCode": "1032"}
    assert daraja.classify(body) == "customer_cancelled"
    assert daraja.classify({"ResponseCode": "0"}) == "success"


@pytest.mark.parametrize("status, outcome", [(200, "success"), (429, "provider_error"), (500, "provider_error"),
                                             (503, "provider_error"), (400, "system_error"), (401, "system_error")])
def test_http_status_alone(status, outcome):
    assert daraja.classify(None, http_status=status) == outcome


def _response(status, body):
    response = requests.Response()
    response.status_code = status
    response._content = body
    return response


def test_exceptions_are_classified():
    assert daraja.classify_exception(requests.Timeout()) == "provider_error"
    assert daraja.classify_exception(requests.ConnectionError()) == "provider_error"
    assert daraja.classify_exception(ValueError("bug")) == "system_error"
    spike = _response(500, b'{"errorCode": "500.003.02", "errorMessage": "Spike arrest violation"}')
    assert daraja.classify_exception(requests.HTTPError(response=spike)) == "provider_error"
    token = _response(404, b'{"errorCode": "404.001.03", "errorMessage": "Invalid Access Token"}')
    assert daraja.classify_exception(requests.HTTPError(response=token)) == "system_error"
    html = _response(502, b"<html>bad gateway</html>")
    assert daraja.classify_exception(requests.HTTPError(response=html)) == "provider_error"


# --- per API: a code means what it means on the operation's API -----------------------
@pytest.mark.parametrize(
    "code, api, outcome",
    [
        # 2001: the customer's wrong PIN on STK, the business's invalid initiator on B2C
        ("2001", "stk_push", "customer_error"), ("2001", "stk_query", "customer_error"),
        ("2001", "b2c", "system_error"), ("2001", "reversal", "system_error"),
        ("2001", "transaction_status", "system_error"), ("2001", "account_balance", "system_error"),
        # 1: the customer's balance on STK, the shortcode's float on B2C
        (1, "stk_push", "customer_error"), ("1", "stk_query", "customer_error"), (1, "b2c", "system_error"),
        ("1032", "stk_query", "customer_cancelled"), ("1037", "stk_query", "timeout"),
        ("1032", "b2c", "system_error"),  # never a "customer" cancel on a payout
        ("8", "b2c", "customer_error"), ("2040", "b2c", "customer_error"), ("2040", "stk_push", "system_error"),
        ("17", "stk_push", "customer_error"), ("17", "b2c", "provider_error"),
        ("C2B00012", "c2b", "customer_error"), ("C2B00016", "c2b", "system_error"),
        ("0", "account_balance", "success"), ("26", "reversal", "provider_error"),
    ],
)
def test_result_code_per_api(code, api, outcome):
    assert daraja.classify_result_code(code, api) == outcome
    assert daraja.classify({"Result": {"ResultType": 0, "ResultCode": code}}, operation=api) == outcome


@pytest.mark.parametrize("operation, api", [
    ("b2c", "b2c"), ("b2b", "b2c"), ("b2c_payment", "b2c"), ("stk_query", "stk_query"),
    ("stk_push", "stk_push"), ("c2b_register", "c2b"), ("transaction_status", "transaction_status"),
    ("account_balance", "account_balance"), ("token_refresh", "stk_push"), (None, "stk_push"),
])
def test_operation_names_map_to_their_api(operation, api):
    assert daraja.api_of(operation) == api


@pytest.mark.parametrize("api, outcome", [("b2c", "system_error"), ("reversal", "system_error"),
                                          ("transaction_status", "system_error"),
                                          ("account_balance", "system_error"), ("stk_push", "provider_error")])
def test_duplicate_originator_conversation_id(api, outcome):
    body = {"requestId": "r-1", "errorCode": "500.002.1001",
            "errorMessage": "Duplicate OriginatorConversationID"}
    assert daraja.classify(body, http_status=500, operation=api) == outcome


def test_locked_subscriber_is_the_customer_only_on_stk():
    body = {"errorCode": "500.001.1001",
            "errorMessage": "Unable to lock subscriber, a transaction is already in process"}
    assert daraja.classify(body, operation="stk_push") == "customer_error"
    assert daraja.classify(body, operation="b2c") == "system_error"
    pending = {"errorCode": "500.001.1001", "errorMessage": "The transaction is being processed"}
    assert daraja.classify(pending, operation="stk_query") == "pending"


def test_monitor_mpesa_operation_uses_the_operations_api():
    from flask_mpesa_monitor.instrument import monitor_mpesa_operation
    from tests.metric_values import value

    @monitor_mpesa_operation("b2c")
    def pay(org_id):
        return {"Result": {"ResultCode": 2001, "ResultDesc": "The initiator information is invalid."}}

    @monitor_mpesa_operation("stk_push")
    def push(org_id):
        return {"Body": {"stkCallback": {"ResultCode": 2001}}}

    labels = {"operation": "b2c", "organization": "api-column-org", "outcome": "system_error"}
    before = value("mpesa_api_calls_total", **labels)
    pay("api-column-org")
    assert value("mpesa_api_calls_total", **labels) == before + 1
    stk = dict(labels, operation="stk_push", outcome="customer_error")
    before = value("mpesa_api_calls_total", **stk)
    push("api-column-org")
    assert value("mpesa_api_calls_total", **stk) == before + 1
