"""Transactions and STK push callbacks: outcome counts, revenue, pending pushes.

An STK push is a two-step payment: Daraja acknowledges the request, then, seconds or
minutes later, posts the customer's answer to the app's callback URL. Anyone can post to
that URL, so a callback is money only when it matches a push the app recorded
(:meth:`TransactionTracker.record_stk_push`) for the same organization, and only up to
the pushed amount: that is ``mpesa_revenue_total``. Every other success callback is kept
apart, never lost and never trusted, in ``mpesa_revenue_unverified_total{reason}``, with a
security event:

- ``callback_unmatched`` (medium): no push with that CheckoutRequestID, after a grace
  period (a fast callback can beat the app's own ``record_stk_push``, which runs after
  Daraja's answer returns);
- ``callback_wrong_organization`` (high): the push belongs to another organization, a
  cross-tenant signal; the money is credited to neither;
- ``callback_amount_mismatch`` (high): the callback claims more than was pushed; the
  pushed amount is revenue, the excess is not.

Medium events show as a rate on the security dashboard but never page alone; high ones
page (``SecurityEvents``). A push whose callback never came counts once in
``mpesa_stk_callbacks_missing_total``; if the callback comes after all, it still
matches, once, and counts in ``mpesa_stk_callbacks_late_total``. Daraja's retries are
counted once. A callback that matches nothing is not in ``mpesa_transactions_total``
either: a flood of forged failures must not trip the error-ratio alerts. The table
behind this is :mod:`flask_mpesa_monitor.stk_store`.

Apps that never call ``record_stk_push`` set ``MPESA_MONITOR_STK_MATCHING`` off: every
valid success callback is then revenue, as it claims.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from . import daraja, metrics, tenancy
from .redact import get_logger
from .stk_store import Completion, Held, Match, Push, SQLPendingStore, default_store, valid_id

log = get_logger(__name__)

#: Transaction types whose success is money collected (never b2c payouts).
COLLECTION_TYPES = frozenset({"stk_push", "c2b"})

#: The largest single M-Pesa transaction, in KES (Safaricom's current limit).
DEFAULT_MAX_AMOUNT = 250_000.0
#: Seconds a callback without a push is held before it counts as unmatched.
DEFAULT_GRACE = 30.0
#: Callback metadata items read at most (Daraja sends four or five).
MAX_ITEMS = 32

#: Security events of callbacks and their severities.
CALLBACK_EVENTS = {
    "invalid_callback": "medium",
    "callback_unmatched": "medium",
    "callback_unknown_source": "medium",
    "callback_wrong_organization": "high",
    "callback_amount_mismatch": "high",
}

#: ``reason`` label values of ``mpesa_revenue_unverified_total``.
UNMATCHED, WRONG_ORGANIZATION, AMOUNT_MISMATCH = "unmatched", "wrong_organization", "amount_mismatch"
NO_CHECKOUT_ID, STORE_UNAVAILABLE = "no_checkout_id", "store_unavailable"


class InvalidCallback(ValueError):
    """An STK callback payload that is not shaped like Daraja's; the message says what is missing."""


@dataclass(frozen=True)
class CallbackResult:
    """What :meth:`TransactionTracker.record_stk_callback` understood of a callback.

    ``match`` says how it met its push: ``matched``, ``late`` (after the push was
    counted missing), ``held`` (no push yet; counted when it comes, or as unmatched
    after the grace period), ``wrong_organization``, ``duplicate``, or ``unchecked``
    (matching off, or the table unavailable). ``verified_amount`` is what counted as
    revenue now.
    """

    checkout_request_id: str
    outcome: str
    result_code: str
    amount: float
    duplicate: bool = False
    delay_seconds: float | None = None
    match: str = "matched"
    verified_amount: float = 0.0


def _result_code(code: Any) -> str:
    """An int, a digit string, or a code of the outcome table; else InvalidCallback."""
    text = daraja.parse_result_code(code)
    if text is not None:
        return text
    raise InvalidCallback("STK callback Body.stkCallback.ResultCode must be an integer or a Daraja result code.")


def _parse_callback(payload: Any) -> tuple[Mapping[str, Any], str, str]:
    if not isinstance(payload, Mapping):
        raise InvalidCallback("STK callback must be a JSON object with Body.stkCallback.")
    body = payload.get("Body")
    if not isinstance(body, Mapping):
        raise InvalidCallback("STK callback is missing Body.")
    callback = body.get("stkCallback")
    if not isinstance(callback, Mapping):
        raise InvalidCallback("STK callback is missing Body.stkCallback.")
    raw = callback.get("CheckoutRequestID")
    if not isinstance(raw, str) or not raw:
        raise InvalidCallback("STK callback is missing Body.stkCallback.CheckoutRequestID.")
    checkout = valid_id(raw)
    if checkout is None:
        raise InvalidCallback("STK callback Body.stkCallback.CheckoutRequestID is not a Daraja id "
                              "(at most 64 printable characters).")
    code = callback.get("ResultCode")
    if code is None or (isinstance(code, str) and not code.strip()):
        raise InvalidCallback("STK callback is missing Body.stkCallback.ResultCode.")
    return callback, checkout, _result_code(code)


def valid_amount(value: Any, maximum: float) -> float | None:
    """``value`` as a finite amount in ``(0, maximum]``, or None."""
    amount = daraja.parse_number(value)
    return amount if amount is not None and 0 < amount <= maximum else None


def _callback_amount(callback: Mapping[str, Any], maximum: float) -> float:
    metadata = callback.get("CallbackMetadata")
    items = metadata.get("Item") if isinstance(metadata, Mapping) else None
    if not isinstance(items, list):
        return 0.0
    for item in items[:MAX_ITEMS]:
        if isinstance(item, Mapping) and item.get("Name") == "Amount":
            amount = valid_amount(item.get("Value"), maximum)
            if amount is None:
                raise InvalidCallback(f"STK callback Amount must be a number above 0 and at most {maximum:g}.")
            return amount
    return 0.0


class TransactionTracker:
    """Counts transactions and matches STK callbacks with their pushes (one per extension state)."""

    def __init__(
        self,
        callback_timeout: float = 120.0,
        max_pending: int = 10000,
        on_transaction: Callable[[str, str, str, float, str], None] | None = None,
        on_invalid_callback: Callable[[str], None] | None = None,
        store: SQLPendingStore | None = None,
        *,
        matching: bool = True,
        grace: float = DEFAULT_GRACE,
        max_amount: float = DEFAULT_MAX_AMOUNT,
        max_body_bytes: int = 16384,
        on_security_event: Callable[[str, str, str | None], None] | None = None,
    ) -> None:
        self.callback_timeout = callback_timeout
        self.store = store if store is not None else default_store(max_pending)
        self.matching = matching
        self.grace = grace
        self.max_amount = max_amount
        self.max_body_bytes = max_body_bytes
        self._on_transaction = on_transaction
        self._on_invalid_callback = on_invalid_callback
        self._on_security_event = on_security_event
        self._next_expiry = 0.0

    # --- STK push -----------------------------------------------------------------
    def record_stk_push(self, organization: Any, checkout_request_id: str, amount: float = 0) -> None:
        """Count an accepted STK push and remember it as pending until its callback.

        ``amount`` caps the revenue its callback can bring; 0 or None means unknown (no
        cap). An id that cannot be Daraja's (over 64 characters) is counted but not
        remembered; its callback will be refused as invalid anyway.
        """
        org = tenancy.organizations(organization)
        metrics.stk_pushes_total.labels(org).inc()
        checkout = valid_id(checkout_request_id)
        if checkout is None:
            if checkout_request_id:
                log.warning("STK push not remembered: its CheckoutRequestID is not a Daraja id")
            return
        pushed = valid_amount(amount, self.max_amount) if amount else None
        if amount and pushed is None:
            log.warning("STK push amount is not a finite number in (0, %g]: remembered as unknown (no cap)",
                        self.max_amount)
        try:
            added = self.store.add(checkout, Push(org, time.time(), pushed or 0.0))
        except Exception:  # the shared table failing must not fail the payment request
            log.exception("could not remember the pending STK push")
            return
        if added.held is not None:  # its callback came first, and was held
            push = Push(org, added.held.arrived, pushed or 0.0)
            self._resolved(Match("matched", push), added.held.completion, added.held.organization or None, 0.0)
        self._missing(added.evicted)  # the table is full: the oldest pushes will never be matched
        self._count_unmatched(added.dropped)
        self._expire_now_and_then()

    def record_stk_callback(
        self, payload: Any, organization: Any = None, initiated_at: float | None = None,
        body_size: int | None = None,
    ) -> CallbackResult:
        """Count Daraja's STK callback; return what it said and how it matched.

        Raises :class:`InvalidCallback` (and counts a security event ``invalid_callback``)
        when the payload is not a Daraja STK callback: no CheckoutRequestID or one over 64
        characters, a ResultCode that is neither an integer nor a known code, an Amount
        that is not a finite number in (0, max]. A second callback with the same
        CheckoutRequestID is not counted again (``duplicate=True``), whichever worker
        received the first. ``body_size`` (the request's Content-Length) over the
        configured maximum makes the callback invalid too.
        """
        try:
            if body_size is not None and body_size > self.max_body_bytes:
                raise InvalidCallback(f"STK callback body is {body_size} bytes, more than {self.max_body_bytes}.")
            callback, checkout, code = _parse_callback(payload)
            outcome = daraja.classify_result_code(code, "stk_push")
            amount = _callback_amount(callback, self.max_amount) if outcome == daraja.SUCCESS else 0.0
        except InvalidCallback as exc:
            if self._on_invalid_callback is not None:
                self._on_invalid_callback(str(organization) if organization is not None else "")
            log.warning("invalid STK callback rejected: %s", exc)
            raise
        return self.resolve(checkout, Completion(outcome, code, amount), organization, initiated_at)

    def resolve(
        self, checkout: str, completion: Completion, organization: Any = None, initiated_at: float | None = None,
        *, via: str = "callback",
    ) -> CallbackResult:
        """Resolve a push with its result, from a callback or a reconciliation (``via="query"``:
        STK Query, Transaction Status): both share the push's single state, so it is
        counted once whichever comes first. A query never creates a row (``unknown``)."""
        claimed = tenancy.organizations(organization) if organization is not None else None
        try:
            match = self.store.complete(checkout, completion, claimed or "", hold=self.matching,
                                        create=via != "query")
        except Exception:  # count the callback anyway: losing it would hide a payment
            log.exception("could not match the STK callback with its push")
            match = Match("unavailable")
        self._count_unmatched(match.dropped)
        if match.kind == "duplicate":
            previous = match.previous or completion
            result = CallbackResult(checkout, previous.outcome, previous.result_code, previous.amount,
                                    duplicate=True, match="duplicate")
        elif match.kind in ("held", "unknown"):
            result = CallbackResult(checkout, completion.outcome, completion.result_code, completion.amount,
                                    match=match.kind)
        else:
            started = initiated_at if initiated_at is not None else (match.push.started if match.push else None)
            delay = max(0.0, time.time() - started) if started is not None else None
            if via == "query":
                delay = None  # the query's time is not the callback's delay
            kind, verified = self._resolved(match, completion, claimed, delay, via)
            result = CallbackResult(checkout, completion.outcome, completion.result_code, completion.amount,
                                    delay_seconds=delay, match=kind, verified_amount=verified)
        self._expire_now_and_then()
        return result

    def _expire_now_and_then(self) -> None:
        """Expire on the request path at most once a second: the health thread's tick does
        it too, so the table is never more than a tick behind, at a fraction of the cost."""
        now = time.monotonic()
        if now >= self._next_expiry:
            self._next_expiry = now + 1.0
            self.expire()

    def _resolved(self, match: Match, completion: Completion, claimed: str | None,
                  delay: float | None, via: str = "callback") -> tuple[str, float]:
        """Count a callback that is no longer waiting; return (match kind, verified revenue)."""
        outcome, amount = completion.outcome, completion.amount
        push = match.push
        if via == "query" and not amount and push is not None:
            amount = push.amount  # STK Query names no amount: the pushed one, the most it can be
        money = amount if outcome == daraja.SUCCESS else 0.0
        if push is None:  # matching off ("unchecked") or the table unavailable
            org = tenancy.organizations(claimed)
            if match.kind == "unavailable" and self.matching:
                self.count_transaction(org, "stk_push", outcome, 0.0, "KES")
                self.count_unverified(org, money, STORE_UNAVAILABLE)
                return "unchecked", 0.0
            if delay is not None:
                metrics.stk_callback_delay_seconds.labels(org).observe(delay)
            self.count_transaction(org, "stk_push", outcome, money, "KES")
            return "unchecked", money
        kind = match.kind
        if via == "query" and match.kind != "matched":
            kind = "recovered"  # a missing callback, answered by the app's own query
            metrics.stk_reconciled_total.labels(push.organization, "recovered").inc()
        elif match.kind != "matched":
            metrics.stk_callbacks_late_total.labels(push.organization).inc()
        if claimed and claimed != push.organization:
            # Credited to neither: the push's tenant did not get this callback, and the
            # receiving tenant never pushed it.
            self._event("callback_wrong_organization", claimed)
            log.warning("STK callback for organization=%s arrived for organization=%s",
                        push.organization, claimed)
            self.count_unverified(claimed, money, WRONG_ORGANIZATION)
            return "wrong_organization", 0.0
        verified = money
        if money and push.amount > 0 and money != push.amount:
            self._event("callback_amount_mismatch", push.organization)
            log.warning("STK callback amount %s differs from the pushed amount %s (organization=%s)",
                        money, push.amount, push.organization)
            verified = min(money, push.amount)
            self.count_unverified(push.organization, money - verified, AMOUNT_MISMATCH)
        if delay is not None:
            metrics.stk_callback_delay_seconds.labels(push.organization).observe(delay)
        self.count_transaction(push.organization, "stk_push", outcome, verified, "KES")
        return kind, verified

    def expire(self, now: float | None = None) -> int:
        """Count pushes pending past the callback timeout as missing (once each), and
        callbacks held past the grace period as unmatched. Returns the pushes expired."""
        now = time.time() if now is None else now
        try:
            expired = self.store.expire(now - self.callback_timeout, now - self.grace)
        except Exception:
            log.exception("could not expire pending STK pushes")
            return 0
        self._missing(expired.missing)
        self._count_unmatched(expired.unmatched)
        return len(expired.missing)

    @staticmethod
    def _missing(pushes: list[Push]) -> None:
        for push in pushes:
            metrics.stk_callbacks_missing_total.labels(push.organization).inc()

    def _count_unmatched(self, held: tuple[Held, ...] | list[Held]) -> None:
        for callback in held:
            org = tenancy.organizations(callback.organization or None)
            self._event("callback_unmatched", callback.organization or None)
            if callback.completion.outcome == daraja.SUCCESS:
                self.count_unverified(org, callback.completion.amount, UNMATCHED)

    def _event(self, event_type: str, organization: str | None) -> None:
        if self._on_security_event is not None:
            try:
                self._on_security_event(event_type, CALLBACK_EVENTS[event_type], organization)
            except Exception:
                log.exception("security event could not be counted")

    def pending_count(self) -> int:
        return self.store.pending_count()

    # --- Reconciliation -----------------------------------------------------------
    def record_stk_query(
        self, organization: Any, checkout_request_id: str, response: Any, amount: float | None = None,
        api: str = "stk_query",
    ) -> CallbackResult:
        """Resolve a push from the app's STK Query (or Transaction Status) answer.

        ``response`` is Daraja's JSON: a final ``ResultCode`` (STK Query sends it as a
        string) resolves the push once, sharing its state with callbacks: a push counted
        missing is then ``recovered`` (``mpesa_stk_reconciled_total{result="recovered"}``)
        and its late callback, if it ever comes, is a duplicate; a callback that came
        first makes this answer the duplicate. An answer that is not final ("being
        processed", an error) leaves the push as it is; for a missing push it counts
        ``result="unresolved"``. Revenue follows the callbacks' rule: at most the pushed
        amount (``amount`` when the app knows it, else the pushed one)."""
        checkout = valid_id(checkout_request_id)
        if checkout is None:
            raise ValueError("checkout_request_id must be a Daraja CheckoutRequestID (at most 64 characters).")
        body = response if isinstance(response, Mapping) else {}
        inner = body.get("Result") if isinstance(body.get("Result"), Mapping) else body
        code_value = inner.get("ResultCode") if isinstance(inner, Mapping) else None
        outcome = daraja.classify(body, operation=api) if body else daraja.SYSTEM_ERROR
        final = code_value not in (None, "") and outcome != daraja.PENDING
        org = tenancy.organizations(organization)
        if not final:
            try:
                state = self.store.state_of(checkout)
            except Exception:
                log.exception("could not read the STK push being reconciled")
                state = None
            if state == "missing":
                metrics.stk_reconciled_total.labels(org, "unresolved").inc()
            return CallbackResult(checkout, outcome, "", 0.0, match="unresolved")
        code = _result_code(code_value)
        paid = 0.0
        if outcome == daraja.SUCCESS and amount:
            checked = valid_amount(amount, self.max_amount)
            if checked is None:
                raise ValueError(f"amount must be a finite number between 0 and {self.max_amount:g}, got {amount!r}.")
            paid = checked
        if not self.matching:
            self.count_transaction(org, "stk_push", outcome, paid, "KES")
            return CallbackResult(checkout, outcome, code, paid, match="unchecked", verified_amount=paid)
        return self.resolve(checkout, Completion(outcome, code, paid), organization, via="query")

    # --- Other flows --------------------------------------------------------------
    def record_transaction(
        self,
        organization: Any,
        type: str,
        outcome: str | None = None,
        result_code: Any = None,
        amount: float = 0,
        currency: str = "KES",
        checkout_request_id: str | None = None,
    ) -> str:
        """Count a transaction of any flow (c2b, b2c, reversal, ...); return its outcome.

        Give ``outcome`` directly or a Daraja ``result_code`` to classify. Revenue counts
        successful collections only (``stk_push``, ``c2b``), never ``b2c`` payouts.
        ``amount`` must be finite, not negative and at most the per-transaction maximum.

        An ``stk_push`` follows the callbacks' rule while matching is on: with its
        ``checkout_request_id`` (an STK Query result, say) it resolves the push like a
        callback would, once in all; without one it cannot be matched, so its money
        counts as unverified (``reason="no_checkout_id"``).
        """
        if outcome is None:
            if result_code is None:
                raise ValueError("record_transaction needs an outcome or a result_code.")
            outcome = daraja.classify_result_code(result_code, type)
        if outcome not in metrics.OUTCOMES:
            raise ValueError(f"Unknown outcome {outcome!r}: use one of {', '.join(metrics.OUTCOMES)}.")
        if not isinstance(currency, str) or not currency.isalpha() or len(currency) != 3:
            raise ValueError(f"currency must be an ISO 4217 code such as 'KES', got {currency!r}.")
        checked = valid_amount(amount, self.max_amount) if amount else 0.0
        if checked is None:
            raise ValueError(f"amount must be a finite number between 0 and {self.max_amount:g}, got {amount!r}.")
        org, type_ = tenancy.organizations(organization), tenancy.transaction_types(type)
        if type_ == "stk_push" and self.matching:
            if checkout_request_id is not None:
                checkout = valid_id(checkout_request_id)
                if checkout is None:
                    raise ValueError("checkout_request_id must be a Daraja CheckoutRequestID (at most 64 characters).")
                code = str(result_code).strip()[:32] if result_code is not None else outcome
                self.resolve(checkout, Completion(outcome, code, checked if outcome == daraja.SUCCESS else 0.0),
                             organization)
                return outcome
            self.count_transaction(org, type_, outcome, 0.0, currency.upper())
            if outcome == daraja.SUCCESS:
                self.count_unverified(org, checked, NO_CHECKOUT_ID, currency.upper())
            return outcome
        self.count_transaction(org, type_, outcome, checked, currency.upper())
        return outcome

    # --- For the other flows' trackers (c2b, b2c) ----------------------------------
    # Their payloads are checked by their own modules; these count what they understood,
    # with label values already bounded by tenancy, in the same series and the same
    # shared table as STK pushes.
    def first_seen(self, key: str, organization: str, completion: Completion) -> bool:
        """True the first time ``key`` (a flow's prefix and its Daraja id: a C2B TransID,
        a B2C ConversationID) is seen by any worker or host sharing the STK table; False
        for Daraja's retries. Callbacks the table forgot to keep its bound are counted
        as unmatched here. Raises what the table raises: the caller decides whether to
        count the result anyway.

        Example: ``tracker.first_seen("c2b:" + trans_id, org, Completion("success", "0", amount))``
        """
        new, dropped = self.store.first_seen(key, organization, completion)
        self._count_unmatched(dropped)
        return new

    def count_transaction(self, org: str, type_: str, outcome: str, amount: float, currency: str = "KES") -> None:
        """Count one transaction whose labels are bounded and amount checked already:
        in ``mpesa_transactions_total`` and, for a successful collection (``stk_push``,
        ``c2b``), ``amount`` in ``mpesa_revenue_total``; the transaction listener hears it
        unless it is pending. Apps call :meth:`record_transaction`, which checks first."""
        metrics.transactions_total.labels(org, type_, outcome).inc()
        revenue = amount if outcome == daraja.SUCCESS and type_ in COLLECTION_TYPES else 0.0
        if revenue > 0:
            metrics.revenue_total.labels(org, currency).inc(revenue)
        if self._on_transaction is not None and outcome != daraja.PENDING:
            try:
                self._on_transaction(org, type_, outcome, revenue, currency)
            except Exception:
                log.exception("transaction listener failed")

    @staticmethod
    def count_unverified(org: str, amount: float, reason: str, currency: str = "KES") -> None:
        """Add money that was claimed but cannot be trusted to
        ``mpesa_revenue_unverified_total{reason}``, never to ``mpesa_revenue_total``:
        ``reason`` is one of this module's reasons (``unmatched``, ...) or a flow's own
        (``unknown_source`` for a C2B confirmation from outside the allowed addresses)."""
        if amount > 0:
            metrics.revenue_unverified_total.labels(org, currency, reason).inc(amount)
