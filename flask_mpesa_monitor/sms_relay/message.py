"""One alert -> one SMS of at most 160 GSM-7 characters.

An SMS segment holds 160 characters of the GSM 03.38 alphabet, or only 70 once a single
character outside it (an emoji, a curly quote, an ellipsis) forces UCS-2. So the text is
first folded to the GSM-safe part of ASCII, then cut at a word boundary with ``...``
(never ``…``, which would itself force UCS-2). Characters of the GSM extension table
(``[ ] { } \\ ^ ~ |``) take two septets and are counted as two.

Layout, most important first so that truncation only ever eats the summary's tail::

    CRITICAL MPesaAPIFailures org=acme: M-Pesa API failing for acme (12% of calls)
    RESOLVED CRITICAL MPesaAPIFailures org=acme: ...

Example::

    >>> format_sms({"status": "firing", "labels": {"alertname": "DatabaseDown",
    ...     "severity": "critical"}, "annotations": {"summary": "Database down"}})
    'CRITICAL DatabaseDown: Database down'
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

SMS_LIMIT = 160
ELLIPSIS = "..."

# GSM 03.38 basic characters that are also ASCII (others, like accented letters, are
# folded to ASCII first). Extension-table characters cost two septets.
_GSM_BASIC = set(
    "@$\n\r _!\"#%&'()*+,-./0123456789:;<=>?"
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)
_GSM_EXTENDED = set("^{}\\[]~|")
_REPLACEMENTS = {
    "\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"',
    "\u2013": "-", "\u2014": "-", "\u2026": "...", "\u00a0": " ",
    "`": "'", "\t": " ",
}


def to_gsm(text: str) -> str:
    """Fold ``text`` to GSM-7-safe ASCII: accents dropped, smart quotes straightened,
    line breaks and runs of spaces collapsed, anything else removed."""
    for char, plain in _REPLACEMENTS.items():
        text = text.replace(char, plain)
    text = unicodedata.normalize("NFKD", text)
    kept = "".join(c for c in text if c in _GSM_BASIC or c in _GSM_EXTENDED)
    return " ".join(kept.split())


def gsm_length(text: str) -> int:
    """Septets ``text`` takes in one GSM-7 SMS (extension characters count two)."""
    return sum(2 if c in _GSM_EXTENDED else 1 for c in text)


def truncate(text: str, limit: int = SMS_LIMIT) -> str:
    """Cut ``text`` to ``limit`` septets, at a word boundary when one is near, with ``...``."""
    if gsm_length(text) <= limit:
        return text
    budget = limit - len(ELLIPSIS)
    cut, used = 0, 0
    for index, char in enumerate(text):
        cost = 2 if char in _GSM_EXTENDED else 1
        if used + cost > budget:
            break
        used += cost
        cut = index + 1
    head = text[:cut]
    space = head.rfind(" ")
    # Prefer the last word boundary unless it throws away more than a fifth of the room.
    if space >= budget * 4 // 5:
        head = head[:space]
    return head.rstrip(" ,;:-") + ELLIPSIS


def format_sms(alert: Mapping[str, Any], limit: int = SMS_LIMIT) -> str:
    """The SMS text for one alert of an Alertmanager webhook (version 4)."""
    labels = alert.get("labels") or {}
    annotations = alert.get("annotations") or {}
    parts = []
    if alert.get("status") == "resolved":
        parts.append("RESOLVED")
    severity = str(labels.get("severity", "")).upper()
    if severity:
        parts.append(severity)
    parts.append(str(labels.get("alertname", "alert")))
    organization = labels.get("organization")
    if organization:
        parts.append(f"org={organization}")
    head = to_gsm(" ".join(parts))
    summary = to_gsm(str(annotations.get("summary") or annotations.get("description") or ""))
    text = f"{head}: {summary}" if summary else head
    return truncate(text, limit)


def format_summary(alerts: Sequence[Mapping[str, Any]], limit: int = SMS_LIMIT) -> str:
    """One text for the alerts of a notification past the per-number cap::

        >>> format_summary([{"labels": {"alertname": "A", "severity": "critical"}}] * 3)
        'CRITICAL +3 more alerts: A x3'
    """
    names = Counter(str((a.get("labels") or {}).get("alertname", "alert")) for a in alerts)
    severities = {str((a.get("labels") or {}).get("severity", "")).upper() for a in alerts} - {""}
    head = " ".join(sorted(severities)[:1] + [f"+{len(alerts)} more alerts"])
    listed = ", ".join(f"{name} x{count}" if count > 1 else name for name, count in names.most_common())
    return truncate(to_gsm(f"{head}: {listed}"), limit)
