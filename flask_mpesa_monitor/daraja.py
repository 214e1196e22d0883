"""Daraja result and error codes -> outcome class, per API (the table in docs/DESIGN.md).

The outcome decides who gets paged: ``customer_cancelled`` and ``customer_error`` are a
customer's doing and never page anyone; ``provider_error`` and ``system_error`` are
Safaricom's or ours and feed the alerts; ``timeout`` (the customer's phone could not be
reached) is watched against its baseline.

A code is classified per API (:data:`APIS`), found from the operation name
(:func:`api_of`): ``2001`` is a wrong PIN on STK Push but invalid initiator credentials
on B2C. Precedence, as Daraja sends them: a final ``ResultCode`` (callback or query result) wins
over the acknowledgement's ``ResponseCode``; an ``errorCode`` in the body wins over the
HTTP status. Codes arrive as int or string.

>>> classify({"ResponseCode": "0", "ResultCode": "1032"})
'customer_cancelled'
>>> classify({"errorCode": "500.003.02", "errorMessage": "Spike arrest violation"}, http_status=500)
'provider_error'
>>> classify({"Result": {"ResultCode": 2001}}, operation="b2c")
'system_error'
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

SUCCESS = "success"
CUSTOMER_CANCELLED = "customer_cancelled"
CUSTOMER_ERROR = "customer_error"
TIMEOUT = "timeout"
PROVIDER_ERROR = "provider_error"
SYSTEM_ERROR = "system_error"
PENDING = "pending"

#: The Daraja APIs whose codes this module knows, one column each in the outcome table
#: of docs/DESIGN.md. A code does not mean the same on all of them: ``2001`` is the
#: customer's wrong PIN on STK Push but the business's invalid initiator on B2C; ``1``
#: is the customer's balance on STK Push but the shortcode's float on B2C.
APIS = ("stk_push", "stk_query", "c2b", "b2c", "reversal", "transaction_status", "account_balance")
#: The APIs where the "customer" of a code is the business itself (float, initiator).
BUSINESS_APIS = frozenset({"b2c", "reversal", "transaction_status", "account_balance"})
STK_APIS = frozenset({"stk_push", "stk_query"})

#: Operation names (``monitor_mpesa_operation``'s first argument) that are not an API's
#: own name: b2b pays from the business's float like b2c; C2B's URL registration and
#: endpoints are C2B. Any other operation is read by its prefix (``b2c_payment`` is
#: b2c); an operation of no known API (``token_refresh``) gets the STK Push column.
OPERATION_APIS = {"b2b": "b2c", "c2b_register": "c2b", "c2b_validation": "c2b",
                  "c2b_confirmation": "c2b", "stk_status": "stk_query", "mpesa_express": "stk_push"}
DEFAULT_API = "stk_push"


def api_of(operation: str | None) -> str:
    """The API (a column of the outcome table) of an operation name."""
    if not operation:
        return DEFAULT_API
    if operation in APIS:
        return operation
    if operation in OPERATION_APIS:
        return OPERATION_APIS[operation]
    for api in sorted(APIS, key=len, reverse=True):
        if operation.startswith(api + "_"):
            return api
    return DEFAULT_API


def _per_api(default: str, **outcomes: str) -> dict[str, str]:
    """A row of the table: ``default`` on every API but those named."""
    unknown = set(outcomes) - set(APIS) - {"stk", "business"}
    assert not unknown, unknown
    row = dict.fromkeys(APIS, default)
    for api in APIS:
        if "stk" in outcomes and api in STK_APIS:
            row[api] = outcomes["stk"]
        if "business" in outcomes and api in BUSINESS_APIS:
            row[api] = outcomes["business"]
    row.update({api: outcome for api, outcome in outcomes.items() if api in APIS})
    return row


#: ResultCode -> outcome per API. STK Query answers with the callback's ResultCodes;
#: C2B's own codes are those the app answers validation with (a rejection reason).
RESULT_CODES: dict[str, dict[str, str]] = {
    "0": _per_api(SUCCESS),
    "1032": _per_api(SYSTEM_ERROR, stk=CUSTOMER_CANCELLED),
    # 1: the customer's balance on STK; the shortcode's float (utility account) on B2C.
    "1": _per_api(SYSTEM_ERROR, stk=CUSTOMER_ERROR),
    # 2001: wrong PIN on STK; invalid initiator credentials on the business APIs.
    "2001": _per_api(SYSTEM_ERROR, stk=CUSTOMER_ERROR),
    "8006": _per_api(SYSTEM_ERROR, stk=CUSTOMER_ERROR),
    **dict.fromkeys(("2", "3", "4", "1001"), _per_api(SYSTEM_ERROR, stk=CUSTOMER_ERROR)),
    # 8: the receiving customer's maximum balance would be exceeded (STK and B2C alike).
    "8": _per_api(SYSTEM_ERROR, stk=CUSTOMER_ERROR, b2c=CUSTOMER_ERROR),
    # 17: the same-amount rule on STK; an internal failure of M-Pesa elsewhere.
    "17": _per_api(PROVIDER_ERROR, stk=CUSTOMER_ERROR),
    **dict.fromkeys(("1037", "1019"), _per_api(SYSTEM_ERROR, stk=TIMEOUT)),
    **dict.fromkeys(("1025", "9999", "26"), _per_api(PROVIDER_ERROR)),
    **dict.fromkeys(("2028", "SFC_IC0003"), _per_api(SYSTEM_ERROR)),
    # 2040: the B2C recipient is not a registered M-Pesa customer.
    "2040": _per_api(SYSTEM_ERROR, b2c=CUSTOMER_ERROR),
    # C2B validation answers: the customer's input (phone, account, amount, KYC) or the
    # wrong shortcode was refused; C2B00016 is the app's "other error".
    **dict.fromkeys(("C2B00011", "C2B00012", "C2B00013", "C2B00014"), _per_api(SYSTEM_ERROR, c2b=CUSTOMER_ERROR)),
    **dict.fromkeys(("C2B00015", "C2B00016"), _per_api(SYSTEM_ERROR)),
}

#: For compatibility: the business APIs, by their operation names.
BUSINESS_OPERATIONS = frozenset({"b2c", "b2b", "reversal", "transaction_status", "account_balance"})

#: errorCode -> outcome per API (the synchronous answer to a request).
ERROR_CODES: dict[str, dict[str, str]] = {
    **dict.fromkeys(("500.003.02", "500.003.03", "500.003.1001"), _per_api(PROVIDER_ERROR)),
    **dict.fromkeys(("404.001.03", "400.003.01", "401.002.01", "400.002.02", "404.001.04"), _per_api(SYSTEM_ERROR)),
    # A duplicate OriginatorConversationID on the async APIs: our request reused an id
    # (the first request may have gone through: check before resending). STK and C2B
    # send it as a plain server error.
    "500.002.1001": _per_api(PROVIDER_ERROR, business=SYSTEM_ERROR),
}

#: 500.001.1001 is decided by its errorMessage: (text in the message, outcome per API).
LOCKED_MESSAGES: tuple[tuple[str, dict[str, str]], ...] = (
    ("being processed", _per_api(PENDING)),
    ("unable to lock subscriber", _per_api(SYSTEM_ERROR, stk=CUSTOMER_ERROR)),
)


def _code(value: Any) -> str:
    return str(value).strip()


def parse_result_code(value: Any) -> str | None:
    """A ``ResultCode`` from a body the app received, as a string: an integer (or its
    digits) of at most nine digits, or a code of the outcome table (``C2B00011``...);
    None for anything else (a float, a long string, a bool), which the caller refuses."""
    if isinstance(value, int) and not isinstance(value, bool) and -(10**9) < value < 10**9:
        return str(value)
    if isinstance(value, str):
        text = value.strip()
        if (text.isdigit() and text.isascii() and len(text) <= 9) or text in RESULT_CODES:
            return text
    return None


def parse_number(value: Any) -> float | None:
    """A finite number from a body the app received: Daraja sends amounts and balances as
    JSON numbers or as strings (``"1500.00"``); None for anything else (a bool, NaN, a
    word), which the caller refuses or ignores. Bounds are the caller's."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        number = float(value)
    except (ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def classify_result_code(code: Any, operation: str | None = None) -> str:
    """Outcome of a ``ResultCode`` (callback, query or async result) on the operation's API."""
    row = RESULT_CODES.get(_code(code))
    return row[api_of(operation)] if row is not None else SYSTEM_ERROR


def classify_error_code(code: Any, message: str | None = None, operation: str | None = None) -> str:
    """Outcome of a Daraja ``errorCode`` (with its ``errorMessage`` where it decides)."""
    code, api = _code(code), api_of(operation)
    if code == "500.001.1001":
        text = (message or "").lower()
        for needle, row in LOCKED_MESSAGES:
            if needle in text:
                return row[api]
        return SYSTEM_ERROR
    if code in ERROR_CODES:
        return ERROR_CODES[code][api]
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
    """The inner result of an STK callback (``Body.stkCallback``) or an async API's
    result (``Result``: B2C, reversal, transaction status, account balance)."""
    inner = body.get("Body")
    if isinstance(inner, Mapping):
        callback = inner.get("stkCallback")
        if isinstance(callback, Mapping):
            return callback
    result = body.get("Result")
    return result if isinstance(result, Mapping) else None


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
            return classify_error_code(body["errorCode"], body.get("errorMessage"), operation)
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
