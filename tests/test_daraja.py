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
