"""Bounded label values: who the organization of a request is, and how many we keep.

A label value that comes from a request (a header, a path segment) is attacker-chosen:
left alone, random values would create a new time series each, and the metrics endpoint
would grow until Prometheus or the app falls over. :class:`BoundedLabel` admits values
that are identifiers as a whole (a full match: ``acme\\n`` is refused), turns anything
else, including anything that holds a phone number in any shape (``254-712-345-678``,
``tel254712345678``), into ``unknown``, and after ``limit`` distinct values turns new ones
into ``other``; both replacements are counted in ``mpesa_label_overflow_total{label}``.
Any value is accepted and none raises: an unhashable ``["acme"]`` is ``unknown`` too.

The bound of the ``organization`` label holds for the whole host: under multiprocess
metrics the admitted set is shared by the workers (:mod:`.tenant_store`, beside the metric
files) and survives worker restarts, so N workers and their restarts never expose more
than ``MPESA_MONITOR_MAX_ORGANIZATIONS`` organizations. Known tenants can be admitted up
front (``MPESA_MONITOR_KNOWN_ORGANIZATIONS``) so an attacker cannot fill the set right after
a deploy. Several apps in one process share one guard, hence one bound. Other labels are
bounded per process.

Cost: a value already seen is one dict lookup (admitted values, and the last refused
ones, are remembered in bounded local dicts). Only an admission touches the shared store,
and once the store is full each worker loads the admitted set once and asks no more.
Validation (and its phone-number search) runs once per new value, never per request.
"""

from __future__ import annotations

import ipaddress
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from . import metrics
from .redact import get_logger, looks_like_phone
from .tenant_store import AdmissionStore

log = get_logger(__name__)

UNKNOWN = "unknown"
OTHER = "other"

#: What an organization label value may be, matched against the whole value.
IDENTIFIER_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
# Nine digits in a row once separators are dropped: a subscriber number, whatever the
# detector says (labels are stricter than text: a tenant id needs no such run).
_DIGIT_RUN_RE = re.compile(r"\d{9}")
_SEPARATORS_RE = re.compile(r"[\s._()+-]")
#: Refused values remembered per label, so repeating junk costs a dict lookup.
REFUSED_CACHE_SIZE = 4096


class BoundedLabel:
    """Admit at most ``limit`` distinct, well-formed values for one label."""

    def __init__(self, label: str, limit: int, pattern: re.Pattern[str] = IDENTIFIER_RE) -> None:
        self.label = label
        self.limit = limit
        self._pattern = pattern
        self._admitted: dict[str, str] = {UNKNOWN: UNKNOWN, OTHER: OTHER}
        self._refused: OrderedDict[str, str] = OrderedDict()
        self._store: AdmissionStore | None = None
        self._store_full = False
        self._count = 0  # distinct values admitted by this process
        self._lock = threading.RLock()
        self._overflow = metrics.label_overflow_total.labels(label=label)

    def __call__(self, raw: Any) -> str:
        """The label value to use for ``raw`` (``unknown`` for None, empty or odd values)."""
        try:
            value = self._admitted.get(raw)
        except TypeError:  # unhashable: a list, a dict
            self._overflow.inc()
            return UNKNOWN
        if value is not None and type(raw) is str:
            return value
        if raw is None or raw == "":
            return UNKNOWN
        if type(raw) is not str:
            if isinstance(raw, str) or (isinstance(raw, int) and not isinstance(raw, bool)):
                return self(str(raw))
            self._overflow.inc()
            return UNKNOWN
        refused = self._refused.get(raw)
        if refused is not None:
            self._overflow.inc()
            return refused
        return self._admit(raw)

    # --- admission (once per new value) ---------------------------------------------
    def canonical(self, raw: str) -> str | None:
        """The value to export for ``raw``, or None when it is not acceptable."""
        return raw if self.is_valid(raw) else None

    def is_valid(self, raw: Any) -> bool:
        if not isinstance(raw, str) or not self._pattern.fullmatch(raw):
            return False
        return not (_DIGIT_RUN_RE.search(_SEPARATORS_RE.sub("", raw)) or looks_like_phone(raw))

    def _admit(self, raw: str) -> str:
        try:
            value = self.canonical(raw)
        except Exception:  # a validator must never fail the caller
            value = None
        if value is None:
            return self._refuse(raw, UNKNOWN)
        with self._lock:
            if raw in self._admitted:
                return self._admitted[raw]
            if value in self._admitted:  # another spelling of an admitted value (IPs)
                self._admitted[raw] = value
                return value
            room = self._room(value)
            if room is None:  # the shared store failed: `other` this time, ask again next time
                self._overflow.inc()
                return OTHER
            if not room:
                return self._refuse(raw, OTHER)
            self._admitted[value] = value
            self._admitted[raw] = value
            self._count += 1
            return value

    def _room(self, value: str) -> bool | None:
        """May ``value`` be admitted? None when the shared store cannot say. Called with
        the lock held."""
        store = self._store
        if store is None:
            return self._count < self.limit
        if self._store_full:
            return False
        try:
            if store.admit(value, self.limit):
                return True
            # Full: it stays full (nothing is ever removed), so learn the whole set
            # once and never ask the store again.
            for known in store.values():
                self._admitted.setdefault(known, known)
            self._store_full = True
        except Exception:
            log.warning("the shared %s store failed; the value is counted as %s for now", self.label, OTHER,
                        exc_info=True)
            return None
        return value in self._admitted

    def _refuse(self, raw: str, replacement: str) -> str:
        self._overflow.inc()
        with self._lock:
            self._refused[raw] = replacement
            while len(self._refused) > REFUSED_CACHE_SIZE:
                self._refused.popitem(last=False)
        return replacement

    # --- configuration ------------------------------------------------------------
    def configure(self, limit: int, store: AdmissionStore | None = None,
                  known: Iterable[str] | Callable[[], Iterable[str]] = ()) -> None:
        """Set the bound, the shared store (None: this process alone) and admit ``known``
        values up front (they are admitted even past the bound)."""
        with self._lock:
            self.limit = limit
            self._store = store
            self._store_full = False
            self._refused.clear()
        values = known() if callable(known) else known
        accepted = []
        for value in values or ():
            if self.is_valid(value):
                accepted.append(value)
            else:
                log.warning("known %s %r is not a valid label value; ignored", self.label, value)
        if store is not None and accepted:
            try:
                store.admit_many(accepted)
            except Exception:  # admitted locally below; the store learns them on first use
                log.warning("could not admit the known %ss in the shared store", self.label, exc_info=True)
        with self._lock:
            for value in accepted:
                if value not in self._admitted:
                    self._admitted[value] = value
                    self._count += 1

    def set_limit(self, limit: int) -> None:
        """Change the bound (values already admitted stay admitted)."""
        with self._lock:
            self.limit = limit
            self._store_full = False
            self._refused.clear()

    def known(self) -> list[str]:
        """Values admitted so far, by this process or (with a store) the host."""
        local = {value for value in self._admitted.values() if value not in (UNKNOWN, OTHER)}
        if self._store is not None:
            try:
                local.update(self._store.values())
            except Exception:
                pass
        return sorted(local)

    def reset(self) -> None:
        """Forget admitted values (and empty the shared store). For tests; series
        already exported stay."""
        with self._lock:
            self._admitted = {UNKNOWN: UNKNOWN, OTHER: OTHER}
            self._refused.clear()
            self._store_full = False
            self._count = 0
            if self._store is not None:
                self._store.reset()


#: The host-wide guard of the ``organization`` label (bound and store set by ``init_app``).
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
    """IP addresses only (the ``ip`` label of ``mpesa_suspicious_ips``), normalised:
    ``::FFFF:10.0.0.1`` and ``10.0.0.1`` are one value; scope ids (``fe80::1%eth0``) and
    anything that is not an address are ``unknown``."""

    def canonical(self, raw: str) -> str | None:
        if len(raw) > 45 or "%" in raw or raw.strip() != raw:
            return None
        try:
            address = ipaddress.ip_address(raw)
        except ValueError:
            return None
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return str(address)

    def is_valid(self, raw: Any) -> bool:
        return isinstance(raw, str) and self.canonical(raw) is not None


#: At most N distinct IPs ever per process (series cannot be removed in multiprocess mode).
ips = _IPLabel("ip", 20)


def organization_of(value: Any) -> str:
    """The ``organization`` label value for any value: never raises.

    >>> organization_of(["acme"])
    'unknown'
    """
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
