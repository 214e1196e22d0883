"""False pages per hour: the local stack under normal demo traffic, no fault injected.

Why: on-call people stop reading a channel that pages for nothing. The demo's traffic
(examples/demo/traffic.py) is a normal day: sessions that log in and act, a few wrong
passwords, customers who cancel, type a wrong PIN or cannot be reached, a slow tail of
Daraja answers, many client addresses. Every notification other than the Watchdog is a
false page, except ``HighResourceUsage`` when this process's own reading (psutil, every
few seconds) confirms that the host really was over the rule's threshold shortly before:
the alert measures the real machine, and a busy shared machine is a real condition.

Runs at ``--fast`` intervals (the rules on a 15 times faster clock) and, with
``--production``, at production intervals (much longer to mean anything). The test
suite runs a short one (tests/test_soak.py).

    python -m bench.bench_soak [--seconds 900] [--production] [--rps 5]
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .common import Result, fmt

#: HighResourceUsage thresholds of deploy/prometheus/rules/app.yml, per resource.
THRESHOLDS = {"cpu": 0.85, "memory": 0.90, "disk": 0.85}


@dataclass
class SoakReport:
    """What a soak saw: notifications by kind, and the host readings that justify some."""

    seconds: float
    fast: bool
    traffic: str = ""
    false_pages: list[dict[str, Any]] = field(default_factory=list)
    confirmed_resource: list[dict[str, Any]] = field(default_factory=list)
    watchdog_pings: int = 0
    readings: list[tuple[float, dict[str, float]]] = field(default_factory=list)

    @property
    def false_pages_per_hour(self) -> float:
        firing = [m for m in self.false_pages if m.get("status") != "resolved"]
        return len(firing) * 3600.0 / self.seconds if self.seconds else 0.0

    def summary(self) -> str:
        names = sorted({n for m in self.false_pages for n in (m.get("alertnames") or ["?"])})
        return (f"{len(self.false_pages)} false notification(s) in {self.seconds:.0f}s "
                f"({self.false_pages_per_hour:.1f} firing per hour){': ' + ', '.join(names) if names else ''}; "
                f"{len(self.confirmed_resource)} HighResourceUsage confirmed by the host's reading; "
                f"{self.watchdog_pings} Watchdog pings")


class HostReadings:
    """psutil every ``every`` seconds in a thread: CPU, memory and the root disk."""

    def __init__(self, every: float = 2.0, disk_path: str = "/") -> None:
        self.every, self.disk_path = every, disk_path
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="host-readings")

    def _run(self) -> None:
        import psutil

        psutil.cpu_percent(None)
        for _ in range(100_000):  # bounded; stopped by stop()
            if self._stop.wait(self.every):
                return
            self.samples.append((time.time(), {
                "cpu": psutil.cpu_percent(None) / 100.0,
                "memory": psutil.virtual_memory().percent / 100.0,
                "disk": psutil.disk_usage(self.disk_path).percent / 100.0}))

    def __enter__(self) -> HostReadings:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def confirms(self, resource: str, until: float, lookback: float) -> bool:
        """Some reading in ``[until - lookback, until]`` was over the resource's threshold."""
        return any(until - lookback <= ts <= until and values[resource] > THRESHOLDS[resource]
                   for ts, values in self.samples)


def _stop_when(stop: threading.Event, finished: threading.Event, action: Any) -> None:
    """Call ``action`` once ``stop`` is set, unless ``finished`` comes first."""
    for _ in range(1_000_000):  # bounded; ends with either event
        if finished.wait(0.5):
            return
        if stop.is_set():
            action()
            return


def _resource_of(message: dict[str, Any]) -> str | None:
    text = message.get("text", "").lower()
    found = [r for r in THRESHOLDS if r in text]
    return found[0] if len(found) == 1 else None


def soak(seconds: float, fast: bool = True, rps: float = 5.0, state_dir: Path | None = None,
         log: Any = print, stop: threading.Event | None = None) -> SoakReport:
    """Run the local stack with normal traffic for ``seconds``; classify every notification.

    ``stop`` set ends the traffic early (the stack is stopped as always): a caller that
    runs the soak in a thread ends it this way; the report's ``seconds`` says how long
    it really ran.
    """
    import requests

    from examples.demo import faults as catalogue
    from examples.demo.localstack import ORGANIZATIONS, LocalStack
    from examples.demo.traffic import TrafficConfig, _Runner, configure_simulator

    rendered = catalogue.render_configs(fast)
    _, rule = catalogue.rule_of(rendered, "HighResourceUsage")
    for_ = catalogue.seconds(rule.get("for"))
    keep = catalogue.seconds(rule.get("keep_firing_for"))
    scrape = catalogue.seconds(rendered.prometheus["global"].get("scrape_interval"), 15)
    # A reading that justifies the alert lies within its `for:` before the page (and a
    # resolution may come keep_firing_for later); the margin covers scrape and grouping.
    lookback = for_ + keep + 10 * scrape + 30
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
        stack = LocalStack(state_dir or Path(tmp), fast=fast, database="postgres",
                           app_args=["--worker-class", "gthread", "--threads", "8"])
        with stack, HostReadings() as host:
            configure_simulator(stack.url("simulator"))
            started = time.time()
            runner = _Runner(TrafficConfig(stack.url("app"), duration=seconds, rps=rps, orgs=ORGANIZATIONS,
                                           users=200))
            finished = threading.Event()
            if stop is not None:
                threading.Thread(target=_stop_when, args=(stop, finished, runner.stop), daemon=True,
                                 name="soak-stop").start()
            try:
                summary = runner.run()
            finally:
                finished.set()
            ended = time.time()
            if stop is None or not stop.is_set():
                time.sleep(2 * scrape + 2)  # what the last minute of traffic set off arrives
            messages = requests.get(stack.url("inbox") + "/api/messages",
                                    params={"since": started, "limit": 2000}, timeout=10).json()["messages"]
            stats = requests.get(stack.url("inbox") + "/api/stats", timeout=10).json()
    report = SoakReport(seconds=ended - started, fast=fast, traffic=summary.line(),
                        watchdog_pings=int(stats.get("watchdog_pings") or 0),
                        readings=host.samples)
    for message in messages:
        names = set(message.get("alertnames") or [])
        if names <= {"Watchdog"} and names:
            continue
        resource = _resource_of(message) if names == {"HighResourceUsage"} else None
        if resource and host.confirms(resource, message["received_ts"], lookback):
            report.confirmed_resource.append(message)
        else:
            report.false_pages.append(message)
    log(report.summary())
    log(report.traffic)
    return report


class SoakThread:
    """:func:`soak` in a thread of its own, so that it runs beside other work: the test
    suite runs it beside the end-to-end tests (two stacks, each with its own ports,
    processes and PostgreSQL; nothing is injected into this one). :meth:`result` waits
    for the report, :meth:`stop` ends the soak early; either way its stack is stopped."""

    def __init__(self, seconds: float, state_dir: Path, **options: Any) -> None:
        self.seconds, self.state_dir, self.options = seconds, state_dir, options
        self.lines: list[str] = []
        self._stop = threading.Event()
        self._report: SoakReport | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="soak")

    def _run(self) -> None:
        try:
            self._report = soak(self.seconds, state_dir=self.state_dir, log=self.lines.append, stop=self._stop,
                                **self.options)
        except BaseException as exc:  # handed to the caller by result()
            self._error = exc

    def start(self) -> SoakThread:
        if not self._thread.is_alive() and self._report is None and self._error is None:
            self._thread.start()
        return self

    def result(self, timeout: float) -> SoakReport:
        """The report, once the soak is over (TimeoutError after ``timeout`` seconds)."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"the soak did not end within {timeout:g} s")
        if self._error is not None:
            raise self._error
        assert self._report is not None
        return self._report

    def stop(self, timeout: float = 120.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)


def run(seconds: float = 600.0, production: bool = False) -> Result:
    """The benchmark: soaks at fast intervals and, when asked, at production ones."""
    started = time.monotonic()
    result = Result(key="soak", title="False pages per hour of normal traffic",
                    method="The local stack with the demo's normal traffic (5 actions/s over 4 organizations, "
                           "200 users in sessions), no fault injected; every notification but the Watchdog is "
                           "a false page, except HighResourceUsage confirmed by this process's psutil readings.",
                    header=["intervals", "seconds", "false notifications", "false pages per hour",
                            "HighResourceUsage confirmed", "alerts"])
    for fast in ((True, False) if production else (True,)):
        report = soak(seconds if fast else max(seconds, 3600.0), fast=fast)
        names = sorted({n for m in report.false_pages for n in (m.get("alertnames") or ["?"])})
        result.rows.append(["--fast" if fast else "production", fmt(report.seconds, 0), str(len(report.false_pages)),
                            fmt(report.false_pages_per_hour, 1), str(len(report.confirmed_resource)),
                            ", ".join(names) or "-"])
    result.seconds = time.monotonic() - started
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_soak", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--production", action="store_true", help="also soak at production intervals (>= 1 h)")
    args = parser.parse_args(argv)
    print(run(args.seconds, args.production).markdown())


if __name__ == "__main__":
    main()
