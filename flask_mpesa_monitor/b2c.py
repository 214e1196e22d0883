"""B2C and the other async APIs (reversal, transaction status, account balance): results.

These APIs answer in two steps: Daraja acknowledges the request, then posts a ``Result``
body (``ResultCode``, ``ResultDesc``, ``ConversationID``, ``OriginatorConversationID``,
``ResultParameters``) to the request's ResultURL, or, when the request waited too long in
Safaricom's queue, a body to its QueueTimeOutURL. A queue timeout is not a failure: the
request may still complete (ask Transaction Status), so it is counted on its own, in
``mpesa_async_queue_timeouts_total``, never as an outcome.

A result is counted once per ``ConversationID`` across the host's workers (the shared table
of :mod:`flask_mpesa_monitor.stk_store`; Daraja retries results), as a transaction of its
API classified by that API's column of the outcome table (``2001`` here is the business's
invalid initiator, ``1`` its float). Payouts are never revenue: a successful B2C result
adds its ``TransactionAmount`` to ``mpesa_payouts_total``. The B2C float (the utility
account) is set from an account balance result, or from a B2C result's
``B2CUtilityAccountAvailableFunds``, in ``mpesa_b2c_float_balance``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import daraja, metrics, tenancy
from .redact import get_logger
from .stk_store import MAX_ID_LENGTH, Completion, valid_id
from .transactions import TransactionTracker, valid_amount

log = get_logger(__name__)

ASYNC_APIS = ("b2c", "reversal", "transaction_status", "account_balance")
KEY_PREFIX = "res:"
MAX_PARAMETERS = 64
#: The largest float a balance may report (a sanity bound, not a business rule).
MAX_BALANCE = 1e13
FLOAT_ACCOUNT = "utility account"


class InvalidResult(ValueError):
    """A result body that is not shaped like Daraja's; the message says what is wrong."""


@dataclass(frozen=True)
class AsyncResult:
    """What :meth:`AsyncResultTracker.record_result` understood of a result."""

    conversation_id: str
    api: str
    outcome: str
    result_code: str
    duplicate: bool = False
    amount: float = 0.0
    float_balance: float | None = None


def _api(api: str) -> str:
    name = daraja.api_of(api)
    if name not in ASYNC_APIS:
        raise ValueError(f"api must be one of {', '.join(ASYNC_APIS)}, got {api!r}.")
    return name


def _result(payload: Any) -> Mapping[str, Any]:
    if not isinstance(payload, Mapping):
        raise InvalidResult("Daraja result must be a JSON object with Result.")
    inner = payload.get("Result", payload)
    if not isinstance(inner, Mapping):
        raise InvalidResult("Daraja result is missing Result.")
    return inner


def _code(value: Any) -> str:
    text = daraja.parse_result_code(value)
    if text is not None:
        return text
    raise InvalidResult("Daraja result ResultCode must be an integer or a Daraja result code.")


def _conversation_id(result: Mapping[str, Any], key: str = "ConversationID") -> str:
    value = valid_id(result.get(key))
    if value is None or len(value) > MAX_ID_LENGTH - len(KEY_PREFIX):
        raise InvalidResult(f"Daraja result has no {key} (at most 60 printable characters).")
    return value


def parameters(result: Mapping[str, Any]) -> dict[str, Any]:
    """``ResultParameters.ResultParameter`` as a dict (a list, or one item alone)."""
    block = result.get("ResultParameters")
    items = block.get("ResultParameter") if isinstance(block, Mapping) else None
    if isinstance(items, Mapping):
        items = [items]
    if not isinstance(items, list):
        return {}
    return {item["Key"]: item.get("Value") for item in items[:MAX_PARAMETERS]
            if isinstance(item, Mapping) and isinstance(item.get("Key"), str)}


def _balance(value: Any) -> float | None:
    number = daraja.parse_number(value)
    return number if number is not None and 0 <= number <= MAX_BALANCE else None


def utility_balance(account_balance: Any) -> tuple[float, str] | None:
    """(available funds, currency) of the utility account in Daraja's ``AccountBalance``
    string: ``Name|Currency|Current|Available|Reserved|Uncleared`` accounts joined by ``&``."""
    if not isinstance(account_balance, str):
        return None
    for account in account_balance[:4096].split("&")[:16]:
        fields = account.split("|")
        if len(fields) >= 3 and fields[0].strip().lower() == FLOAT_ACCOUNT:
            amount = _balance(fields[3] if len(fields) > 3 else fields[2])
            currency = fields[1].strip().upper()
            if amount is not None and currency.isalpha() and len(currency) == 3:
                return amount, currency
    return None


class AsyncResultTracker:
    """Counts the results and queue timeouts of an app's async Daraja requests."""

    def __init__(self, transactions: TransactionTracker) -> None:
        self.transactions = transactions

    def record_result(self, payload: Any, organization: Any, api: str = "b2c") -> AsyncResult:
        """Count Daraja's ``Result`` body of a B2C, reversal, transaction status or
        account balance request, once per ConversationID. Raises :class:`InvalidResult`
        for a body without ConversationID or ResultCode."""
        name = _api(api)
        result = _result(payload)
        conversation = _conversation_id(result)
        if result.get("ResultCode") in (None, ""):
            raise InvalidResult("Daraja result is missing ResultCode.")
        code = _code(result["ResultCode"])
        outcome = daraja.classify_result_code(code, name)
        params = parameters(result)
        org = tenancy.organizations(organization)
        amount = 0.0
        if name == "b2c" and outcome == daraja.SUCCESS:
            amount = valid_amount(params.get("TransactionAmount"), self.transactions.max_amount) or 0.0
        try:
            new = self.transactions.first_seen(KEY_PREFIX + conversation, org, Completion(outcome, code, amount))
        except Exception:  # count it anyway: losing a result would hide a payout
            log.exception("could not check the Daraja result against the shared table")
            new = True
        if not new:
            return AsyncResult(conversation, name, outcome, code, duplicate=True)
        self.transactions.count_transaction(org, name, outcome, 0.0, "KES")  # payouts are never revenue
        if amount:
            metrics.payouts_total.labels(org, "KES").inc(amount)
        balance = self._float(org, name, outcome, params)
        return AsyncResult(conversation, name, outcome, code, amount=amount, float_balance=balance)

    @staticmethod
    def _float(org: str, api: str, outcome: str, params: Mapping[str, Any]) -> float | None:
        if outcome != daraja.SUCCESS:
            return None
        found: tuple[float, str] | None = None
        if api == "account_balance":
            found = utility_balance(params.get("AccountBalance"))
        elif api == "b2c":
            funds = _balance(params.get("B2CUtilityAccountAvailableFunds"))
            found = (funds, "KES") if funds is not None else None
        if found is None:
            return None
        metrics.b2c_float_balance.labels(org, found[1]).set(found[0])
        return found[0]

    def record_queue_timeout(self, organization: Any, api: str = "b2c", payload: Any = None) -> bool:
        """Count a request that timed out in Daraja's queue (the QueueTimeOutURL's body).
        Not a failure: the request may still complete. Counted once per
        OriginatorConversationID when the body has one; returns False for a repeat."""
        name = _api(api)
        org = tenancy.organizations(organization)
        originator = None
        if payload is not None:
            try:
                originator = _conversation_id(_result(payload), "OriginatorConversationID")
            except InvalidResult:
                originator = None
        if originator is not None:
            try:
                if not self.transactions.first_seen(
                        "qto:" + originator, org, Completion(daraja.PENDING, "queue_timeout", 0.0)):
                    return False
            except Exception:
                log.exception("could not check the queue timeout against the shared table")
        metrics.async_queue_timeouts_total.labels(org, name).inc()
        return True
