"""5. Alert latency: seconds from a fault to the Slack/email/SMS inbox.

Two alerts, two fault paths:

- **DatabaseDown** (``mpesa_health_check_status{check="database"} == 0``): the database
  goes away; the worker's background health check notices at its next run (at most one
  health interval, plus the check's timeout when the database hangs instead of refusing);
  Prometheus sees the gauge at its next scrape, the rule at its next evaluation, the
  alert fires after ``for:``; Alertmanager waits ``group_wait`` for a new group, then
  notifies.
- **CrossTenantAccessAttempt**: the extension posts an app-side alert to Alertmanager's
  API at once (when ``MPESA_MONITOR_ALERTMANAGER_URL`` is set), so only ``group_wait``
  stands between the attempt and the page; the Prometheus rule on
  ``mpesa_cross_tenant_attempts_total`` is the backstop (scrape + evaluation + ``for:`` +
  ``group_wait``).

The computed part reads the intervals from the configuration in ``deploy/``
(``scrape_interval``, ``evaluation_interval`` and a group's ``interval``, each alert's
``for:``, the Alertmanager route its labels take and that route's ``group_wait``), and the
extension's ``HEALTH_INTERVAL``/``HEALTH_TIMEOUT`` defaults. Short intervals are those the
local stack renders with ``--fast`` (``examples/demo/localstack.py``), when it is present.
Worst case: every wait is as long as it can be; best case: the fault lands just before
each step. Delivery time of the receivers themselves (Slack, SMTP, the SMS relay) is not
part of the bound.

The measured part runs the local stack (examples/demo/localstack.py) end to end, once with
the short intervals and once with the production ones: :func:`measure_local_stack`.

Run alone: ``python -m bench.bench_alert_latency``.
"""

from __future__ import annotations

import re
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .common import REPO_ROOT, Result, Target, fmt

DEPLOY = REPO_ROOT / "deploy"
ALERTS = ("DatabaseDown", "CrossTenantAccessAttempt")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, "y": 31536000.0}


def seconds(duration: str | float | None, default: float = 0.0) -> float:
    """A Prometheus duration (``1m30s``, ``15s``, ``0m``) in seconds."""
    if duration is None:
        return default
    if isinstance(duration, (int, float)):
        return float(duration)
    text = str(duration).strip()
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {duration!r}")
    return sum(float(n) * _UNITS[u] for n, u in parts)


# --------------------------------------------------------------------------- Alertmanager routing


def _matcher(text: str) -> tuple[str, str, str]:
    match = re.fullmatch(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"?(.*?)"?\s*', text)
    if not match:
        raise ValueError(f"cannot read matcher {text!r}")
    return match.group(1), match.group(2), match.group(3)


def _matches(route: dict[str, Any], labels: dict[str, str]) -> bool:
    matchers = [_matcher(m) for m in route.get("matchers", [])]
    matchers += [(k, "=", v) for k, v in (route.get("match") or {}).items()]
    matchers += [(k, "=~", v) for k, v in (route.get("match_re") or {}).items()]
    for name, op, value in matchers:
        actual = labels.get(name, "")
        if op == "=" and actual != value:
            return False
        if op == "!=" and actual == value:
            return False
        if op == "=~" and not re.fullmatch(value, actual):
            return False
        if op == "!~" and re.fullmatch(value, actual):
            return False
    return True


def route_for(config: dict[str, Any], labels: dict[str, str]) -> list[dict[str, Any]]:
    """The routes (receiver, group_wait, group_interval) an alert with ``labels`` takes.

    Alertmanager's rules: depth first, the first matching child wins unless it says
    ``continue: true``; a route inherits unset timings from its parent.
    """
    def walk(route: dict[str, Any], inherited: dict[str, Any]) -> list[dict[str, Any]]:
        settings = {key: route.get(key, inherited.get(key)) for key in ("receiver", "group_wait", "group_interval")}
        found: list[dict[str, Any]] = []
        for child in route.get("routes", []) or []:
            if _matches(child, labels):
                found += walk(child, settings)
                if not child.get("continue", False):
                    break
        return found or [settings]

    root = config["route"]
    defaults = {"group_wait": "30s", "group_interval": "5m"}
    return walk(root, {**defaults, **{k: root[k] for k in defaults if k in root}})


# --------------------------------------------------------------------------- bound


@dataclass
class Intervals:
    """Everything the bound depends on, in seconds."""

    scrape: float
    evaluation: float
    for_: float
    group_wait: float
    group_interval: float
    receiver: str
    health_interval: float
    health_timeout: float


def find_rule(rule_docs: list[dict[str, Any]], alert: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    for document in rule_docs:
        for group in (document or {}).get("groups", []) or []:
            for rule in group.get("rules", []) or []:
                if rule.get("alert") == alert:
                    return group, rule
    return None


def intervals_for(alert: str, prometheus: dict[str, Any], rule_docs: list[dict[str, Any]],
                  alertmanager: dict[str, Any], health_interval: float, health_timeout: float) -> Intervals | None:
    found = find_rule(rule_docs, alert)
    if found is None:
        return None
    group, rule = found
    glob = prometheus.get("global", {}) or {}
    scrape = seconds(glob.get("scrape_interval"), 60.0)
    for job in prometheus.get("scrape_configs", []) or []:
        if job.get("job_name") == "mpesa-mcp":
            scrape = seconds(job.get("scrape_interval"), scrape)
    evaluation = seconds(group.get("interval"), seconds(glob.get("evaluation_interval"), 60.0))
    labels = {"alertname": alert, **{k: str(v) for k, v in (rule.get("labels") or {}).items()}}
    routes = route_for(alertmanager, labels)
    first = min(routes, key=lambda r: seconds(r["group_wait"]))
    return Intervals(scrape, evaluation, seconds(rule.get("for"), 0.0), seconds(first["group_wait"]),
                     seconds(first["group_interval"]), ", ".join(str(r["receiver"]) for r in routes),
                     health_interval, health_timeout)


def rule_path_bound(iv: Intervals, health: bool) -> tuple[float, float]:
    """(best, worst) seconds from fault to notification through the Prometheus rule."""
    best = iv.for_ + iv.group_wait
    worst = iv.scrape + iv.evaluation + iv.for_ + iv.group_wait
    if iv.for_ and iv.evaluation and iv.for_ % iv.evaluation:
        worst += iv.evaluation  # ``for`` ends between two evaluations
    if health:
        worst += iv.health_interval + iv.health_timeout
    return best, worst


def load_production() -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]] | None:
    import yaml

    prom_file, am_file = DEPLOY / "prometheus" / "prometheus.yml", DEPLOY / "alertmanager" / "alertmanager.yml"
    rule_files = sorted((DEPLOY / "prometheus" / "rules").glob("*.yml"))
    if not (prom_file.exists() and am_file.exists() and rule_files):
        return None
    return (yaml.safe_load(prom_file.read_text()), [yaml.safe_load(p.read_text()) for p in rule_files],
            yaml.safe_load(am_file.read_text()))


def load_fast() -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any], float] | None:
    """The configs as ``examples/demo/localstack.py --fast`` renders them (None: not available)."""
    try:
        import yaml

        from examples.demo import localstack
    except ImportError:
        return None
    try:
        ports = {name: 1 for name in ("app", "simulator", "inbox", "smtp", "relay", "prometheus", "alertmanager")}
        with tempfile.TemporaryDirectory(prefix="bench-alert-") as tmp:
            rules_dir = Path(tmp) / "rules"
            written = localstack.render_rules(rules_dir, True)
            rule_docs = [yaml.safe_load(Path(p).read_text()) for p in written]
            prometheus = localstack.render_prometheus(ports, rules_dir, Path(tmp) / "token", True)
        alertmanager = localstack.render_alertmanager(ports, True)
    except Exception:  # the local stack is work in progress: no short-interval bound then
        return None
    return prometheus, rule_docs, alertmanager, 1.0  # --fast runs the health checks every second


_MEASURED: dict[bool, dict[str, float | None]] = {}


def _measure_stack(fast: bool) -> dict[str, float | None]:
    """Start the local stack once per mode and time both faults, fault -> all three channels."""
    from examples.demo.localstack import LocalStack
    from examples.demo.servers import http_json, wait_until

    results: dict[str, float | None] = {}
    with tempfile.TemporaryDirectory(prefix="bench-alert-stack-") as tmp, \
            LocalStack(Path(tmp), fast=fast, database="postgres") as stack:
        wait_until(lambda: stack.prometheus.value('min(up{job="mpesa-mcp"})') == 1
                   and stack.prometheus.value('min(mpesa_health_check_status{check="database"})') == 1,
                   timeout=120, interval=1)

        def arrival(alertname: str, since: float, limit: float) -> float | None:
            def all_channels() -> float | None:
                body = http_json("GET", stack.url("inbox") + "/api/messages?status=firing&limit=500", timeout=5)
                found = body["messages"] if isinstance(body, dict) else body
                times = {}
                for m in found:
                    if alertname in (m.get("alertnames") or [m.get("alertname")]) and m["received_ts"] >= since:
                        times.setdefault(m["channel"], m["received_ts"])
                return max(times.values()) - since if len(times) == 3 else None
            try:
                return wait_until(all_channels, timeout=limit, interval=0.2)
            except TimeoutError:
                return None

        import requests

        session = requests.Session()
        token = session.post(stack.url("app") + "/login", json={
            "username": "demo", "password": "demo-password", "organization": "acme"}, timeout=10).json()["token"]
        since = time.time()
        session.get(stack.url("app") + "/orgs/jambo/transactions", headers={"Authorization": f"Bearer {token}"},
                    timeout=10)
        results["CrossTenantAccessAttempt"] = arrival("CrossTenantAccessAttempt", since, 120)
        since = time.time()
        stack.postgres.stop()
        try:
            results["DatabaseDown"] = arrival("DatabaseDown", since, 240)
        finally:
            stack.postgres.start()
    return results


def measure_local_stack(alert: str, fast: bool) -> float | None:
    """Seconds from fault to the notification on all three channels, in the real local stack.

    DatabaseDown: the stack's PostgreSQL is stopped; CrossTenantAccessAttempt: a demo user
    of one organization reads another's transactions. One stack per mode (short intervals,
    or the production intervals of deploy/), both faults in it.
    """
    if fast not in _MEASURED:
        try:
            _MEASURED[fast] = _measure_stack(fast)
        except Exception as exc:  # report, do not abort the other benchmarks
            print(f"alert latency ({'short' if fast else 'production'}): {exc!r}")
            _MEASURED[fast] = {}
    return _MEASURED[fast].get(alert)


def run(measure: bool = True) -> Result:
    started = time.monotonic()
    from flask_mpesa_monitor.config import SETTINGS

    defaults = {s.key: s.default for s in SETTINGS}
    health_interval = float(defaults.get("HEALTH_INTERVAL", 15.0))
    health_timeout = float(defaults.get("HEALTH_TIMEOUT", 2.0))
    result = Result(
        key="alert_latency",
        title="5. Alert latency (fault to notification)",
        method=(
            "Computed from `deploy/` (scrape and evaluation intervals, each alert's `for:`, the "
            "Alertmanager route its labels take and that route's `group_wait`) and the extension's "
            f"health defaults (interval {health_interval:g} s, timeout {health_timeout:g} s). Best: "
            "the fault lands just before every step; worst: just after. Receivers' own delivery "
            "time is not included. Short intervals: the local stack's `--fast` rendering."
        ),
        header=["alert", "path", "intervals", "configuration", "best s", "worst s", "measured s"],
    )
    production = load_production()
    if production is None:
        result.skipped = "deploy/prometheus or deploy/alertmanager is not there yet."
        result.seconds = time.monotonic() - started
        return result
    configs = [("production", *production, health_interval)]
    fast = load_fast()
    if fast is not None:
        configs.append(("short (local --fast)", *fast))
    else:
        result.notes.append("Short intervals: examples/demo/localstack.py is not importable; not computed.")
    bounds: dict[str, Any] = {}
    for name, prometheus, rule_docs, alertmanager, h_interval in configs:
        for alert in ALERTS:
            iv = intervals_for(alert, prometheus, rule_docs, alertmanager, h_interval, health_timeout)
            if iv is None:
                result.notes.append(f"{alert}: no such rule in the {name} rules.")
                continue
            desc = (f"scrape {iv.scrape:g}s, eval {iv.evaluation:g}s, for {iv.for_:g}s, "
                    f"group_wait {iv.group_wait:g}s ({iv.receiver})")
            measured = measure_local_stack(alert, fast=name != "production") if measure else None
            shown = fmt(measured, 1) if measured is not None else "not measured"
            if alert == "DatabaseDown":
                best, worst = rule_path_bound(iv, health=True)
                desc += f", health every {iv.health_interval:g}s + timeout {iv.health_timeout:g}s"
                result.rows.append([alert, "health check → rule", name, desc, fmt(best, 0), fmt(worst, 0), shown])
                bounds[f"{name}/{alert}"] = {"best": best, "worst": worst, "measured": measured}
            else:
                best, worst = rule_path_bound(iv, health=False)
                result.rows.append([alert, "app-side alert → Alertmanager", name,
                                    f"group_wait {iv.group_wait:g}s ({iv.receiver})",
                                    fmt(iv.group_wait, 0), fmt(iv.group_wait, 0), shown])
                result.rows.append([alert, "counter → rule (backstop)", name, desc,
                                    fmt(best, 0), fmt(worst, 0), shown])
                bounds[f"{name}/{alert}"] = {"best": iv.group_wait, "worst": iv.group_wait,
                                             "rule_best": best, "rule_worst": worst, "measured": measured}
            bounds[f"{name}/{alert}"]["group_interval"] = iv.group_interval
    result.data = {"bounds": bounds, "health_interval": health_interval, "health_timeout": health_timeout}
    prod_db = bounds.get("production/DatabaseDown")
    if prod_db:
        measured = prod_db.get("measured")
        within = measured is not None and measured <= prod_db["worst"] + 5
        result.targets.append(Target(
            "alert latency, measured", "DatabaseDown, production intervals: within the computed bound",
            f"{fmt(measured, 1) if measured is not None else 'not measured'} s, computed bound "
            f"{fmt(prod_db['best'], 0)}–{fmt(prod_db['worst'], 0)} s",
            within if measured is not None else None,
            reason="" if measured is not None else "not measured (see the notes)."))
        gi = prod_db["group_interval"]
        result.notes.append(
            f"All bounds assume a new Alertmanager group. An alert joining a group that already has a "
            f"notification out waits for the group's next flush instead: up to `group_interval` "
            f"({gi:g} s for the critical route).")
    result.seconds = time.monotonic() - started
    return result


def _catalogue_faults() -> tuple[Any, ...]:
    from examples.demo import faults as catalogue

    return catalogue.FAULTS


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.bench_alert_latency")
    parser.add_argument("--catalogue", action="store_true",
                        help="every fault of examples/demo/faults.py, measured at --fast intervals")
    parser.add_argument("--production", action="store_true", help="with --catalogue: production intervals too (hours)")
    parser.add_argument("--production-only", action="store_true",
                        help="with --catalogue: production intervals only")
    parser.add_argument("--faults", default="", help="with --catalogue: only these faults (comma-separated names)")
    parser.add_argument("--bounds-only", action="store_true", help="computed bounds, nothing measured")
    args = parser.parse_args(argv)
    if args.catalogue:
        only = [name for name in args.faults.split(",") if name]
        unknown = sorted(set(only) - {fault.name for fault in _catalogue_faults()})
        if unknown:
            parser.error(f"unknown faults {', '.join(unknown)}")
        print(run_catalogue(measure=not args.bounds_only, production=args.production or args.production_only,
                            only=only, fast=not args.production_only).markdown())
    else:
        print(run(measure=not args.bounds_only).markdown())


# --------------------------------------------------------------------------- the fault catalogue


def measure_catalogue(fast: bool, log: Any = print, only: Sequence[str] = ()) -> dict[str, dict[str, Any]]:
    """Every fault of examples/demo/faults.py (or the ``only`` ones) in one local stack (in
    the order and with the overlaps of ``faults.SCHEDULE``, as the end-to-end tests run
    them): seconds to the page per channel and to the resolution."""
    import subprocess
    import threading

    from examples.demo import faults as catalogue
    from examples.demo.localstack import LocalStack
    from examples.demo.traffic import TrafficConfig, _Runner, configure_simulator

    measured: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-faults-") as tmp:
        disk = Path(tmp) / "small-disk"
        disk.mkdir()
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)],
                                 capture_output=True, timeout=10, check=False).returncode == 0
        env = catalogue.app_env(disk if mounted else None, fast=fast)
        rendered = catalogue.render_configs(fast, env)
        try:
            with LocalStack(Path(tmp) / "stack", fast=fast, database="postgres", app_env=env,
                            app_args=["--worker-class", "gthread", "--threads", "8"]) as stack:
                configure_simulator(stack.url("simulator"))
                runner = _Runner(TrafficConfig(stack.url("app"), duration=6 * 3600, rps=4,
                                               orgs=catalogue.BACKGROUND_ORGS, users=60))
                background = threading.Thread(target=runner.run, daemon=True)
                background.start()
                try:
                    skip = [f.name for f in catalogue.FAULTS
                            if (f.needs == "disk" and not mounted) or (only and f.name not in only)]
                    # At production intervals every resolution outlasts RESOLVE_WITHIN: each
                    # group then waits for all of its own.
                    results = catalogue.run_schedule(stack, rendered, disk_dir=disk if mounted else None, skip=skip,
                                                     resolve_within=catalogue.RESOLVE_WITHIN if fast else None,
                                                     log=log)
                    for result in results.values():
                        for m in result.measurements:
                            measured[f"{m.fault}/{m.alert}/{m.organization or '-'}"] = {
                                "page_s": m.page_s, "resolve_s": m.resolve_s, "channels": list(m.channels),
                                "bound_page": m.bound.page, "bound_resolve": m.bound.resolve,
                                "firing_count": m.firing_count,
                                "unexpected_critical": sorted({n for msg in result.unexpected_critical
                                                               for n in msg.get("alertnames") or []})}
                finally:
                    runner.stop()
                    background.join(10)
        finally:
            if mounted:
                subprocess.run(["umount", str(disk)], capture_output=True, timeout=30, check=False)
    return measured


def run_catalogue(measure: bool = True, production: bool = False, only: Sequence[str] = (),
                  fast: bool = True) -> Result:
    """The catalogue's bounds at ``--fast`` and production intervals, and (``measure``)
    the measured seconds beside them: fast unless ``fast`` is false, production when
    asked (hours for the whole catalogue; ``only`` names the faults to run)."""
    started = time.monotonic()
    from examples.demo import faults as catalogue

    result = Result(
        key="fault_latency",
        title="5b. Every fault of the catalogue: seconds to the page per channel, to the resolution",
        method=("examples/demo/faults.py injects each fault into the local stack (background demo traffic for "
                "acme and jambo) and reverts it once it paged. Bound: worst case computed from the rendered "
                "configuration (scrape, evaluation, the rule's window, `for`, `keep_firing_for`, the route's "
                "`group_wait`/`group_interval`, the health check, the app's own memory). Measured: seconds "
                "from the injection to each channel's page, and from the revert to the Slack and email "
                "resolution."),
        header=["fault", "alert", "intervals", "channels", "page s measured (slack/email/sms)", "page bound s",
                "resolve s measured (slack/email)", "resolve bound s"],
    )
    modes = [True, False]
    wanted = {True: fast, False: production}
    measured = {mode: (measure_catalogue(mode, only=only) if measure and wanted[mode] else {}) for mode in modes}
    for mode in modes:
        rendered = catalogue.render_configs(mode)
        for fault in catalogue.FAULTS:
            for expect in fault.expects:
                try:
                    bound = catalogue.bounds(fault, expect, rendered)
                except KeyError as exc:
                    result.notes.append(f"{fault.name}: {exc}")
                    continue
                channels = catalogue.channels_for(rendered, expect.severity, expect.alert)
                got = measured[mode].get(f"{fault.name}/{expect.alert}/{expect.organization or '-'}", {})

                def shown(values: dict[str, float] | None, wanted: tuple[str, ...], got: dict[str, Any] = got) -> str:
                    if not got:
                        return "not measured"
                    return "/".join(fmt(values[c], 1) if c in (values or {}) else "**none**" for c in wanted)

                result.rows.append([fault.name, f"{expect.alert}({expect.organization or '-'})",
                                    "--fast" if mode else "production", ", ".join(channels),
                                    shown(got.get("page_s"), channels), fmt(bound.page, 0),
                                    shown(got.get("resolve_s"), tuple(c for c in channels if c != "sms")),
                                    fmt(bound.resolve, 0)])
    result.data = {"measured": {("fast" if k else "production"): v for k, v in measured.items()}}
    result.seconds = time.monotonic() - started
    return result


if __name__ == "__main__":
    main()
