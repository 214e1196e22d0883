"""C2B (paybill and till) flows: the validation and confirmation endpoints of an organization.

Safaricom calls the app twice for a C2B payment it may check: *validation* asks whether to
accept (the app must answer within about 8 seconds, or Safaricom applies the default the
shortcode registered), then *confirmation* says the money moved. Validation is measured by
how long the app took and what it answered (accepted, or rejected with a reason class from
the C2B result code); confirmations are counted per organization and shortcode, so the
``C2BConfirmationsStopped`` alert sees a shortcode that goes quiet.

A confirmation has no push to match, so what guards revenue is what can be checked: the
source address (``MPESA_MONITOR_CALLBACK_ALLOWED_IPS``; from elsewhere the money counts in
``mpesa_revenue_unverified_total{reason="unknown_source"}``), the amount bounds (as for
STK callbacks), and the ``TransID``, counted once across the host's workers in the same
shared table as STK pushes (Daraja retries confirmations).
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

#: C2B validation result codes (the app's answer) -> reason class of a rejection.
REJECTION_REASONS = {
    "C2B00011": "invalid_msisdn",
    "C2B00012": "invalid_account",
    "C2B00013": "invalid_amount",
    "C2B00014": "invalid_kyc",
    "C2B00015": "invalid_shortcode",
    "C2B00016": "other",
}
REASONS = ("none", *dict.fromkeys(REJECTION_REASONS.values()))
#: The result of a validation the app's view failed to answer (it raised).
ERROR = "error"
#: Prefix of C2B rows in the shared table (a TransID is about 10 characters).
KEY_PREFIX = "c2b:"
UNKNOWN_SOURCE = "unknown_source"


class InvalidConfirmation(ValueError):
    """A C2B confirmation that is not shaped like Daraja's; the message says what is wrong."""


@dataclass(frozen=True)
class ConfirmationResult:
    """What :meth:`C2BTracker.record_confirmation` understood: ``verified_amount`` is the
    revenue counted now (0 for a duplicate or an unknown source)."""

    trans_id: str
    amount: float
    shortcode: str
    duplicate: bool = False
    verified_amount: float = 0.0


def _text(payload: Mapping[str, Any], key: str) -> str | None:
    value = payload.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    return value.strip() if isinstance(value, str) and value.strip() else None


def rejection_reason(result_code: Any) -> tuple[str, str]:
    """(``accepted``/``rejected``, reason class) of the app's validation answer."""
    code = str(result_code).strip() if result_code is not None else ""
    if code in ("0", "00000000", ""):
        return "accepted", "none"
    return "rejected", REJECTION_REASONS.get(code, "other")


class C2BTracker:
    """Counts an app's C2B validations and confirmations (one per extension state)."""

    def __init__(self, transactions: TransactionTracker) -> None:
        self.transactions = transactions

    def record_validation(self, organization: Any, shortcode: Any, result_code: Any, seconds: float | None) -> str:
        """Count one validation answer; return ``accepted`` or ``rejected``.

        ``result_code`` is what the app answered (``0``/``"0"`` accepts; ``C2B00011`` to
        ``C2B00016`` reject, by reason); ``seconds`` the time it took to answer."""
        return self._count_validation(organization, shortcode, *rejection_reason(result_code), seconds)

    def record_failed_validation(self, organization: Any, shortcode: Any, seconds: float | None) -> str:
        """Count a validation the app failed to answer (its view raised): neither accepted
        nor rejected by the app, since Safaricom applies the shortcode's default action.
        Returns ``error``."""
        return self._count_validation(organization, shortcode, ERROR, "none", seconds)

    @staticmethod
    def _count_validation(organization: Any, shortcode: Any, result: str, reason: str, seconds: float | None) -> str:
        org = tenancy.organizations(organization)
        metrics.c2b_validations_total.labels(org, tenancy.shortcodes(_str(shortcode)), result, reason).inc()
        if seconds is not None and seconds >= 0:
            metrics.c2b_validation_duration_seconds.labels(org).observe(seconds)
        return result

    def record_confirmation(self, payload: Any, organization: Any, source_allowed: bool = True) -> ConfirmationResult:
        """Count a confirmation (Daraja's body: ``TransID``, ``TransAmount``,
        ``BusinessShortCode``, ...): once per TransID, as a ``c2b`` transaction and, from an
        allowed source, as revenue. Raises :class:`InvalidConfirmation` for a body without
        a TransID or with an amount outside (0, max]."""
        if not isinstance(payload, Mapping):
            raise InvalidConfirmation("C2B confirmation must be a JSON object.")
        trans_id = valid_id(_text(payload, "TransID"))
        if trans_id is None or len(trans_id) > MAX_ID_LENGTH - len(KEY_PREFIX):
            raise InvalidConfirmation("C2B confirmation has no TransID (at most 60 printable characters).")
        amount = valid_amount(payload.get("TransAmount"), self.transactions.max_amount)
        if amount is None:
            raise InvalidConfirmation(
                f"C2B confirmation TransAmount must be a number above 0 and at most {self.transactions.max_amount:g}.")
        org = tenancy.organizations(organization)
        shortcode = tenancy.shortcodes(_text(payload, "BusinessShortCode"))
        try:
            new = self.transactions.first_seen(KEY_PREFIX + trans_id, org, Completion(daraja.SUCCESS, "0", amount))
        except Exception:  # count it anyway: losing a confirmation would hide a payment
            log.exception("could not check the C2B confirmation against the shared table")
            new = True
        if not new:
            return ConfirmationResult(trans_id, amount, shortcode, duplicate=True)
        metrics.c2b_confirmations_total.labels(org, shortcode).inc()
        if not source_allowed:
            self.transactions.count_transaction(org, "c2b", daraja.SUCCESS, 0.0, "KES")
            self.transactions.count_unverified(org, amount, UNKNOWN_SOURCE)
            return ConfirmationResult(trans_id, amount, shortcode)
        self.transactions.count_transaction(org, "c2b", daraja.SUCCESS, amount, "KES")
        return ConfirmationResult(trans_id, amount, shortcode, verified_amount=amount)


def _str(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value.strip() if isinstance(value, str) else None
