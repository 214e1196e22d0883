"""App-side alerts: posted to Alertmanager's API v2 without ever slowing a request.

Some conditions are known to the app before Prometheus could see them (a cross-tenant
access attempt, a tampered audit log). :meth:`AlertSender.send` turns them into
Alertmanager alerts with the same labels as the Prometheus rules (``alertname``,
``severity``, ``service="mpesa-mcp"``, ``organization``) plus ``source="app"``, so they
land in the same routes and groups: one Slack/email/SMS notification, not two.

Why it looks like this:

- ``send`` only builds the alert and appends it to a bounded in-memory outbox; a
  background thread (started on the first alert, per process, after fork) posts it.
  A request never waits on Alertmanager and never sees an exception from it.
- The outbox is bounded (``MPESA_MONITOR_ALERT_QUEUE_SIZE``): past it new alerts are
  dropped and counted (``mpesa_alerts_sent_total{result="dropped"}``). An alert whose
  labels equal one still waiting is merged into it, so a burst of identical alerts
  costs one slot.
- Each Alertmanager URL (an HA pair gets every alert) has its own retry schedule with
  exponential backoff, bounded; alerts wait for it until their ``endsAt`` (5 minutes by
  default: an alert not sent again resolves by itself). When Alertmanager comes back,
  what waited is delivered.
- ``info`` alerts go to nobody (Alertmanager's ``null`` receiver): they are logged and
  counted, not sent. Without an Alertmanager URL every alert is logged at ERROR.
- At interpreter exit the outbox is flushed for a bounded time.
- Text is masked (:mod:`.redact`): no phone number, secret or token leaves the app.
"""

from __future__ import annotations

import enum
import json
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from . import metrics, tenancy
from .health.background import Ticker, after_fork_in_child, at_exit
from .phones import phone_spans
from .redact import get_logger, mask_phones, redact

log = get_logger(__name__)

SERVICE = "mpesa-mcp"
#: Alerts posted at once to one Alertmanager.
BATCH_SIZE = 64
_exit_deadline: float | None = None


class AlertLevel(str, enum.Enum):  # noqa: UP042 - StrEnum would change str() and format() of members
    """Severity of an app-side alert; the value is Alertmanager's ``severity`` label."""

    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    INFO = "info"


def alert_name(title: Any) -> str:
    """CamelCase of a title: ``"Cross-tenant access attempt"`` -> ``CrossTenantAccessAttempt``.

    A name that is already CamelCase is kept as it is. An alert name is a label that the
    SMS relay texts and every receiver logs, so it never carries the digits of a phone
    number: numbers in any shape are dropped (``"Refund to +254 722 000 111"`` ->
    ``RefundTo``), and so is any run of 9 or more digits.
    """
    text = str(title)
    spans = phone_spans(text)
    for start, end in reversed(spans):
        text = text[:start] + " " + text[end:]
    words = re.findall(r"[A-Za-z0-9]+", re.sub(r"\d{9,}", " ", text))
    name = "".join(word[0].upper() + word[1:] for word in words)
    name = re.sub(r"\d{9,}", "", name)  # digits that only touch once words are glued
    if not name or name[0].isdigit():
        name = "App" + name
    return name[:200]


def _annotation_name(key: Any) -> str:
    name = re.sub(r"[^A-Za-z0-9_]", "_", mask_phones(str(key)))[:100]
    return name if name and not name[0].isdigit() else "_" + name


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


@dataclass
class _Pending:
    alert: dict[str, Any]
    severity: str
    urls_left: set[str]
    expires: float  # monotonic: give up after this (the alert would already be resolved)
    sent: bool = False


@dataclass
class _Backoff:
    failures: int = 0
    next_try: float = 0.0
    last_error: str | None = None
    delivered: int = 0


@dataclass
class SendResult:
    """What :meth:`AlertSender.send` did with an alert (the CLI prints it)."""

    action: str  # queued, merged, logged, dropped
    alert: dict[str, Any] | None = None
    urls: tuple[str, ...] = field(default_factory=tuple)


class AlertSender:
    """The outbox and background sender of one app's alerts.

    :param urls: Alertmanager base URLs (``http://host:9093``); empty: log only.
    :param queue_size: alerts waiting at most; more are dropped and counted.
    :param timeout: seconds per HTTP attempt.
    :param runbook_url: runbook page; each alert links ``<page>#<alertname in lower case>``
        (None: no runbook link).
    :param resolve_after: ``endsAt`` = now + this; also how long an alert is retried.
    """

    def __init__(
        self,
        urls: tuple[str, ...] | list[str] = (),
        *,
        queue_size: int = 1000,
        timeout: float = 2.0,
        dashboard_url: str | None = None,
        runbook_url: str | None = None,
        resolve_after: float = 300.0,
        backoff_base: float = 0.5,
        backoff_max: float = 10.0,
        flush_timeout: float = 5.0,
    ) -> None:
        self.urls = tuple(url.rstrip("/") for url in urls)
        self.queue_size = queue_size
        self.timeout = timeout
        self.dashboard_url = dashboard_url.rstrip("/") if dashboard_url else None
        self.runbook_url = runbook_url
        self.resolve_after = resolve_after
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.flush_timeout = flush_timeout
        self._ticker = Ticker(self, "_tick", "mpesa-monitor-alerts")
        self._reset()
        after_fork_in_child(self)
        at_exit(self)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._deliver_lock = threading.Lock()
        self._outbox: OrderedDict[tuple[Any, ...], _Pending] = OrderedDict()
        self._backoff = {url: _Backoff() for url in self.urls}

    def _after_fork(self) -> None:
        # Alerts queued in the parent are the parent's to send (it flushes at exit).
        self._reset()

    def _at_exit(self) -> None:
        global _exit_deadline
        if self._outbox:
            # One budget for the whole process: many apps (tests) must not add up.
            if _exit_deadline is None:
                _exit_deadline = time.monotonic() + self.flush_timeout
            self.flush(max(0.0, _exit_deadline - time.monotonic()))
        self._ticker.stop()

    # --- building -----------------------------------------------------------------
    def build(
        self,
        level: AlertLevel | str,
        title: str,
        message: str,
        details: Mapping[str, Any] | None = None,
        organization: Any = None,
        alertname: str | None = None,
        annotations: Mapping[str, str] | None = None,
        dashboard: str | None = None,
    ) -> dict[str, Any]:
        """The Alertmanager API v2 ``postableAlert`` for these arguments (masked)."""
        level = AlertLevel(level)
        name = alert_name(str(alertname or title))
        labels = {"alertname": name, "severity": level.value, "service": SERVICE, "source": "app"}
        if organization is not None:
            labels["organization"] = tenancy.organizations(organization)
        notes = {"summary": mask_phones(str(title)), "description": mask_phones(str(message))}
        if self.runbook_url:
            notes["runbook_url"] = f"{self.runbook_url}#{name.lower()}"
        if details:
            details = dict(details) if isinstance(details, Mapping) else {"details": details}
            notes["details"] = mask_phones(json.dumps(redact(details), sort_keys=True, default=str))
        for key, value in (annotations or {}).items():
            # Annotation names are label names for Alertmanager: one invalid name and it
            # refuses the whole batch.
            notes[_annotation_name(key)] = mask_phones(str(value))
        if self.dashboard_url:
            if dashboard is None:
                dashboard = "mpesa-organization" if "organization" in labels else "mpesa-overview"
            url = f"{self.dashboard_url}/d/{dashboard}"
            if "organization" in labels and dashboard == "mpesa-organization":
                url += f"?var-organization={labels['organization']}"
            notes["dashboard_url"] = url
        now = time.time()
        return {"labels": labels, "annotations": notes, "startsAt": _iso(now),
                "endsAt": _iso(now + self.resolve_after)}

    # --- sending ------------------------------------------------------------------
    def send(self, level: AlertLevel | str, title: str, message: str, **kwargs: Any) -> SendResult:
        """Queue an alert for Alertmanager; never blocks on the network and never raises.

        An alert that cannot be built (an unknown ``level``, arguments that cannot be
        turned into text) is logged at ERROR and counted as
        ``mpesa_alerts_sent_total{severity="unknown", result="dropped"}``.
        """
        try:
            return self._send(level, title, message, **kwargs)
        except Exception:
            try:
                metrics.alerts_sent_total.labels("unknown", "dropped").inc()
                log.error("app-side alert could not be built or queued (level %s); dropped",
                          mask_phones(repr(level))[:40], exc_info=True)
            except Exception:  # even logging failed: still never raise into the app
                pass
            return SendResult("dropped")

    def _send(self, level: AlertLevel | str, title: str, message: str, **kwargs: Any) -> SendResult:
        alert = self.build(level, title, message, **kwargs)
        labels = alert["labels"]
        severity = labels["severity"]
        if severity == AlertLevel.INFO.value:
            log.info("app-side alert %s (info, not sent): %s", labels["alertname"], alert["annotations"]["summary"])
            metrics.alerts_sent_total.labels(severity, "logged").inc()
            return SendResult("logged", alert)
        if not self.urls:
            log.error(
                "app-side alert %s (severity %s, organization %s): %s - %s (no "
                "MPESA_MONITOR_ALERTMANAGER_URL configured, so it is only logged)",
                labels["alertname"], severity, labels.get("organization", "-"),
                alert["annotations"]["summary"], alert["annotations"]["description"],
            )
            metrics.alerts_sent_total.labels(severity, "logged").inc()
            return SendResult("logged", alert)
        key = tuple(sorted(labels.items()))
        expires = time.monotonic() + self.resolve_after
        with self._lock:
            pending = self._outbox.get(key)
            if pending is not None:  # the same alert is still waiting: send the newest text
                pending.alert, pending.expires = alert, expires
                pending.urls_left = set(self.urls)
                action = "merged"
            elif len(self._outbox) >= self.queue_size:
                action = "dropped"
            else:
                self._outbox[key] = _Pending(alert, severity, set(self.urls), expires)
                action = "queued"
        if action == "dropped":
            metrics.alerts_sent_total.labels(severity, "dropped").inc()
            log.warning("app-side alert %s dropped: %d alerts already waiting", labels["alertname"],
                        self.queue_size)
            return SendResult(action, alert)
        self._ticker.ensure_started()
        self._ticker.wake()
        return SendResult(action, alert, self.urls)

    @property
    def pending(self) -> int:
        """Alerts waiting for delivery to at least one Alertmanager."""
        return len(self._outbox)

    def status(self) -> dict[str, dict[str, Any]]:
        """Per URL: deliveries, consecutive failures, last error (for the CLI and tests)."""
        return {url: {"delivered": b.delivered, "failures": b.failures, "last_error": b.last_error}
                for url, b in self._backoff.items()}

    def flush(self, timeout: float = 5.0) -> bool:
        """Deliver what waits now, ignoring backoff, for at most ``timeout`` seconds.

        Runs in the caller's thread (it works at exit and in the CLI, where no sender
        thread may be running). True when the outbox is empty.
        """
        deadline = time.monotonic() + timeout
        while self._outbox and time.monotonic() < deadline:
            with self._deliver_lock:
                self._deliver(force=True, deadline=deadline)
            if self._outbox:
                time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        return not self._outbox

    def discard_pending(self) -> int:
        """Give up on every waiting alert (counted as failed unless sent somewhere)."""
        with self._lock:
            for pending in self._outbox.values():
                pending.expires = 0.0
        before = len(self._outbox)
        self._retire()
        return before

    def stop(self, flush_timeout: float = 0.0) -> None:
        if flush_timeout > 0:
            self.flush(flush_timeout)
        self._ticker.stop(1.0)

    # --- the background thread ----------------------------------------------------
    def _tick(self) -> float:
        with self._deliver_lock:
            self._deliver()
        with self._lock:
            waiting = [self._backoff[url].next_try for pending in self._outbox.values()
                       for url in pending.urls_left]
        if not waiting:
            return 60.0  # idle; send() wakes us
        return max(0.05, min(waiting) - time.monotonic())

    def _deliver(self, force: bool = False, deadline: float | None = None) -> None:
        for url in self.urls:
            now = time.monotonic()
            backoff = self._backoff[url]
            if not force and backoff.next_try > now:
                continue
            with self._lock:
                batch = [p for p in self._outbox.values() if url in p.urls_left][:BATCH_SIZE]
            if not batch:
                continue
            timeout = self.timeout if deadline is None else max(0.1, min(self.timeout, deadline - now))
            ok, permanent, error = self._post(url, [p.alert for p in batch], timeout)
            with self._lock:
                if ok or permanent:
                    for pending in batch:
                        pending.urls_left.discard(url)
                        if ok and not pending.sent:
                            pending.sent = True
                            metrics.alerts_sent_total.labels(pending.severity, "sent").inc()
                if ok:
                    backoff.failures, backoff.next_try, backoff.last_error = 0, 0.0, None
                    backoff.delivered += len(batch)
                elif permanent:  # the alerts were bad, not the server: no backoff
                    backoff.last_error = error
                else:
                    backoff.failures += 1
                    backoff.last_error = error
                    delay = min(self.backoff_max, self.backoff_base * 2 ** (backoff.failures - 1))
                    backoff.next_try = time.monotonic() + delay
            if not ok and not permanent:
                log.warning("could not post %d alert(s) to %s (attempt %d): %s", len(batch), url,
                            backoff.failures, error)
        self._retire()

    def _retire(self) -> None:
        """Forget delivered alerts and those past their end (counted as failed if unsent)."""
        now = time.monotonic()
        failed: list[_Pending] = []
        with self._lock:
            for key in list(self._outbox):
                pending = self._outbox[key]
                if not pending.urls_left or now > pending.expires:
                    del self._outbox[key]
                    if not pending.sent:
                        failed.append(pending)
        for pending in failed:
            metrics.alerts_sent_total.labels(pending.severity, "failed").inc()
            log.error("app-side alert %s could not be delivered to any Alertmanager before it expired",
                      pending.alert["labels"]["alertname"])

    def _post(self, url: str, alerts: list[dict[str, Any]], timeout: float) -> tuple[bool, bool, str | None]:
        """POST alerts; ``(ok, permanent_failure, error)``. A 4xx will not get better by retrying."""
        import requests

        try:
            response = requests.post(f"{url}/api/v2/alerts", json=alerts, timeout=timeout)
        except requests.RequestException as exc:
            return False, False, type(exc).__name__
        with response:
            if response.status_code < 300:
                return True, False, None
            text = mask_phones(response.text[:200])
        error = f"HTTP {response.status_code}: {text}"
        if 400 <= response.status_code < 500 and response.status_code != 429:
            log.error("Alertmanager %s rejected %d alert(s): %s", url, len(alerts), error)
            return False, True, error
        return False, False, error
