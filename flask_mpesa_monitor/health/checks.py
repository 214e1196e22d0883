"""The built-in checks besides ``database``: ``mpesa_api``, ``system`` and ``security``.

Each is a small callable class returning an :class:`~.result.Outcome`; the runner
times it and bounds it. What each one exports beyond its health gauge
(``mpesa_system_*_usage_ratio``, ``mpesa_audit_tampered_entries``) it sets itself, so
the figures stay current whichever way the check ran (background, on demand, CLI).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from .. import metrics
from ..redact import get_logger, mask_phones
from .database import describe_error
from .result import DEGRADED, HEALTHY, UNHEALTHY, Outcome, worst

log = get_logger(__name__)


class MPesaAPICheck:
    """Reachability of Daraja: an OAuth token request when credentials are set, else a GET.

    ``degraded`` when the answer took longer than ``latency_threshold`` seconds,
    ``unhealthy`` on a connection error, a 5xx, or credentials Daraja refused. The
    consumer key and secret travel only in the basic-auth header; they are scrubbed from
    any error text, and the response body (which carries the token) is never read into
    the output.
    """

    def __init__(
        self,
        base_url: str,
        consumer_key: str | None,
        consumer_secret: str | None,
        latency_threshold: float,
        timeout: float,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._auth = (consumer_key, consumer_secret) if consumer_key and consumer_secret else None
        self.latency_threshold = latency_threshold
        self.timeout = timeout

    @property
    def url(self) -> str:
        if self._auth is not None:
            return f"{self.base_url}/oauth/v1/generate?grant_type=client_credentials"
        return self.base_url

    def __call__(self) -> Outcome:
        import requests

        details: dict[str, Any] = {
            "url": self.url,
            "oauth": self._auth is not None,
            "latency_threshold_s": self.latency_threshold,
        }
        started = time.perf_counter()
        try:
            response = requests.get(self.url, auth=self._auth, timeout=self.timeout)
            response.close()
        except requests.RequestException as exc:
            return Outcome(UNHEALTHY, error=self._scrub(describe_error(exc)), details=details)
        seconds = time.perf_counter() - started
        details["http_status"] = response.status_code
        details["latency_ms"] = round(seconds * 1000, 1)
        observed = (round(seconds * 1000, 1), "ms")
        if response.status_code >= 500:
            return Outcome(UNHEALTHY, f"Daraja answered HTTP {response.status_code}", details, observed)
        if self._auth is not None and response.status_code >= 400:
            return Outcome(UNHEALTHY, f"Daraja refused the OAuth credentials (HTTP {response.status_code})",
                           details, observed)
        if seconds > self.latency_threshold:
            return Outcome(DEGRADED, f"Daraja answered in {seconds:.2f} s (threshold "
                                     f"{self.latency_threshold:g} s)", details, observed)
        return Outcome(HEALTHY, None, details, observed)

    def _scrub(self, text: str) -> str:
        if self._auth is not None:
            for secret in self._auth:
                if secret:
                    text = text.replace(secret, "***")
        return text


class SystemCheck:
    """Host CPU, memory and disk usage through psutil, exported as ratios 0..1.

    Under gunicorn it also watches the file system of ``PROMETHEUS_MULTIPROC_DIR``
    (usually a small tmpfs): prometheus_client grows its mmap'ed metric files there, and
    when that file system is full the next write kills every worker with SIGBUS, over
    and over. So the check is ``degraded`` when it is more than ``multiproc_warning``
    used, or has less than :data:`MULTIPROC_MIN_FREE` bytes left: well before it is full.
    """

    #: Free bytes below which the multiprocess directory is degraded whatever its size
    #: (a worker's metric file grows by doubling, from 1 MiB).
    MULTIPROC_MIN_FREE = 32 << 20

    def __init__(self, cpu_warning: float, memory_warning: float, disk_warning: float, disk_path: str,
                 multiproc_warning: float = 0.5, multiproc_dir: str | None = None) -> None:
        import os

        import psutil

        self._psutil = psutil
        self.thresholds = {"cpu": cpu_warning, "memory": memory_warning, "disk": disk_warning}
        self.disk_path = disk_path
        self.multiproc_dir = multiproc_dir if multiproc_dir is not None else os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        self.multiproc_warning = multiproc_warning
        # The CPU figure is the busy share since the previous check, from our own last
        # sample: psutil.cpu_percent(interval=None) keeps its sample per thread (psutil
        # 5.9.6+), and the runner runs each check in a new thread, so it would read 0.0
        # every time. Sampled now so the first check reads a real figure without sleeping.
        self._last_cpu = psutil.cpu_times()

    def _cpu_ratio(self) -> float:
        """Busy share of all CPUs since the previous call (0 when no time passed)."""
        now = self._psutil.cpu_times()
        last, self._last_cpu = self._last_cpu, now
        deltas = {name: max(0.0, getattr(now, name) - getattr(last, name)) for name in now._fields}
        # guest time is already counted in user and nice (as psutil itself does)
        total = sum(deltas.values()) - deltas.get("guest", 0.0) - deltas.get("guest_nice", 0.0)
        idle = deltas.get("idle", 0.0) + deltas.get("iowait", 0.0)
        return min(1.0, max(0.0, (total - idle) / total)) if total > 0 else 0.0

    def __call__(self) -> Outcome:
        psutil = self._psutil
        ratios = {
            "cpu": self._cpu_ratio(),
            "memory": psutil.virtual_memory().percent / 100.0,
            "disk": psutil.disk_usage(self.disk_path).percent / 100.0,
        }
        metrics.system_cpu_usage_ratio.set(ratios["cpu"])
        metrics.system_memory_usage_ratio.set(ratios["memory"])
        metrics.system_disk_usage_ratio.set(ratios["disk"])
        over = [name for name, ratio in ratios.items() if ratio > self.thresholds[name]]
        details: dict[str, Any] = {}
        for name, ratio in ratios.items():
            details[f"{name}_usage_ratio"] = round(ratio, 4)
            details[f"{name}_warning_ratio"] = self.thresholds[name]
        errors = []
        if over:
            errors.append("above warning threshold: " + ", ".join(
                f"{name} {ratios[name]:.0%} > {self.thresholds[name]:.0%}" for name in over))
        multiproc = self._multiproc(details)
        if multiproc:
            errors.append(multiproc)
        return Outcome(DEGRADED if errors else HEALTHY, "; ".join(errors) or None, details,
                       (round(max(ratios.values()) * 100, 1), "percent"))

    def _multiproc(self, details: dict[str, Any]) -> str | None:
        if not self.multiproc_dir:
            return None
        try:
            usage = self._psutil.disk_usage(self.multiproc_dir)
        except OSError as exc:
            return f"multiprocess directory unreadable: {describe_error(exc)}"
        ratio = usage.percent / 100.0
        details["multiproc_dir_free_bytes"] = usage.free
        details["multiproc_dir_usage_ratio"] = round(ratio, 4)
        details["multiproc_dir_warning_ratio"] = self.multiproc_warning
        if ratio > self.multiproc_warning or usage.free < self.MULTIPROC_MIN_FREE:
            return (f"multiprocess directory {ratio:.0%} used, {usage.free // (1 << 20)} MiB free "
                    f"(warning above {self.multiproc_warning:.0%} or below {self.MULTIPROC_MIN_FREE >> 20} MiB)")
        return None


class SecurityCheck:
    """``degraded`` right after a cross-tenant attempt or an auth-failure burst;
    ``unhealthy`` when the app's encryption self-test fails or its audit-log verifier
    reports tampered entries (which also raises the critical ``AuditLogTampering``
    app-side alert, re-sent at most every ``resend_interval`` seconds while it lasts).
    """

    def __init__(
        self,
        tracker: Any,
        window: float,
        send_alert: Callable[..., Any] | None = None,
        resend_interval: float = 60.0,
    ) -> None:
        self.tracker = tracker
        self.window = window
        self.encryption_self_test: Callable[[], Any] | None = None
        self.audit_verifier: Callable[[], Any] | None = None
        self._send_alert = send_alert
        self.resend_interval = resend_interval
        self._alerted: tuple[int, float] | None = None  # (tampered, monotonic time sent)

    def __call__(self) -> Outcome:
        self.tracker.refresh()
        statuses = [HEALTHY]
        errors: list[str] = []
        details: dict[str, Any] = {"window_s": self.window}
        incident = self.tracker.recent_incident(self.window)
        if incident is not None:
            statuses.append(DEGRADED)
            errors.append(f"{incident} in the last {self.window:g} s")
            details["incident"] = incident
        if self.encryption_self_test is not None:
            ok, error = self._run_self_test()
            details["encryption_self_test"] = "passed" if ok else "failed"
            if not ok:
                statuses.append(UNHEALTHY)
                errors.append(error)
        if self.audit_verifier is not None:
            tampered, audit_error = self._run_audit_verifier()
            if audit_error is not None:
                statuses.append(UNHEALTHY)
                errors.append(audit_error)
            else:
                details["audit_tampered_entries"] = tampered
                if tampered:
                    statuses.append(UNHEALTHY)
                    errors.append(f"{tampered} tampered audit log entries")
        return Outcome(worst(statuses), "; ".join(errors) or None, details)

    def _run_self_test(self) -> tuple[bool, str]:
        assert self.encryption_self_test is not None
        try:
            result = self.encryption_self_test()
        except Exception as exc:
            return False, f"encryption self-test raised {describe_error(exc)}"
        if result is False:
            return False, "encryption self-test failed"
        return True, ""

    def _run_audit_verifier(self) -> tuple[int, str | None]:
        assert self.audit_verifier is not None
        try:
            raw = self.audit_verifier()
            tampered = int(raw)
            if tampered < 0 or isinstance(raw, bool):
                raise ValueError(f"expected a count of tampered entries, got {raw!r}")
        except Exception as exc:
            return 0, f"audit log verifier raised {describe_error(exc)}"
        metrics.audit_tampered_entries.set(tampered)
        if tampered:
            self._alert(tampered)
        else:
            self._alerted = None
        return tampered, None

    def _alert(self, tampered: int) -> None:
        now = time.monotonic()
        if self._alerted is not None:
            last_count, last_time = self._alerted
            if last_count == tampered and now - last_time < self.resend_interval:
                return
        self._alerted = (tampered, now)
        if self._send_alert is None:
            return
        self._send_alert(
            "critical",
            "Audit log tampering",
            mask_phones(f"The audit log verifier found {tampered} tampered entries."),
            details={"tampered_entries": tampered},
            alertname="AuditLogTampering",
        )


class EncryptionCheck:
    """The ``encryption`` check: the app's own encryption, run on a fresh random sample.

    ``encrypt`` is either a round trip (``bytes -> bytes``, decrypt of encrypt) or, with
    ``decrypt``, the encryption alone: then the ciphertext must also differ from the
    sample (a no-op "encryption" is caught). ``unhealthy`` when the sample does not come
    back, or the app's code raises. The sample is random and never shown; an error names
    the exception's type only (the app's message could carry key material).
    """

    SAMPLE_BYTES = 32

    def __init__(self, encrypt: Callable[[bytes], Any], decrypt: Callable[[Any], Any] | None = None) -> None:
        self.encrypt = encrypt
        self.decrypt = decrypt

    def __call__(self) -> Outcome:
        sample = os.urandom(self.SAMPLE_BYTES)
        try:
            sealed = self.encrypt(sample)
            if self.decrypt is not None:
                if sealed == sample or sealed == sample.hex():
                    return Outcome(UNHEALTHY, "encryption returned the plaintext unchanged",
                                   {"round_trip": "failed"})
                opened = self.decrypt(sealed)
            else:
                opened = sealed
        except Exception as exc:
            return Outcome(UNHEALTHY, f"encryption round trip raised {type(exc).__name__}", {"round_trip": "failed"})
        if isinstance(opened, str):
            opened = opened.encode("latin-1", "replace")
        if opened != sample:
            return Outcome(UNHEALTHY, "encryption round trip returned different bytes", {"round_trip": "failed"})
        return Outcome(HEALTHY, None, {"round_trip": "passed"})
