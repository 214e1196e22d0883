"""Authentication attempts, the cross-tenant guard, security events, suspicious IPs.

In a multi-tenant payments server the worst bug is one tenant reading another's
transactions. :meth:`SecurityTracker.verify_tenant_isolation` is the check apps put in
front of organization-scoped data: it answers whether access is allowed and, when it is
not, counts the attempt and raises a critical alert at once.

Failed logins are remembered per IP in bounded memory (per process); an IP past the
threshold within the window is exported as ``mpesa_suspicious_ips{ip}``, at most
``MPESA_MONITOR_MAX_SUSPICIOUS_IPS`` distinct IPs per process (series cannot be removed
in multiprocess mode), later ones as ``ip="other"``.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from typing import Any

from . import metrics, tenancy
from .redact import get_logger

log = get_logger(__name__)

SEVERITIES = ("low", "medium", "high", "critical")

#: Addresses Safaricom posts Daraja callbacks from. Safaricom gives them to businesses at
#: go-live and changes them now and then; this is the list as third-party SDKs and apps
#: publish it (for example github.com/samtext/XecoFlow, src/middlewares/mpesa.middleware.js,
#: and many PHP/Laravel M-Pesa packages with the same twelve), as of 2026-12-01. Override
#: with ``MPESA_MONITOR_CALLBACK_ALLOWED_IPS`` (``safaricom`` there means this list).
SAFARICOM_CALLBACK_IPS = (
    "196.201.214.200", "196.201.214.206", "196.201.213.114", "196.201.214.207",
    "196.201.214.208", "196.201.213.44", "196.201.212.127", "196.201.212.138",
    "196.201.212.129", "196.201.212.136", "196.201.212.74", "196.201.212.69",
)
SAFARICOM_CALLBACK_IPS_AS_OF = "2026-12-01"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _address(text: Any) -> Address | None:
    if not isinstance(text, str) or len(text) > 64:
        return None
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class CallbackSource:
    """Where a callback came from, and whether that is one of the allowed addresses.

    The source is the peer address, unless the peer is a configured trusted proxy: then
    it is the right-most ``X-Forwarded-For`` entry that is not a trusted proxy (entries
    further left were written by the client and prove nothing). Nothing is refused
    here: an unknown source is counted, the app decides.
    """

    #: X-Forwarded-For entries read at most (a client can send any number).
    MAX_HOPS = 16

    def __init__(self, allowed: Iterable[Network], trusted_proxies: Iterable[Network] = ()) -> None:
        self.allowed = tuple(allowed)
        self.trusted_proxies = tuple(trusted_proxies)

    def source(self, remote_addr: str | None, forwarded_for: str | None = None) -> Address | None:
        peer = _address(remote_addr)
        if peer is None or not self._trusted(peer) or not forwarded_for:
            return peer
        hops = forwarded_for[:4096].split(",")[-self.MAX_HOPS:]
        for hop in reversed(hops):
            address = _address(hop)
            if address is None:
                return None
            if not self._trusted(address):
                return address
        return peer

    def _trusted(self, address: Address) -> bool:
        return any(address in network for network in self.trusted_proxies)

    def allows(self, address: Address | None) -> bool:
        if not self.allowed:
            return True
        return address is not None and any(address in network for network in self.allowed)

#: Failed-login memory: at most this many IPs, each with at most this many timestamps.
MAX_TRACKED_IPS = 10000
MAX_FAILURES_PER_IP = 1000


class SecurityTracker:
    """Security counters and the short-term memory the ``security`` health check reads."""

    def __init__(
        self,
        failure_threshold: int = 20,
        failure_window: float = 900.0,
        send_alert: Callable[..., Any] | None = None,
        callback_source: CallbackSource | None = None,
    ) -> None:
        self.callback_source = callback_source or CallbackSource(())
        self.failure_threshold = failure_threshold
        self.failure_window = failure_window
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._exported: dict[str, str] = {}  # ip -> label value
        self._lock = threading.Lock()
        self._send_alert = send_alert
        self.last_cross_tenant: float | None = None
        self.last_auth_burst: float | None = None

    def record_auth_attempt(self, organization: Any, success: bool, ip: str | None = None) -> None:
        """Count a login; remember failures per IP to spot brute force."""
        org = tenancy.organizations(organization)
        metrics.auth_attempts_total.labels(org, "success" if success else "failure").inc()
        if success or not ip or not isinstance(ip, str):
            return
        now = time.time()
        with self._lock:
            times = self._failures.pop(ip, None)
            if times is None:
                times = deque(maxlen=MAX_FAILURES_PER_IP)
            self._failures[ip] = times  # most recent last
            times.append(now)
            while len(self._failures) > MAX_TRACKED_IPS:
                self._failures.popitem(last=False)
            count = self._count_recent(times, now)
        if count >= self.failure_threshold:
            self.last_auth_burst = now
            self._export(ip, count)

    def _count_recent(self, times: deque[float], now: float) -> int:
        cutoff = now - self.failure_window
        while times and times[0] < cutoff:
            times.popleft()
        return len(times)

    def _export(self, ip: str, count: int) -> None:
        label = self._exported.get(ip)
        if label is None:
            label = tenancy.ips(ip)
            self._exported[ip] = label
            if label != ip:
                log.warning("suspicious IP beyond the label bound, exported as ip=%s", label)
        metrics.suspicious_ips.labels(label).set(count)

    def refresh(self) -> None:
        """Bring exported suspicious-IP counts up to date (called by the health thread)."""
        now = time.time()
        with self._lock:
            counts = {ip: self._count_recent(self._failures[ip], now) if ip in self._failures else 0
                      for ip in self._exported}
        totals: dict[str, int] = {}
        for ip, count in counts.items():
            label = self._exported[ip]
            totals[label] = max(totals.get(label, 0), count)
        for label, count in totals.items():
            metrics.suspicious_ips.labels(label).set(count)

    def verify_tenant_isolation(self, user_org: Any, requested_org: Any) -> bool:
        """True when ``user_org`` may access ``requested_org``'s data.

        On a mismatch, counts ``mpesa_cross_tenant_attempts_total{organization=<caller>}``
        and a critical ``cross_tenant_access`` security event, and raises the critical
        app-side ``CrossTenantAccessAttempt`` alert (labelled with the caller) through
        ``send_alert``; returns False. The app decides what to answer
        (usually 403).
        """
        if user_org is not None and requested_org is not None and str(user_org) == str(requested_org):
            return True
        caller = tenancy.organizations(user_org)
        target = tenancy.organizations(requested_org)
        self.last_cross_tenant = time.time()
        metrics.cross_tenant_attempts_total.labels(caller).inc()
        self.record_security_event("cross_tenant_access", "critical", caller)
        log.warning("cross-tenant access attempt: organization=%s requested=%s", caller, target)
        if self._send_alert is not None:
            try:
                self._send_alert(
                    "critical",
                    "Cross-tenant access attempt",
                    f"Organization {caller} tried to reach data of organization {target}.",
                    organization=caller,
                    alertname="CrossTenantAccessAttempt",
                    annotations={"target_organization": target},
                    dashboard="mpesa-security",
                )
            except Exception:
                log.exception("cross-tenant alert could not be raised")
        return False

    def record_security_event(self, event_type: str, severity: str, organization: Any = None) -> None:
        """Count a security event; ``severity`` is one of low, medium, high, critical."""
        if severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {', '.join(SEVERITIES)}, got {severity!r}.")
        metrics.security_events_total.labels(
            tenancy.event_types(event_type), severity, tenancy.organizations(organization)
        ).inc()

    def check_callback_source(
        self, remote_addr: str | None, forwarded_for: str | None = None, organization: Any = None
    ) -> bool:
        """True when a callback comes from an allowed address; otherwise counts a medium
        ``callback_unknown_source`` event (a burst shows, one never pages) and returns
        False. Never refuses anything itself."""
        source = self.callback_source.source(remote_addr, forwarded_for)
        if self.callback_source.allows(source):
            return True
        self.record_security_event("callback_unknown_source", "medium", organization)
        log.warning("STK callback from an address outside the allowed list: %s", source or "unparsable")
        return False

    def record_rate_limit_hit(self, organization: Any, limit: str) -> None:
        """Count a request the app's rate limiter refused (``limit`` names the rule)."""
        metrics.rate_limit_hits_total.labels(tenancy.organizations(organization), tenancy.limits(limit)).inc()

    def recent_incident(self, window: float, now: float | None = None) -> str | None:
        """What made security degraded in the last ``window`` seconds, if anything."""
        now = time.time() if now is None else now
        if self.last_cross_tenant is not None and now - self.last_cross_tenant < window:
            return "cross-tenant access attempt"
        if self.last_auth_burst is not None and now - self.last_auth_burst < window:
            return "authentication failure burst"
        return None
