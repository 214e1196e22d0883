"""Transactions and STK push callbacks: outcome counts, revenue, pending pushes.

An STK push is a two-step payment: Daraja acknowledges the request, then, seconds or
minutes later, posts the customer's answer to the app's callback URL. The tracker keeps
the pushes still waiting (bounded; per process, so under gunicorn each worker knows the
pushes it sent), de-duplicates callbacks (Daraja retries them), and counts a push whose
callback never came once in ``mpesa_stk_callbacks_missing_total``. The alert on missing
callbacks is computed from counters that add up across workers, not from this table.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from . import daraja, metrics, tenancy
from .redact import get_logger
from .stk_store import Completion, PendingStore, Push, default_store

log = get_logger(__name__)

#: Transaction types whose success is money collected (never b2c payouts).
COLLECTION_TYPES = frozenset({"stk_push", "c2b"})


class InvalidCallback(ValueError):
    """An STK callback payload that is not shaped like Daraja's; the message says what is missing."""


@dataclass(frozen=True)
class CallbackResult:
    """What :meth:`TransactionTracker.record_stk_callback` understood of a callback."""

    checkout_request_id: str
    outcome: str
    result_code: str
    amount: float
    duplicate: bool = False
    delay_seconds: float | None = None


def _parse_callback(payload: Any) -> tuple[Mapping[str, Any], str, str]:
    if not isinstance(payload, Mapping):
        raise InvalidCallback("STK callback must be a JSON object with Body.stkCallback.")
    body = payload.get("Body")
    if not isinstance(body, Mapping):
        raise InvalidCallback("STK callback is missing Body.")
    callback = body.get("stkCallback")
    if not isinstance(callback, Mapping):
        raise InvalidCallback("STK callback is missing Body.stkCallback.")
    checkout = callback.get("CheckoutRequestID")
    if not isinstance(checkout, str) or not checkout:
        raise InvalidCallback("STK callback is missing Body.stkCallback.CheckoutRequestID.")
    code = callback.get("ResultCode")
    if code is None or isinstance(code, bool) or not isinstance(code, (int, str)) or str(code).strip() == "":
        raise InvalidCallback("STK callback is missing Body.stkCallback.ResultCode.")
    return callback, checkout, str(code).strip()


def _amount(callback: Mapping[str, Any]) -> float:
    metadata = callback.get("CallbackMetadata")
    items = metadata.get("Item") if isinstance(metadata, Mapping) else None
    if not isinstance(items, list):
        return 0.0
    for item in items:
        if isinstance(item, Mapping) and item.get("Name") == "Amount":
            try:
                amount = float(item.get("Value"))
            except (TypeError, ValueError):
                return 0.0
            return amount if amount > 0 and amount == amount and amount != float("inf") else 0.0
    return 0.0


class TransactionTracker:
    """Counts transactions and tracks pending STK pushes (one per extension state)."""

    def __init__(
        self,
        callback_timeout: float = 120.0,
        max_pending: int = 10000,
        on_transaction: Callable[[str, str, str, float, str], None] | None = None,
        on_invalid_callback: Callable[[str], None] | None = None,
        store: PendingStore | None = None,
    ) -> None:
        self.callback_timeout = callback_timeout
        self.store = store if store is not None else default_store(max_pending)
        self._on_transaction = on_transaction
        self._on_invalid_callback = on_invalid_callback

    # --- STK push -----------------------------------------------------------------
    def record_stk_push(self, organization: Any, checkout_request_id: str, amount: float = 0) -> None:
        """Count an accepted STK push and remember it as pending until its callback."""
        org = tenancy.organizations(organization)
        metrics.stk_pushes_total.labels(org).inc()
        if not checkout_request_id:
            return
        try:
            evicted = self.store.add(str(checkout_request_id), Push(org, time.time(), float(amount or 0)))
        except Exception:  # the shared table failing must not fail the payment request
            log.exception("could not remember the pending STK push")
            return
        self._missing(evicted)  # the table is full: the oldest pushes will never be matched
        self.expire()

    def record_stk_callback(
        self, payload: Any, organization: Any = None, initiated_at: float | None = None
    ) -> CallbackResult:
        """Count Daraja's STK callback; return what it said.

        Raises :class:`InvalidCallback` (and counts a security event ``invalid_callback``)
        when the payload is not a Daraja STK callback. A second callback with the same
        CheckoutRequestID is not counted again (``duplicate=True``), whichever worker
        received the first.
        """
        try:
            callback, checkout, code = _parse_callback(payload)
        except InvalidCallback as exc:
            if self._on_invalid_callback is not None:
                self._on_invalid_callback(str(organization) if organization is not None else "")
            log.warning("invalid STK callback rejected: %s", exc)
            raise
        outcome = daraja.classify_result_code(code, "stk_push")
        amount = _amount(callback) if outcome == daraja.SUCCESS else 0.0
        try:
            previous, push = self.store.complete(checkout, Completion(outcome, code, amount))
        except Exception:  # count the callback anyway: losing it would hide a payment
            log.exception("could not match the STK callback with its push")
            previous, push = None, None
        if previous is not None:
            return CallbackResult(checkout, previous.outcome, previous.result_code, previous.amount, duplicate=True)
        started = initiated_at if initiated_at is not None else (push.started if push else None)
        delay = max(0.0, time.time() - started) if started is not None else None
        org = tenancy.organizations(organization if organization is not None else
                                    (push.organization if push else None))
        if delay is not None:
            metrics.stk_callback_delay_seconds.labels(org).observe(delay)
        self._count(org, "stk_push", outcome, amount, "KES")
        self.expire()
        return CallbackResult(checkout, outcome, code, amount, delay_seconds=delay)

    def expire(self, now: float | None = None) -> int:
        """Count pushes pending past the callback timeout as missing (once each)."""
        now = time.time() if now is None else now
        try:
            expired = self.store.expire(now - self.callback_timeout)
        except Exception:
            log.exception("could not expire pending STK pushes")
            return 0
        self._missing(expired)
        return len(expired)

    @staticmethod
    def _missing(pushes: list[Push]) -> None:
        for push in pushes:
            metrics.stk_callbacks_missing_total.labels(push.organization).inc()

    def pending_count(self) -> int:
        return self.store.pending_count()

    # --- Other flows --------------------------------------------------------------
    def record_transaction(
        self,
        organization: Any,
        type: str,
        outcome: str | None = None,
        result_code: Any = None,
        amount: float = 0,
        currency: str = "KES",
    ) -> str:
        """Count a transaction of any flow (c2b, b2c, reversal, ...); return its outcome.

        Give ``outcome`` directly or a Daraja ``result_code`` to classify. Revenue counts
        successful collections only (``stk_push``, ``c2b``), never ``b2c`` payouts.
        """
        if outcome is None:
            if result_code is None:
                raise ValueError("record_transaction needs an outcome or a result_code.")
            outcome = daraja.classify_result_code(result_code, type)
        if outcome not in metrics.OUTCOMES:
            raise ValueError(f"Unknown outcome {outcome!r}: use one of {', '.join(metrics.OUTCOMES)}.")
        if not isinstance(currency, str) or not currency.isalpha() or len(currency) != 3:
            raise ValueError(f"currency must be an ISO 4217 code such as 'KES', got {currency!r}.")
        try:
            amount = float(amount or 0)
        except (TypeError, ValueError):
            raise ValueError(f"amount must be a number, got {amount!r}.") from None
        if amount < 0 or amount != amount:
            raise ValueError(f"amount must not be negative, got {amount!r}.")
        self._count(tenancy.organizations(organization), tenancy.transaction_types(type),
                    outcome, amount, currency.upper())
        return outcome

    def _count(self, org: str, type_: str, outcome: str, amount: float, currency: str) -> None:
        metrics.transactions_total.labels(org, type_, outcome).inc()
        revenue = amount if outcome == daraja.SUCCESS and type_ in COLLECTION_TYPES else 0.0
        if revenue > 0:
            metrics.revenue_total.labels(org, currency).inc(revenue)
        if self._on_transaction is not None and outcome != daraja.PENDING:
            try:
                self._on_transaction(org, type_, outcome, revenue, currency)
            except Exception:
                log.exception("transaction listener failed")
