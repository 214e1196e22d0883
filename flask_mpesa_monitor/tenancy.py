"""Bounded label values: who the organization of a request is, and how many we keep.

A label value that comes from a request (a header, a path segment) is attacker-chosen:
left alone, random values would create a new time series each, and the metrics endpoint
would grow until Prometheus or the app falls over. :class:`BoundedLabel` admits values
that look like identifiers, turns anything else (including anything shaped like a phone
number) into ``unknown``, and after ``limit`` distinct values turns new ones into
``other``; both replacements are counted in ``mpesa_label_overflow_total{label}``.

The memory of admitted values is per process, on purpose: series are per process too,
and several apps in one process share one metric registry, hence one bound.
:data:`organizations` is that process-wide guard for the ``organization`` label.

The hot path is one dict lookup for a value already seen.
"""

from __future__ import annotations

import ipaddress
import re
import threading
from typing import Any

from . import metrics
from .redact import looks_like_phone

UNKNOWN = "unknown"
OTHER = "other"

IDENTIFIER_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class BoundedLabel:
    """Admit at most ``limit`` distinct, well-formed values for one label."""

    def __init__(self, label: str, limit: int, pattern: re.Pattern[str] = IDENTIFIER_RE) -> None:
        self.label = label
        self.limit = limit
        self._pattern = pattern
        self._admitted: dict[str, str] = {UNKNOWN: UNKNOWN, OTHER: OTHER}
        self._lock = threading.Lock()
        self._overflow = metrics.label_overflow_total.labels(label=label)

    def __call__(self, raw: Any) -> str:
        """The label value to use for ``raw`` (``unknown`` for None or empty)."""
        value = self._admitted.get(raw)  # type: ignore[arg-type]
        if value is not None:
            return value
        if raw is None or raw == "":
            return UNKNOWN
        return self._admit(raw)

    def _admit(self, raw: Any) -> str:
        if not isinstance(raw, str):
            if isinstance(raw, bool) or not isinstance(raw, int):
                self._overflow.inc()
                return UNKNOWN
            raw = str(raw)
            if raw in self._admitted:
                return raw
        if not self.is_valid(raw):
            # Not remembered: an attacker's junk must not grow this table.
            self._overflow.inc()
            return UNKNOWN
        with self._lock:
            if raw in self._admitted:
                return raw
            if len(self._admitted) - 2 >= self.limit:
                self._overflow.inc()
                return OTHER
            self._admitted[raw] = raw
            return raw

    def is_valid(self, raw: str) -> bool:
        return bool(self._pattern.match(raw)) and not looks_like_phone(raw)

    def set_limit(self, limit: int) -> None:
        """Change the bound (values already admitted stay admitted)."""
        self.limit = limit

    def known(self) -> list[str]:
        """Values admitted so far (for /metrics/summary and tests)."""
        return [value for value in self._admitted if value not in (UNKNOWN, OTHER)]

    def reset(self) -> None:
        """Forget admitted values. For tests; series already exported stay."""
        with self._lock:
            self._admitted = {UNKNOWN: UNKNOWN, OTHER: OTHER}


def _valid_ip(raw: str) -> bool:
    try:
        ipaddress.ip_address(raw)
    except ValueError:
        return False
    return True


#: The process-wide guard of the ``organization`` label (bound set by ``init_app``).
organizations = BoundedLabel("organization", 500)

#: Names chosen by application code (operations, limits, event types, tools) are bounded
#: too, in case an app passes request data into them by mistake.
operations = BoundedLabel("operation", 100)
limits = BoundedLabel("limit", 100)
event_types = BoundedLabel("event_type", 100)
tools = BoundedLabel("tool", 200)
transaction_types = BoundedLabel("type", 50)
db_operations = BoundedLabel("db_operation", 200)


class _IPLabel(BoundedLabel):
    """IP addresses only (the ``ip`` label of ``mpesa_suspicious_ips``)."""

    def is_valid(self, raw: str) -> bool:
        return len(raw) <= 45 and _valid_ip(raw)


#: At most N distinct IPs ever per process (series cannot be removed in multiprocess mode).
ips = _IPLabel("ip", 20)


def organization_of(value: Any) -> str:
    """Shorthand for ``organizations(value)``."""
    return organizations(value)


class _ShortcodeLabel(BoundedLabel):
    """M-Pesa shortcodes (paybill, till, store numbers: 5 to 7 digits), bounded like organizations."""

    def is_valid(self, raw: str) -> bool:
        return raw.isascii() and raw.isdigit() and 5 <= len(raw) <= 7


#: The ``shortcode`` label of the C2B metrics (bound set with the organizations' by ``init_app``).
shortcodes = _ShortcodeLabel("shortcode", 500)
#: Mobile app versions (``1.4.2``, ``2.0.0-beta.1``); an allowlist, when set, admits only its values.
app_versions = BoundedLabel("app_version", 50, re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+_-]{0,31}$"))
caches = BoundedLabel("cache", 50)
