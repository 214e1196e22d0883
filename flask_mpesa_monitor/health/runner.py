"""Running the checks: in parallel, each bounded by its timeout, results cached.

Why it is built this way:

- Each check runs in its own daemon thread and the runner waits at most the check's
  timeout for it. A check that hangs (a database that accepts the connection and never
  answers) is reported ``unhealthy`` ("timed out after 2.0 s") and its thread is
  abandoned, never joined; while it is still stuck, later runs do not start a second
  thread for that check, so a hung dependency cannot pile up threads.
- Endpoints never run checks themselves in the default mode: a background thread (one
  per process, started on the first request after fork, see :mod:`.background`)
  refreshes the results every ``interval`` seconds and ``/health/detailed`` serves the
  cache, so a thousand concurrent probes cost no database query.
- With the background thread off, checks run on demand, at most once per ``interval``
  and one run at a time (single flight): concurrent callers wait for the run in
  progress (bounded) and share its result.

``runs`` counts completed runs in this process; tests and the CLI read it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from .. import metrics
from ..redact import get_logger
from .background import Ticker, after_fork_in_child, at_exit
from .database import describe_error
from .report import HealthReport
from .result import UNHEALTHY, CheckResult, HealthCheck, Outcome, normalize

log = get_logger(__name__)

#: Extra time a caller waits for a run beyond the slowest check's timeout.
WAIT_MARGIN = 0.25


def timeout_message(timeout: float) -> str:
    shown = f"{timeout:.1f}" if round(timeout, 1) == timeout else f"{timeout:g}"
    return f"timed out after {shown} s"


class _Job:
    """One check running in its own thread."""

    def __init__(self, check: HealthCheck) -> None:
        self.check = check
        self.done = threading.Event()
        self.outcome: Outcome | None = None
        self.seconds = 0.0
        self.started = time.monotonic()

    def start(self) -> _Job:
        thread = threading.Thread(target=self._run, name=f"mpesa-health-{self.check.name}", daemon=True)
        thread.start()
        return self

    def _run(self) -> None:
        try:
            self.outcome = normalize(self.check.func())
        except Exception as exc:
            self.outcome = Outcome(UNHEALTHY, error=describe_error(exc))
        finally:
            self.seconds = time.monotonic() - self.started
            self.done.set()


class HealthRunner:
    """The checks of one app, their cached results, and the thread refreshing them."""

    def __init__(self, interval: float, background: bool = True) -> None:
        self.interval = interval
        self.background = background
        self.runs = 0
        self._checks: dict[str, HealthCheck] = {}
        self._tick_hooks: list[Callable[[], Any]] = []
        self._ticker = Ticker(self, "_tick", "mpesa-monitor-health")
        self._reset()
        after_fork_in_child(self)
        at_exit(self)

    def _reset(self) -> None:
        self._run_lock = threading.Lock()
        self._first_result = threading.Event()
        self._inflight: dict[str, _Job] = {}
        self._cached: HealthReport | None = None
        self._cached_at = 0.0

    def _after_fork(self) -> None:
        # The parent's check threads and results do not exist here: start afresh.
        self._reset()
        self.runs = 0

    def _at_exit(self) -> None:
        self._ticker.stop()

    # --- the checks ---------------------------------------------------------------
    def add(self, check: HealthCheck) -> None:
        """Add or replace a check (by name)."""
        if not isinstance(check.timeout, (int, float)) or isinstance(check.timeout, bool) or check.timeout <= 0:
            raise ValueError(f"health check {check.name!r}: timeout must be a positive number of seconds.")
        self._checks = {**self._checks, check.name: check}

    def remove(self, name: str) -> None:
        self._checks = {key: value for key, value in self._checks.items() if key != name}

    @property
    def checks(self) -> dict[str, HealthCheck]:
        return dict(self._checks)

    def add_tick_hook(self, hook: Callable[[], Any]) -> None:
        """Housekeeping to run after each background run (expiring pending STK pushes)."""
        self._tick_hooks.append(hook)

    @property
    def max_timeout(self) -> float:
        return max((check.timeout for check in self._checks.values()), default=0.0)

    # --- running ------------------------------------------------------------------
    def run_once(self) -> HealthReport:
        """Run every check now (waiting for a run in progress first); return the report."""
        with self._run_lock:
            return self._run_locked()

    def _run_locked(self) -> HealthReport:
        checks = list(self._checks.values())
        jobs: dict[str, _Job | None] = {}
        for check in checks:
            previous = self._inflight.get(check.name)
            if previous is not None and not previous.done.is_set():
                jobs[check.name] = None  # still stuck in an earlier run: no second thread
                continue
            jobs[check.name] = self._inflight[check.name] = _Job(check).start()
        results: dict[str, CheckResult] = {}
        for check in checks:
            job = jobs[check.name]
            if job is not None:
                job.done.wait(max(0.0, job.started + check.timeout - time.monotonic()))
            results[check.name] = self._result(check, job)
        for result in results.values():
            metrics.health_check_status.labels(result.name).set(result.value)
            metrics.health_check_duration_seconds.labels(result.name).set(result.response_time_ms / 1000)
        report = HealthReport(results, time.time())
        self._cached, self._cached_at = report, time.monotonic()
        self.runs += 1
        self._first_result.set()
        return report

    def _result(self, check: HealthCheck, job: _Job | None) -> CheckResult:
        common: dict[str, Any] = {"name": check.name, "critical": check.critical, "timeout": check.timeout,
                  "component_type": check.component_type}
        if job is None or not job.done.is_set() or job.outcome is None:
            error = timeout_message(check.timeout)
            if job is None:
                error += " (still running from an earlier run)"
            return CheckResult(status=UNHEALTHY, response_time_ms=round(check.timeout * 1000, 1),
                               error=error, **common)
        outcome = job.outcome
        return CheckResult(status=outcome.status, response_time_ms=round(job.seconds * 1000, 1),
                           error=outcome.error, details=dict(outcome.details), observed=outcome.observed,
                           **common)

    def report(self) -> HealthReport:
        """The latest results, as the endpoints serve them.

        Background mode: the cache (waiting, bounded, for the first run of this process).
        On-demand mode: the cache while younger than ``interval``, else one fresh run
        shared by every concurrent caller.
        """
        if self.background:
            self.ensure_started()
            report = self._cached
            if report is None:
                self._first_result.wait(self.max_timeout + WAIT_MARGIN)
                report = self._cached
            return report if report is not None else self._no_result()
        report = self._fresh_cache()
        if report is not None:
            return report
        if not self._run_lock.acquire(timeout=self.max_timeout + WAIT_MARGIN):
            return self._cached or self._no_result()
        try:
            return self._fresh_cache() or self._run_locked()
        finally:
            self._run_lock.release()

    def _fresh_cache(self) -> HealthReport | None:
        report = self._cached
        if report is not None and time.monotonic() - self._cached_at < self.interval:
            return report
        return None

    def _no_result(self) -> HealthReport:
        results = {
            check.name: CheckResult(check.name, UNHEALTHY, 0.0, check.critical, check.timeout,
                                    error="no result yet", component_type=check.component_type)
            for check in self._checks.values()
        }
        return HealthReport(results, time.time())

    # --- the background thread ----------------------------------------------------
    def ensure_started(self) -> None:
        """Start this process's background thread (cheap no-op once it runs)."""
        if self.background:
            self._ticker.ensure_started()

    @property
    def thread_running(self) -> bool:
        return self._ticker.running

    def stop(self, timeout: float = 1.0) -> None:
        """Stop the background thread (for tests and shutdown)."""
        self._ticker.stop(timeout)

    def _tick(self) -> float:
        self.run_once()
        for hook in self._tick_hooks:
            try:
                hook()
            except Exception:
                log.exception("health housekeeping hook failed")
        return self.interval
