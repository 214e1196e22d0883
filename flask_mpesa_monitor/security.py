"""Authentication attempts, the cross-tenant guard, security events, suspicious IPs.

In a multi-tenant payments server the worst bug is one tenant reading another's
transactions. :meth:`SecurityTracker.verify_tenant_isolation` is the check apps put in
front of organization-scoped data: it answers whether access is allowed and, when it is
not, counts the attempt and raises a critical alert at once.

Failed logins are remembered per IP in bounded memory (per process); an IP past the
threshold within the window is exported as ``mpesa_suspicious_ips{ip}``, at most N
distinct IPs per process (series cannot be removed in multiprocess mode).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from typing import Any, Callable

from . import metrics, tenancy
from .redact import get_logger

log = get_logger(__name__)

SEVERITIES = ("low", "medium", "high", "critical")

#: Failed-login memory: at most this many IPs, each with at most this many timestamps.
MAX_TRACKED_IPS = 10000
MAX_FAILURES_PER_IP = 1000


class SecurityTracker:
    """Security counters and the short-term memory the ``security`` health check reads."""

    def __init__(
        self,
        failure_threshold: int = 20,
        failure_window: float = 900.0,
        on_cross_tenant: Callable[[str, str], None] | None = None,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.failure_window = failure_window
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._exported: dict[str, str] = {}  # ip -> label value
        self._lock = threading.Lock()
        self._on_cross_tenant = on_cross_tenant
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
        ``CrossTenantAccessAttempt`` alert; returns False. The app decides what to answer
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
        if self._on_cross_tenant is not None:
            try:
                self._on_cross_tenant(caller, target)
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
