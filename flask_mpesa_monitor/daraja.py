"""Daraja result and error codes -> outcome class (the table in docs/DESIGN.md).

The outcome decides who gets paged: ``customer_cancelled`` and ``customer_error`` are a
customer's doing and never page anyone; ``provider_error`` and ``system_error`` are
Safaricom's or ours and feed the alerts; ``timeout`` (the customer's phone could not be
reached) is watched against its baseline.

Precedence, as Daraja sends them: a final ``ResultCode`` (callback or query result) wins
over the acknowledgement's ``ResponseCode``; an ``errorCode`` in the body wins over the
HTTP status. Codes arrive as int or string.

>>> classify({"ResponseCode": "0", "ResultCode": "1032"})
'customer_cancelled'
>>> classify({"errorCode": "500.003.02", "errorMessage": "Spike arrest violation"}, http_status=500)
'provider_error'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SUCCESS = "success"
CUSTOMER_CANCELLED = "customer_cancelled"
CUSTOMER_ERROR = "customer_error"
TIMEOUT = "timeout"
PROVIDER_ERROR = "provider_error"
SYSTEM_ERROR = "system_error"
PENDING = "pending"

RESULT_CODES: dict[str, str] = {
    "0": SUCCESS,
    "1032": CUSTOMER_CANCELLED,
    **dict.fromkeys(("1", "2", "3", "4", "8", "2001", "8006", "1001", "17"), CUSTOMER_ERROR),
    **dict.fromkeys(("1037", "1019"), TIMEOUT),
    **dict.fromkeys(("1025", "9999", "26"), PROVIDER_ERROR),
    **dict.fromkeys(("2028", "SFC_IC0003"), SYSTEM_ERROR),
}

#: For B2C, reversal, status and balance the "customer" is the business itself: float,
#: initiator credentials. These codes are then the business's problem.
BUSINESS_OPERATIONS = frozenset({"b2c", "b2b", "reversal", "transaction_status", "account_balance"})
BUSINESS_SYSTEM_CODES = frozenset({"1", "2001", "8006"})

ERROR_CODES: dict[str, str] = {
    "500.003.02": PROVIDER_ERROR,  # spike arrest
    "500.003.03": PROVIDER_ERROR,  # quota violation
    "500.003.1001": PROVIDER_ERROR,  # internal server error
    "404.001.03": SYSTEM_ERROR,  # invalid access token
    "400.003.01": SYSTEM_ERROR,  # invalid access token
    "401.002.01": SYSTEM_ERROR,  # invalid authentication
    "400.002.02": SYSTEM_ERROR,  # bad request
}


def _code(value: Any) -> str:
    return str(value).strip()


def classify_result_code(code: Any, operation: str | None = None) -> str:
    """Outcome of a ``ResultCode`` (STK callback, query or B2C result)."""
    code = _code(code)
    if operation in BUSINESS_OPERATIONS and code in BUSINESS_SYSTEM_CODES:
        return SYSTEM_ERROR
    return RESULT_CODES.get(code, SYSTEM_ERROR)


def classify_error_code(code: Any, message: str | None = None) -> str:
    """Outcome of a Daraja ``errorCode`` (with its ``errorMessage`` where it decides)."""
    code = _code(code)
    if code == "500.001.1001":
        text = (message or "").lower()
        if "being processed" in text:
            return PENDING
        if "unable to lock subscriber" in text:
            return CUSTOMER_ERROR
        return SYSTEM_ERROR
    if code in ERROR_CODES:
        return ERROR_CODES[code]
    if code.startswith("5"):
        return PROVIDER_ERROR
    return SYSTEM_ERROR


def classify_http_status(status: int) -> str:
    """Outcome from the HTTP status alone (no Daraja code in the body)."""
    if status >= 500 or status == 429:
        return PROVIDER_ERROR
    if status >= 400:
        return SYSTEM_ERROR
    return SUCCESS


def _stk_callback(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    inner = body.get("Body")
    if isinstance(inner, Mapping):
        callback = inner.get("stkCallback")
        if isinstance(callback, Mapping):
            return callback
    return None


def classify(
    body: Mapping[str, Any] | None,
    *,
    http_status: int | None = None,
    operation: str | None = None,
) -> str:
    """Outcome of a Daraja JSON answer (and/or its HTTP status)."""
    if isinstance(body, Mapping):
        callback = _stk_callback(body)
        if callback is not None:
            body = callback
        if body.get("errorCode") not in (None, ""):
            return classify_error_code(body["errorCode"], body.get("errorMessage"))
        if body.get("ResultCode") not in (None, ""):
            return classify_result_code(body["ResultCode"], operation)
        if body.get("ResponseCode") not in (None, ""):
            code = _code(body["ResponseCode"])
            return SUCCESS if code == "0" else classify_result_code(code, operation)
    if http_status is not None:
        return classify_http_status(http_status)
    return SUCCESS if isinstance(body, Mapping) else SYSTEM_ERROR


def classify_exception(exc: BaseException, operation: str | None = None) -> str:
    """Outcome of an exception raised while calling Daraja.

    Our own request timing out or failing to connect is ``provider_error`` (``timeout``
    means the customer could not be reached). An ``HTTPError`` is classified by the
    Daraja error body it carries, else by its status.
    """
    try:
        import requests
    except ImportError:  # pragma: no cover - requests is a dependency
        return SYSTEM_ERROR
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return classify_response(exc.response, operation)
    if isinstance(exc, (requests.Timeout, requests.ConnectionError)):
        return PROVIDER_ERROR
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return PROVIDER_ERROR
    return SYSTEM_ERROR


def classify_response(response: Any, operation: str | None = None) -> str:
    """Outcome of a ``requests.Response`` from Daraja."""
    try:
        body = response.json()
    except ValueError:
        body = None
    return classify(body if isinstance(body, Mapping) else None,
                    http_status=response.status_code, operation=operation)
