"""The catalogue of faults: what can go wrong, how to cause it, and which page it must give.

Why one table: the end-to-end tests (tests/test_e2e.py) and the alert-latency benchmark
(bench/bench_alert_latency.py) inject the same faults into the same local stack
(examples/demo/localstack.py) and hold them to the same promise: every fault raises its
alert(s) once per intended channel, nothing else critical pages, and every page
resolves after the fault is reverted, within a bound computed from the configuration.

Each :class:`Fault` says how it is injected and reverted (simulator switches at
``/sim/config``, PostgreSQL stopped or frozen, the app stopped, bursts of requests, SQL
that tampers with the audited rows, a full disk), which alerts it must raise
(:class:`Expect`: the alert, its organization, its declared severity) and which it must
not (``quiet``). Severity is checked against the rule and the channels come from the
Alertmanager routing (:func:`channels_for`): critical -> Slack, email and SMS; high ->
Slack and email; medium -> Slack.

Bounds (:func:`bounds`) are computed from the rendered configuration, so the same code
gives the ``--fast`` bound and the production one::

    page    <= counted + scrape + evaluation + fill + for + evaluation + group_wait (+ health check)
    resolve <= counted + clear + scrape + evaluation + keep_firing_for + evaluation + group_interval

``fill`` is the time the rule's expression needs to see the fault: 0 for a gauge or a
counted event (the new-series pattern of security.yml sees a first event at once), the
rule's longest current window (with its ``offset``) for a ratio or a rate. ``clear`` is
the time the expression keeps seeing it after the revert: the same window for a rate, a
health check's interval and timeout for a health gauge, and the app's own memory where
there is one (``Fault.app_memory_s``: the suspicious-IP window, the 300 s ``endsAt`` of
an app-side alert). ``counted`` is how late the app's counters show a change
(``Fault.counted_after_s``: a push is counted missing when its callback is overdue, so
the last pushes before the revert are counted one callback timeout after it). Windows of
a day or more are baselines, not fill (STKTimeoutSurge's day of history). Receivers' own
delivery time is not part of a bound.

Expectations that hold only once pending rule changes land carry ``pending`` (a short
reason); the tests check them all the same.

Faults of one ``group`` run together. :data:`SCHEDULE` orders the groups on one stack
and says which group may start while an earlier one waits for its resolutions
(:func:`run_schedule`); no two groups that run at the same time may expect the same
alert, and each group is judged against all the groups that ran beside it. Pages are
counted by :func:`pages`.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import yaml

__all__ = [
    "BACKGROUND_ORGS",
    "BRUTE_FORCE_IP",
    "E2E_ORGS",
    "FAULTS",
    "Expect",
    "Fault",
    "FaultContext",
    "GroupRun",
    "Measurement",
    "RESOLVE_WITHIN",
    "Rendered",
    "SCHEDULE",
    "Step",
    "alert_blocks",
    "app_env",
    "bounds",
    "by_name",
    "channels_for",
    "groups",
    "pages",
    "render_configs",
    "rule_of",
    "run_group",
    "run_schedule",
]

#: Organizations of the end-to-end stack: the background traffic, then one per tenant fault.
BACKGROUND_ORGS = ("acme", "jambo")
E2E_ORGS = BACKGROUND_ORGS + ("safari", "duka", "ngao", "pwani", "kilele", "tembo", "lento")
#: The one client address that guesses passwords in the brute-force fault.
BRUTE_FORCE_IP = "10.250.0.66"
#: Seconds the demo app waits for Daraja in the end-to-end stack (``DEMO_DARAJA_TIMEOUT``):
#: "Daraja slow" answers later than this, "high latency" just under it.
DARAJA_TIMEOUT_S = 8.0

CHANNELS = ("slack", "email", "sms")


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Expect:
    """An alert a fault must raise."""

    alert: str
    severity: str
    organization: str | None = None
    #: gauge: a value read at each scrape; event: a counted event; window: a ratio or rate
    #: over the rule's window.
    signal: str = "window"
    #: The value passes the app's background health check before it is scraped.
    health: bool = False
    #: Text the notification must contain (to tell apart alerts of one name: disk, cpu).
    text: str | None = None
    #: Non-empty: holds once these pending rule changes land.
    pending: str = ""
    #: The window that decides the page and the one that decides the resolution, when
    #: not the longest of the rule (an alert that ORs window pairs, as a burn rate does).
    fill_window: str | None = None
    clear_window: str | None = None


@dataclass(frozen=True)
class Fault:
    """One fault: how to cause and undo it, what must page, what must not."""

    name: str
    injected: str  # how, in words
    reverted: str
    inject: Callable[[FaultContext], None]
    revert: Callable[[FaultContext], None]
    expects: tuple[Expect, ...]
    #: Faults of one group run together in one stack: they do not interfere.
    group: str
    #: Alerts that must not page during this fault (beyond "nothing else critical").
    quiet: tuple[tuple[str, str], ...] = ()  # (alert, why it must stay quiet / what it needs)
    #: Seconds the app itself keeps the fault's trace after the revert.
    app_memory_s: Callable[[Rendered], float] = lambda rendered: 0.0
    #: Seconds from the injection (and from the revert) until the app's counters show the
    #: change: the fault's load loop waits one period before its first request, a call
    #: Daraja holds is counted when it ends, a push without its callback only once it is
    #: overdue.
    counted_after_s: Callable[[Rendered], float] = lambda rendered: 0.0
    #: Needs a stack made for it (gthread workers, a small disk); None: any stack.
    needs: str | None = None


class FaultContext:
    """The running stack as the faults see it: the simulator, clients, loops, files."""

    def __init__(self, stack: Any, disk_dir: Path | None = None) -> None:
        self.stack = stack
        self.disk_dir = disk_dir
        self._loops: dict[str, tuple[threading.Event, list[threading.Thread]]] = {}
        self._stopped_pids: list[int] = []
        self.stats: dict[str, dict[int, int]] = {}

    # -- the simulator
    def sim(self, settings: dict[str, Any]) -> None:
        answer = requests.post(self.stack.url("simulator") + "/sim/config", json=settings, timeout=5)
        answer.raise_for_status()

    # -- clients of the demo app
    def session(self, org: str, address: str | None = None) -> requests.Session:
        """A logged-in session of ``org`` (from ``address``, forwarded by the local proxy)."""
        session = requests.Session()
        if address:
            session.headers["X-Forwarded-For"] = address
        answer = session.post(self.stack.url("app") + "/login", json={
            "username": "demo", "password": "demo-password", "organization": org}, timeout=10)
        answer.raise_for_status()
        session.headers["Authorization"] = f"Bearer {answer.json()['token']}"
        return session

    def loop(self, name: str, org: str, action: str, every: float, threads: int = 1, limit: int = 5000) -> None:
        """Start ``threads`` loops of ``action`` ("push" or "balance") for ``org``, one
        request every ``every`` seconds each, at most ``limit`` each; :meth:`stop` ends them."""
        stop = threading.Event()
        stats = self.stats.setdefault(name, {})
        url = self.stack.url("app")

        def run(number: int) -> None:
            session = None
            for _ in range(limit):  # bounded in count; stopped by stop()
                if stop.wait(every):
                    return
                try:
                    session = session or self.session(org, f"10.200.{number}.{len(name) % 250 + 1}")
                    if action == "push":
                        status = session.post(f"{url}/orgs/{org}/stk-push", json={
                            "phone": "254700000042", "amount": 100}, timeout=DARAJA_TIMEOUT_S + 5).status_code
                    else:
                        status = session.get(f"{url}/orgs/{org}/balance", timeout=10).status_code
                except requests.RequestException:
                    status = 0
                    session = None
                stats[status] = stats.get(status, 0) + 1

        workers = [threading.Thread(target=run, args=(n,), daemon=True, name=f"fault-{name}-{n}")
                   for n in range(threads)]
        for worker in workers:
            worker.start()
        self._loops[name] = (stop, workers)

    def stop(self, name: str) -> None:
        stop, workers = self._loops.pop(name, (None, []))
        if stop is not None:
            stop.set()
        for worker in workers:
            worker.join(DARAJA_TIMEOUT_S + 10)

    def stop_all(self) -> None:
        for name in list(self._loops):
            self.stop(name)

    # -- PostgreSQL frozen: every process of the cluster stopped with SIGSTOP
    def freeze_postgres(self) -> None:
        import psutil

        pid = int((Path(self.stack.postgres.data_dir) / "postmaster.pid").read_text().split("\n", 1)[0])
        postmaster = psutil.Process(pid)
        pids = [pid] + [child.pid for child in postmaster.children(recursive=True)]
        for one in pids:
            os.kill(one, signal.SIGSTOP)
        self._stopped_pids = pids

    def thaw_postgres(self) -> None:
        for one in self._stopped_pids:
            try:
                os.kill(one, signal.SIGCONT)
            except ProcessLookupError:
                pass
        self._stopped_pids = []

    def sql(self, statement: str) -> None:
        self.stack.postgres.admin_execute(statement, database=self.stack.postgres.database)

    # -- the disk the app measures
    def fill_disk(self, ratio: float = 0.95) -> None:
        import shutil

        assert self.disk_dir is not None, "the disk fault needs a stack with a small disk"
        usage = shutil.disk_usage(self.disk_dir)
        size = max(0, int(usage.total * ratio) - usage.used)
        with open(self.disk_dir / "filler", "wb") as filler:
            filler.write(b"\0" * size)

    def empty_disk(self) -> None:
        if self.disk_dir is not None:
            (self.disk_dir / "filler").unlink(missing_ok=True)


def _normal_result_mix(ctx: FaultContext) -> None:
    from .traffic import NORMAL_DARAJA

    ctx.sim({"result_mix": NORMAL_DARAJA["result_mix"]})


def _brute_force(ctx: FaultContext) -> None:
    """Wrong passwords for one acme account from one address, 40 of them."""
    session = requests.Session()
    session.headers["X-Forwarded-For"] = BRUTE_FORCE_IP
    for number in range(40):
        session.post(ctx.stack.url("app") + "/login", json={
            "username": "demo", "password": f"guess-{number}", "organization": "acme"}, timeout=10)


def _rate_limit_burst(ctx: FaultContext) -> None:
    session = ctx.session("kilele")
    statuses = [session.get(ctx.stack.url("app") + "/orgs/kilele/balance", timeout=10).status_code
                for _ in range(30)]
    ctx.stats["rate_limit_burst"] = {429: statuses.count(429)}


def _cross_tenant(ctx: FaultContext) -> None:
    status = ctx.session("acme").get(ctx.stack.url("app") + "/orgs/jambo/transactions", timeout=10).status_code
    ctx.stats["cross_tenant"] = {status: 1}


def _tamper(ctx: FaultContext) -> None:
    ctx.session("acme").post(ctx.stack.url("app") + "/orgs/acme/stk-push",
                             json={"phone": "254700000042", "amount": 100}, timeout=15)
    ctx.sql("UPDATE transactions SET status = 'refunded' WHERE checkout_id IN "
            "(SELECT checkout_id FROM transactions WHERE status <> 'refunded' LIMIT 1)")


def _auth_window(rendered: Rendered) -> float:
    return float(rendered.app_env.get("MPESA_MONITOR_AUTH_FAILURE_WINDOW", 900))


def _callback_timeout(rendered: Rendered) -> float:
    return float(rendered.app_env.get("MPESA_MONITOR_STK_CALLBACK_TIMEOUT", 120))


def _app_alert_ends(rendered: Rendered) -> float:
    return 300.0  # the extension's app-side alerts carry endsAt = now + 300 s


_NOT_DARAJA_5XX = ("HighErrorRate", ("the app's 5xx answers to Daraja's refusals are Daraja's failures: "
                                     "MPesaAPIFailures inhibits HighErrorRate (alertmanager.yml)"))
_INHIBITED_BY_DATABASE = ("HighErrorRate", ("DatabaseDown inhibits HighErrorRate, and outlives the error ratio's "
                                            "window with keep_firing_for (rules)"))

FAULTS: tuple[Fault, ...] = (
    # ---- per-tenant and app-side faults: they do not interfere, one stack run ("tenants")
    # A push a second: at half refused, a window of 20 s (5m at --fast) with four pushes
    # has none refused one time in 16, and the page resolved and fired again while
    # spike arrest went on; twenty pushes keep the ratio over 10% (all but 1 in 5,000).
    Fault("spike_arrest", "simulator: orgs.safari.spike_arrest_ratio 0.5; safari pushes every second",
          "simulator: orgs.safari removed (pushes continue)",
          lambda c: (c.sim({"orgs": {"safari": {"spike_arrest_ratio": 0.5}}}), c.loop("safari", "safari", "push", 1.0)),
          lambda c: c.sim({"orgs": {"safari": None}}),
          (Expect("MPesaAPIFailures", "critical", "safari"),
           Expect("STKSuccessSLOBurnFast", "critical", fill_window="1h", clear_window="30m",
                  pending="the STK SLI counting pushes refused at initiation (rules)")),
          group="tenants", quiet=(_NOT_DARAJA_5XX,)),
    Fault("daraja_slow", f"simulator: orgs.tembo.slow {DARAJA_TIMEOUT_S + 2:g} s (the app waits "
          f"{DARAJA_TIMEOUT_S:g} s); tembo pushes", "simulator: orgs.tembo removed",
          lambda c: (c.sim({"orgs": {"tembo": {"slow": DARAJA_TIMEOUT_S + 2}}}), c.loop("tembo", "tembo", "push", 4.0)),
          lambda c: c.sim({"orgs": {"tembo": None}}),
          (Expect("MPesaAPIFailures", "critical", "tembo"),),
          group="tenants", needs="gthread", quiet=(_NOT_DARAJA_5XX,), counted_after_s=lambda r: DARAJA_TIMEOUT_S + 4.0),
    Fault("token_refresh_failures", "simulator: reject_consumer_keys [ngao-consumer-key]; ngao pushes",
          "simulator: reject_consumer_keys []",
          lambda c: (c.sim({"reject_consumer_keys": ["ngao-consumer-key"]}), c.loop("ngao", "ngao", "push", 5.0)),
          lambda c: c.sim({"reject_consumer_keys": []}),
          (Expect("TokenRefreshFailures", "critical", "ngao", signal="window"),),
          group="tenants", quiet=(_NOT_DARAJA_5XX,)),
    Fault("callbacks_lost", "simulator: orgs.duka.callbacks_lost 1.0; duka pushes every 2 s",
          "simulator: orgs.duka removed (pushes continue, callbacks flow again)",
          lambda c: (c.sim({"orgs": {"duka": {"callbacks_lost": 1.0}}}), c.loop("duka", "duka", "push", 2.0)),
          lambda c: c.sim({"orgs": {"duka": None}}),
          (Expect("STKCallbacksMissing", "high", "duka",
                  pending="resolution: STKCallbacksMissing on increase(mpesa_stk_callbacks_missing_total) (rules)"),),
          group="tenants", counted_after_s=lambda r: _callback_timeout(r) + 2.0),
    Fault("stk_timeouts_surge", "simulator: result_mix {1037: 1} for every tenant", "simulator: the normal result_mix",
          lambda c: c.sim({"result_mix": {"1037": 1.0}}), _normal_result_mix,
          # Its own run, late: the baseline (a day, 96 minutes at --fast) must be mostly
          # history from before the surge, which a stack of a few minutes does not have.
          (Expect("STKTimeoutSurge", "high"),), group="stk_timeouts"),
    Fault("cross_tenant_access", "an acme user reads /orgs/jambo/transactions once", "nothing to revert",
          _cross_tenant, lambda c: None,
          (Expect("CrossTenantAccessAttempt", "critical", "acme", signal="event"),),
          group="tenants", app_memory_s=_app_alert_ends),
    Fault("audit_tampering", "SQL: one transaction's status set to 'refunded' (a state the app never writes)",
          "SQL: the row set back to 'success'",
          _tamper, lambda c: c.sql("UPDATE transactions SET status = 'success' WHERE status = 'refunded'"),
          (Expect("AuditLogTampering", "critical", signal="gauge", health=True),), group="tenants",
          app_memory_s=_app_alert_ends),
    Fault("rate_limit_burst", "30 balance reads of kilele at once (limit 3 per minute per worker)",
          "nothing to revert (the burst is over)",
          _rate_limit_burst, lambda c: None,
          (Expect("RateLimitWarnings", "medium", "kilele", signal="event"),), group="tenants"),
    Fault("auth_brute_force", f"40 wrong passwords for acme from {BRUTE_FORCE_IP} (X-Forwarded-For through the "
          "trusted local proxy)", "nothing to revert (the app forgets after its window)",
          _brute_force, lambda c: None,
          (Expect("AuthenticationBruteForce", "high", signal="gauge", health=True, text=BRUTE_FORCE_IP,
                  pending="the per-IP brute-force rule (rules)"),),
          group="tenants", app_memory_s=_auth_window),
    Fault("high_latency", f"simulator: orgs.lento.slow {DARAJA_TIMEOUT_S - 2:g} s (under the app's Daraja timeout); "
          "lento pushes from 4 clients (gthread workers keep answering scrapes)", "simulator: orgs.lento removed",
          lambda c: (c.sim({"orgs": {"lento": {"slow": DARAJA_TIMEOUT_S - 2}}}),
                     c.loop("lento", "lento", "push", 0.5, threads=4)),
          lambda c: (c.sim({"orgs": {"lento": None}}), c.stop("lento")),
          (Expect("HighResponseTime", "high"),), group="tenants", needs="gthread",
          counted_after_s=lambda r: DARAJA_TIMEOUT_S - 2 + 0.5),
    Fault("disk_nearly_full", "a file fills the small tmpfs that MPESA_MONITOR_DISK_PATH measures to 95%",
          "the file removed",
          lambda c: c.fill_disk(0.95), lambda c: c.empty_disk(),
          (Expect("HighResourceUsage", "medium", signal="gauge", health=True, text="running out of disk"),),
          group="tenants", needs="disk"),
    # ---- faults of the whole app or of Daraja for everyone: one group at a time (SCHEDULE
    # starts the database faults while Daraja's outage waits for its resolutions)
    Fault("daraja_down", "simulator: down true (every Daraja endpoint answers 503)", "simulator: down false",
          lambda c: c.sim({"down": True}), lambda c: c.sim({"down": False}),
          tuple(Expect("MPesaAPIFailures", "critical", org) for org in BACKGROUND_ORGS)
          + (Expect("STKSuccessSLOBurnFast", "critical", fill_window="1h", clear_window="30m",
                    pending="the STK SLI counting pushes refused at initiation (rules)"),),
          group="daraja_down", quiet=(_NOT_DARAJA_5XX,)),
    Fault("database_down", "PostgreSQL stopped (pg_ctl stop -m fast)", "PostgreSQL started",
          lambda c: c.stack.postgres.stop(), lambda c: c.stack.postgres.start(),
          (Expect("DatabaseDown", "critical", signal="gauge", health=True),),
          group="database_down",
          quiet=(_INHIBITED_BY_DATABASE,)),
    Fault("database_hung", "every PostgreSQL process stopped with SIGSTOP (connections hang, nothing refuses)",
          "SIGCONT to the same processes",
          lambda c: c.freeze_postgres(), lambda c: c.thaw_postgres(),
          (Expect("DatabaseDown", "critical", signal="gauge", health=True),),
          group="database_hung",
          quiet=(_INHIBITED_BY_DATABASE,)),
    Fault("app_down", "the demo app's gunicorn stopped", "gunicorn started again",
          lambda c: c.stack.app.stop(), lambda c: c.stack.app.start(),
          (Expect("MPesaMCPDown", "critical", signal="gauge"),), group="app_down"),
)


def by_name(name: str) -> Fault:
    for fault in FAULTS:
        if fault.name == name:
            return fault
    raise KeyError(f"no fault {name!r}; known: {', '.join(f.name for f in FAULTS)}")


def groups(faults: Iterable[Fault] = FAULTS) -> dict[str, list[Fault]]:
    """Faults by stack run, in catalogue order."""
    found: dict[str, list[Fault]] = {}
    for fault in faults:
        found.setdefault(fault.group, []).append(fault)
    return found


def app_env(disk_path: Path | None = None, fast: bool = True) -> dict[str, str]:
    """The demo app's settings for a stack that can run every fault of the catalogue."""
    env = {
        "DEMO_ORGANIZATIONS": ",".join(E2E_ORGS),
        "DEMO_RATE_LIMITS": "kilele=3",
        "DEMO_DARAJA_TIMEOUT": f"{DARAJA_TIMEOUT_S:g}",
        # The suspicious-IP window shrinks with the rules in --fast (15 minutes / 15).
        "MPESA_MONITOR_AUTH_FAILURE_WINDOW": "60" if fast else "900",
        # A push is counted missing once its callback is this late (the local stack's own).
        "MPESA_MONITOR_STK_CALLBACK_TIMEOUT": "20" if fast else "120",
    }
    if disk_path is not None:
        env["MPESA_MONITOR_DISK_PATH"] = str(disk_path)
    return env


# --------------------------------------------------------------------------- configuration


@dataclass
class Rendered:
    """The configuration a stack runs with: rules, Prometheus, Alertmanager, app settings."""

    rules: list[dict[str, Any]]
    prometheus: dict[str, Any]
    alertmanager: dict[str, Any]
    health_interval: float
    health_timeout: float
    app_env: dict[str, str] = field(default_factory=dict)
    fast: bool = False
    factor: float = 1.0


def render_configs(fast: bool, env: dict[str, str] | None = None) -> Rendered:
    """Render the local stack's configuration (without starting anything) and read it."""
    import tempfile

    from flask_mpesa_monitor.config import SETTINGS

    from .localstack import LocalStack

    defaults = {s.key: s.default for s in SETTINGS}
    with tempfile.TemporaryDirectory(prefix="faults-render-") as tmp:
        stack = LocalStack(Path(tmp), fast=fast)
        stack.render()
        config = Path(tmp) / "config"
        rules = [yaml.safe_load(p.read_text()) for p in sorted((config / "rules").glob("*.yml"))]
        prometheus = yaml.safe_load((config / "prometheus.yml").read_text())
        alertmanager = yaml.safe_load((config / "alertmanager.yml").read_text())
    return Rendered(rules, prometheus, alertmanager, 1.0 if fast else float(defaults.get("HEALTH_INTERVAL", 15)),
                    float(defaults.get("HEALTH_TIMEOUT", 2.0)), dict(env or app_env(fast=fast)), fast,
                    _fast_factor() if fast else 1.0)


def _fast_factor() -> float:
    """The factor ``--fast`` divides durations by (deploy/render.py's, where it has one)."""
    try:
        from deploy import render
    except ImportError:
        return 15.0
    return float(getattr(render, "FAST_FACTOR", 15))


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, "y": 31536000.0}


def seconds(duration: Any, default: float = 0.0) -> float:
    """A Prometheus duration (``1m30s``, ``15s``, ``0m``, ``500ms``) in seconds."""
    if duration is None:
        return default
    if isinstance(duration, (int, float)):
        return float(duration)
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)", str(duration))
    return sum(float(n) * _UNITS[u] for n, u in parts) if parts else default


def rule_of(rendered: Rendered, alert: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(group, rule) of ``alert``; KeyError when the rules have no such alert."""
    for document in rendered.rules:
        for group in (document or {}).get("groups", []) or []:
            for rule in group.get("rules", []) or []:
                if rule.get("alert") == alert:
                    return group, rule
    raise KeyError(f"no alert {alert!r} in the rendered rules")


def _matches(route: dict[str, Any], labels: dict[str, str]) -> bool:
    for text in route.get("matchers", []) or []:
        match = re.fullmatch(r'\s*(\w+)\s*(=~|!~|!=|=)\s*"?(.*?)"?\s*', text)
        if not match:
            return False
        name, op, value = match.groups()
        actual = labels.get(name, "")
        ok = {"=": actual == value, "!=": actual != value, "=~": re.fullmatch(value, actual) is not None,
              "!~": re.fullmatch(value, actual) is None}[op]
        if not ok:
            return False
    return True


def route_of(rendered: Rendered, labels: dict[str, str]) -> dict[str, Any]:
    """The first matching route (receiver, group_wait, group_interval), timings inherited."""
    root = rendered.alertmanager["route"]
    settings = {"receiver": root.get("receiver"), "group_wait": root.get("group_wait", "30s"),
                "group_interval": root.get("group_interval", "5m")}

    def walk(route: dict[str, Any], inherited: dict[str, Any]) -> dict[str, Any]:
        here = {key: route.get(key, inherited[key]) for key in inherited}
        for child in route.get("routes", []) or []:
            if _matches(child, labels):
                return walk(child, here)
        return here

    return walk(root, settings)


def channels_for(rendered: Rendered, severity: str, alert: str = "X") -> tuple[str, ...]:
    """The channels a notification of ``severity`` reaches, read from the receivers."""
    receiver_name = route_of(rendered, {"alertname": alert, "severity": severity})["receiver"]
    receiver = next(r for r in rendered.alertmanager["receivers"] if r["name"] == receiver_name)
    found = []
    if receiver.get("slack_configs"):
        found.append("slack")
    if receiver.get("email_configs"):
        found.append("email")
    if any("/alerts" in str(w.get("url", "")) for w in receiver.get("webhook_configs", []) or []):
        found.append("sms")
    return tuple(found)


_GUARD = re.compile(r"present_over_time\([^\[]*\[[^\]]*\]\s*(?:offset\s+[0-9a-z]+)?\)")


def _expanded(expr: str, rendered: Rendered, depth: int = 0) -> str:
    """``expr`` with the expressions of the recording rules it reads appended."""
    if depth > 4:
        return expr
    records = {rule["record"]: str(rule["expr"]) for document in rendered.rules
               for group in (document or {}).get("groups", []) or [] for rule in group.get("rules", []) or []
               if "record" in rule}
    extra = [_expanded(records[name], rendered, depth + 1) for name in set(re.findall(r"[A-Za-z_:][\w:]*", expr))
             if name in records]
    return "\n".join([expr, *extra])


def _windows(expr: str, baseline: float = 86400.0) -> float:
    """The longest current window of an expression, with its offset (seconds). Left out:
    windows of a day or more (baselines) and the ``present_over_time(up[1h])`` guard of
    the new-series pattern (it decides whether a target is trusted, not what is counted)."""
    expr = _GUARD.sub("", expr)
    longest = 0.0
    for match in re.finditer(r"\[([0-9a-z]+)(?::[0-9a-z]*)?\]\s*(?:offset\s+([0-9a-z]+))?", expr):
        window = seconds(match.group(1))
        if window >= baseline:
            continue
        longest = max(longest, window + seconds(match.group(2)))
    for match in re.finditer(r"offset\s+([0-9a-z]+)", expr):  # an offset on an instant selector
        longest = max(longest, seconds(match.group(1)))
    return longest


@dataclass(frozen=True)
class Bound:
    page: float
    resolve: float
    detail: str


def bounds(fault: Fault, expect: Expect, rendered: Rendered) -> Bound:
    """Worst-case seconds from the fault to the page, and from the revert to the
    resolution, for one expected alert (see the module's docstring)."""
    group, rule = rule_of(rendered, expect.alert)
    glob = rendered.prometheus.get("global", {})
    scrape = seconds(glob.get("scrape_interval"), 60)
    evaluation = seconds(group.get("interval"), seconds(glob.get("evaluation_interval"), 60))
    for_ = seconds(rule.get("for"))
    keep = seconds(rule.get("keep_firing_for"))
    route = route_of(rendered, {"alertname": expect.alert, "severity": expect.severity})
    group_wait, group_interval = seconds(route["group_wait"]), seconds(route["group_interval"])
    window = _windows(_expanded(str(rule.get("expr", "")), rendered), 86400.0 / rendered.factor)
    health = rendered.health_interval + rendered.health_timeout if expect.health else 0.0
    fill = seconds(expect.fill_window, window) if expect.signal == "window" else 0.0
    clear = (seconds(expect.clear_window, window) if expect.signal in ("window", "event") else 0.0) + health
    if rendered.fast and expect.fill_window:  # the override is written at production time
        fill = seconds(expect.fill_window) / rendered.factor
    if rendered.fast and expect.clear_window:
        clear = seconds(expect.clear_window) / rendered.factor + health
    clear = max(clear, fault.app_memory_s(rendered) + health)
    counted = fault.counted_after_s(rendered)
    page = counted + scrape + evaluation + fill + for_ + evaluation + group_wait + health
    resolve = counted + clear + scrape + evaluation + keep + evaluation + group_interval
    detail = (f"scrape {scrape:g}s, eval {evaluation:g}s, window {window:g}s, for {for_:g}s, keep {keep:g}s, "
              f"group_wait {group_wait:g}s, group_interval {group_interval:g}s"
              + (f", health {health:g}s" if health else "")
              + (f", app memory {fault.app_memory_s(rendered):g}s" if fault.app_memory_s(rendered) else "")
              + (f", counted after {counted:g}s" if counted else ""))
    return Bound(page, resolve, detail)


# --------------------------------------------------------------------------- running faults

#: Resolutions whose wait (bound x slack + margin) is longer than this are not waited
#: for before the next group starts; :func:`run_schedule` collects them later, each
#: within its own wait (the app-side alerts end 300 s after they were sent, whatever the
#: rules say).
RESOLVE_WITHIN = 240.0


@dataclass
class Measurement:
    """What one expected alert did: seconds to the page per channel, to the resolution."""

    fault: str
    alert: str
    organization: str | None
    channels: tuple[str, ...]
    bound: Bound
    pending: str = ""
    page_s: dict[str, float] = field(default_factory=dict)
    resolve_s: dict[str, float] = field(default_factory=dict)
    firing_count: dict[str, int] = field(default_factory=dict)
    #: The notifications about it, one line each (seconds from the injection, channel,
    #: status, the first line of each alert block): what a failed count is read from.
    notifications: list[str] = field(default_factory=list)
    #: Its resolution is waited for after its group's (its wait is over RESOLVE_WITHIN).
    deferred: bool = False
    #: For a page that did not come or came more than once, what Prometheus saw (each
    #: ALERTS series with the seconds it fired; the organization's Daraja calls by outcome).
    evidence: list[str] = field(default_factory=list)

    @property
    def flawed(self) -> bool:
        return not self.paged or any(n > 1 for n in self.firing_count.values())

    @property
    def paged(self) -> bool:
        return all(c in self.page_s for c in self.channels)

    @property
    def resolved(self) -> bool:
        return all(c in self.resolve_s for c in self.channels if c != "sms")


def inbox_messages(stack: Any, since: float = 0.0) -> list[dict[str, Any]]:
    answer = requests.get(f"{stack.url('inbox')}/api/messages", params={"since": since, "limit": 2000}, timeout=10)
    answer.raise_for_status()
    return answer.json()["messages"]


def about(message: dict[str, Any], expect: Expect) -> bool:
    names = message.get("alertnames") or [message.get("alertname")]
    if expect.alert not in names:
        return False
    if expect.organization is not None and message.get("organization") != expect.organization:
        return False
    return expect.text is None or expect.text in message.get("text", "")


#: How the Slack and email templates open each alert of a notification:
#: ``*FIRING* <summary>`` (Slack), ``FIRING: <summary>`` (email), or RESOLVED.
_ALERT_HEAD = re.compile(r"^\*?(FIRING|RESOLVED)(?:\*|:)\s")


def alert_blocks(text: str) -> list[tuple[str, str]]:
    """(status, text) of each alert of a notification, in the order the template lists
    them; empty for a text without such heads (an SMS)."""
    blocks: list[list[str]] = []
    for line in text.splitlines():
        head = _ALERT_HEAD.match(line.strip())
        if head:
            blocks.append([head.group(1).lower(), line.strip()])
        elif blocks:
            blocks[-1][1] += "\n" + line
    return [(status, body) for status, body in blocks]


def _fires_in(message: dict[str, Any], expect: Expect) -> bool:
    """The notification is a firing one about ``expect``; for an alert told apart by its
    text, that alert's own block is firing (not another alert of its group)."""
    if message.get("status") != "firing" or not about(message, expect):
        return False
    if expect.text is None:
        return True
    blocks = alert_blocks(message.get("text", ""))
    return not blocks or any(status == "firing" and expect.text in body for status, body in blocks)


def pages(messages: Iterable[dict[str, Any]], expect: Expect, channel: str) -> int:
    """How many times ``expect`` paged on ``channel``.

    Every firing notification about it counts, except a notification of its group
    (alertname, organization) that Alertmanager sent because *another* alert of the group
    started or ended while this one kept firing: that is the other alert's. Such a
    neighbour is ``HighResourceUsage`` of CPU beside the disk's, or a second series of the
    same alert (MPesaMCPDown from ``absent()`` beside ``up == 0``) that ends at once. The
    same notification sent again unchanged, or this alert firing again after it was not,
    counts.
    """
    ordered = sorted((m for m in messages if m["channel"] == channel), key=lambda m: m["received_ts"])
    count, previous = 0, None
    for message in ordered:
        names = message.get("alertnames") or [message.get("alertname")]
        if expect.alert not in names or (expect.organization is not None
                                         and message.get("organization") != expect.organization):
            continue  # another notification group
        signature = sorted((status, body.splitlines()[0]) for status, body in alert_blocks(message.get("text", "")))
        fires = _fires_in(message, expect)
        if fires and (previous is None or not previous[0] or previous[1] == signature):
            count += 1
        previous = (fires, signature)
    return count


@dataclass
class GroupResult:
    measurements: list[Measurement]
    unexpected_critical: list[dict[str, Any]]
    quiet_broken: list[tuple[str, str, str]]  # (fault, alert, why it should be quiet)
    started: float
    stats: dict[str, Any]


class GroupRun:
    """One group of the catalogue on a running stack, step by step: :meth:`inject`,
    :meth:`wait_pages`, :meth:`revert`, :meth:`wait_resolutions`, :meth:`close`, then
    :meth:`result`. In steps so that :func:`run_schedule` can run another group while
    this one waits for its resolutions.

    Waits are bounded by the computed bound times ``slack`` plus ``margin`` seconds;
    a notification that arrives after its wait does not count, whenever it is read.
    Resolutions whose wait is over ``resolve_within`` are ``deferred``: waited for with
    ``wait_resolutions(deferred=True)``.
    """

    def __init__(self, stack: Any, faults: list[Fault], rendered: Rendered, *, disk_dir: Path | None = None,
                 slack: float = 1.5, margin: float = 20.0, resolve_within: float | None = None,
                 log: Callable[[str], None] = print) -> None:
        self.stack, self.faults, self.log = stack, list(faults), log
        self.slack, self.margin = slack, margin
        self.ctx = FaultContext(stack, disk_dir)
        self.expects = [(f, e) for f in self.faults for e in f.expects]
        self.measurements = [Measurement(f.name, e.alert, e.organization, channels_for(rendered, e.severity, e.alert),
                                         bounds(f, e, rendered), e.pending) for f, e in self.expects]
        for m in self.measurements:
            m.deferred = resolve_within is not None and self.resolve_wait(m) > resolve_within
        self.started = self.injected = self.paged_until = self.reverted = 0.0
        #: When each fault's own injection and revert began: its page and resolution
        #: count from there (the group's last injection may come seconds later, after
        #: the first fault's page).
        self.injected_at: dict[str, float] = {}
        self.reverted_at: dict[str, float] = {}
        self.judged_until: float | None = None
        self._injected: list[Fault] = []
        self._deferred_waited = False

    @property
    def name(self) -> str:
        return self.faults[0].group if self.faults else "-"

    def keys(self) -> set[tuple[str, str | None, str | None]]:
        """What tells this group's pages from others': two groups that share a key must not overlap."""
        return {(e.alert, e.organization, e.text) for _, e in self.expects}

    def resolve_wait(self, m: Measurement) -> float:
        return m.bound.resolve * self.slack + self.margin

    def inject(self) -> None:
        self.started = time.time()
        for fault in self.faults:
            self.log(f"inject {fault.name}: {fault.injected}")
            self._injected.append(fault)  # reverted even when its injection fails half-way
            self.injected_at[fault.name] = time.time()
            fault.inject(self.ctx)
        self.injected = time.time()

    def _poll(self, status: str, since: Callable[[Measurement], float], deadlines: dict[int, float],
              target: dict[int, dict[str, float]]) -> None:
        """Seconds from ``since(m)`` to each wanted notification (index -> its deadline),
        received after its fault's injection (a resolution may come before the revert: a
        burst that is over by itself) and before its deadline."""
        last = max(deadlines.values())
        for _ in range(100_000):  # bounded in count; ends at the last deadline
            messages = inbox_messages(self.stack, self.started)
            for index, deadline in deadlines.items():
                m, (_, e) = self.measurements[index], self.expects[index]
                origin, injected = since(m), self.injected_at.get(m.fault, self.started)
                for msg in messages:
                    if (msg.get("status") == status and msg["channel"] in m.channels
                            and injected <= msg["received_ts"] <= deadline and about(msg, e)):
                        seen = target.setdefault(index, {})
                        value = round(msg["received_ts"] - origin, 1)
                        seen[msg["channel"]] = min(value, seen.get(msg["channel"], value))
            missing = [i for i in deadlines if any(c not in target.get(i, {}) for c in self.measurements[i].channels
                                                   if status == "firing" or c != "sms")]
            if not missing or time.time() >= last:
                return
            time.sleep(0.5)

    def wait_pages(self) -> None:
        deadline = self.injected + max(m.bound.page for m in self.measurements) * self.slack + self.margin
        found: dict[int, dict[str, float]] = {}
        self._poll("firing", lambda m: self.injected_at.get(m.fault, self.injected),
                   {i: deadline for i in range(len(self.measurements))}, found)
        for index, m in enumerate(self.measurements):
            m.page_s = found.get(index, {})
            self.log(f"  {m.fault}: {m.alert}({m.organization or '-'}) page {m.page_s} (bound {m.bound.page:.0f}s)")
        self.paged_until = time.time()

    def revert(self) -> None:
        """Undo what was injected (all of it, or as far as :meth:`inject` came)."""
        for fault in self._injected:
            self.log(f"revert {fault.name}: {fault.reverted}")
            self.reverted_at[fault.name] = time.time()
            fault.revert(self.ctx)
        self._injected = []
        self.reverted = time.time()

    def wait_resolutions(self, deferred: bool = False) -> None:
        """Wait for the resolutions of the pages that came (the deferred ones, or the
        others); the others share the group's longest wait, a deferred one has its own."""
        if deferred and self._deferred_waited:
            return
        self._deferred_waited = self._deferred_waited or deferred
        wanted = [i for i, m in enumerate(self.measurements) if m.deferred == deferred and m.paged]
        if not wanted:
            return
        longest = max(self.resolve_wait(self.measurements[i]) for i in wanted)
        deadlines = {i: self.reverted + (self.resolve_wait(self.measurements[i]) if deferred else longest)
                     for i in wanted}
        found: dict[int, dict[str, float]] = {}
        self._poll("resolved", lambda m: self.reverted_at.get(m.fault, self.reverted), deadlines, found)
        for index in wanted:
            m = self.measurements[index]
            m.resolve_s = found.get(index, {})
            self.log(f"  {m.fault}: {m.alert}({m.organization or '-'}) resolved {m.resolve_s} "
                     f"(bound {m.bound.resolve:.0f}s)")

    def close(self) -> None:
        """The group's own time ends: its load loops stop; pages are judged up to now."""
        self.ctx.stop_all()
        if self.judged_until is None:
            self.judged_until = time.time()

    def result(self, runs: Iterable[GroupRun] = ()) -> GroupResult:
        """Pages counted from the injection to :meth:`close`; a critical page (or any SMS)
        in that time that neither this group nor another one running then (``runs``)
        expects is unexpected; so is a page of an alert a fault declares quiet."""
        until = self.judged_until if self.judged_until is not None else time.time()
        window = [msg for msg in inbox_messages(self.stack, self.started) if msg["received_ts"] <= until]
        for m, (_, e) in zip(self.measurements, self.expects):
            m.firing_count = {c: pages(window, e, c) for c in m.channels}
            m.notifications = [
                f"+{msg['received_ts'] - self.started:.1f}s {msg['channel']} {msg.get('status')}: "
                + " | ".join(f"{status} {body.splitlines()[0][:80]}" for status, body
                             in alert_blocks(msg.get("text", "")))
                for msg in sorted(window, key=lambda msg: msg["received_ts"]) if about(msg, e)]
            if m.flawed:
                m.evidence = prometheus_evidence(self.stack.prometheus, e, self.started, until)
        others = [r for r in runs if r is not self]

        def expected(msg: dict[str, Any]) -> bool:
            if any(about(msg, e) for _, e in self.expects):
                return True
            return any(r.started <= msg["received_ts"] <= (r.judged_until or until)
                       and any(about(msg, e) for _, e in r.expects) for r in others)

        unexpected = [msg for msg in window if msg.get("status") == "firing"
                      and (msg["channel"] == "sms" or msg.get("severity") == "critical") and not expected(msg)]
        quiet_broken = []
        for fault in self.faults:
            for alert, why in fault.quiet:
                if any(alert in (msg.get("alertnames") or []) and msg.get("status") == "firing" for msg in window):
                    quiet_broken.append((fault.name, alert, why))
        return GroupResult(self.measurements, unexpected, quiet_broken, self.started, self.ctx.stats)


def prometheus_evidence(prometheus: Any, expect: Expect, start: float, end: float) -> list[str]:
    """What Prometheus saw of ``expect`` from ``start`` to ``end``: every ALERTS series of
    the alert (its labels, the seconds from ``start`` it was firing) and, for a tenant's
    alert, the tenant's Daraja calls by operation and outcome. Best effort: a failed
    query becomes a line saying so."""
    selector = f'alertname="{expect.alert}"' + (f',organization="{expect.organization}"'
                                                 if expect.organization else "")
    lines: list[str] = []
    step = max(1.0, (end - start) / 2000)  # a second, or 2,000 points for a long run
    try:
        series = prometheus.api("query_range", {"query": f'ALERTS{{{selector},alertstate="firing"}}',
                                                "start": start, "end": end, "step": step})["result"]
        for s in series:
            labels = {k: v for k, v in s["metric"].items() if k not in ("__name__", "alertname", "alertstate")}
            spans: list[list[float]] = []  # [first, last] second of each run of steps
            for ts, _ in s["values"]:
                t = float(ts) - start
                if spans and t - spans[-1][1] <= 1.5 * step:
                    spans[-1][1] = t
                else:
                    spans.append([t, t])
            lines.append(f"ALERTS {labels} firing " + ", ".join(f"+{a:.0f}..+{b:.0f}s" for a, b in spans))
        if expect.organization:
            calls = prometheus.query(
                f'sum by (operation, outcome) (increase(mpesa_api_calls_total{{organization="{expect.organization}"}}'
                f'[{max(int(end - start), 1)}s]))', end)
            lines.append("Daraja calls: " + ", ".join(
                f"{c['metric'].get('operation')}/{c['metric'].get('outcome')} {float(c['value'][1]):.0f}"
                for c in sorted(calls, key=lambda c: sorted(c["metric"].items()))))
    except Exception as exc:  # evidence for a failure message must not hide the failure
        lines.append(f"(Prometheus evidence unavailable: {type(exc).__name__}: {exc})")
    return lines


def run_group(stack: Any, faults: list[Fault], rendered: Rendered, *, disk_dir: Path | None = None,
              slack: float = 1.5, margin: float = 20.0, resolve_within: float | None = None,
              log: Callable[[str], None] = print) -> GroupResult:
    """Inject ``faults`` together, wait for each page, revert, wait for each resolution
    (but the deferred ones, over ``resolve_within``: left to the caller)."""
    run = GroupRun(stack, faults, rendered, disk_dir=disk_dir, slack=slack, margin=margin,
                   resolve_within=resolve_within, log=log)
    try:
        run.inject()
        run.wait_pages()
        run.revert()
        run.wait_resolutions()
    finally:
        run.close()
    return run.result()


@dataclass(frozen=True)
class Step:
    """A group's place in the run of the whole catalogue on one stack (:data:`SCHEDULE`)."""

    group: str
    #: Start while this earlier group waits for its resolutions (its faults reverted):
    #: the two share no alert, and this group's faults do not hold back that group's
    #: resolutions. Without it, a group starts once every earlier one has resolved (but
    #: the deferred resolutions).
    during: str | None = None
    #: Start only when no page of an earlier group waits for its resolution, deferred
    #: ones included: MPesaMCPDown inhibits every other alert of the app, and a
    #: resolution that falls in an inhibition is never sent.
    alone: bool = False


#: The order in which the end-to-end tests and the benchmark run the groups on one stack.
SCHEDULE: tuple[Step, ...] = (
    Step("tenants"),
    Step("daraja_down"),
    # PostgreSQL stopped or frozen fails no Daraja call and makes no STK SLI error (the
    # monitor counts callbacks when its table is unavailable, and Daraja's answers are
    # the normal mix): Daraja's outage resolves as it would alone. Its burn-rate page
    # waits about 2 minutes for the 30m window (2 minutes at --fast) to forget it.
    Step("database_down", during="daraja_down"),
    Step("database_hung", during="daraja_down"),
    # Late: the 1d baseline (96 minutes at --fast) must be mostly history from before
    # the surge, which the stack has only after a few minutes.
    Step("stk_timeouts"),
    Step("app_down", alone=True),
)


def run_schedule(stack: Any, rendered: Rendered, steps: Iterable[Step] = SCHEDULE, *,
                 faults: Iterable[Fault] = FAULTS, disk_dir: Path | None = None, skip: Iterable[str] = (),
                 slack: float = 1.5, margin: float = 20.0, resolve_within: float | None = RESOLVE_WITHIN,
                 log: Callable[[str], None] = print) -> dict[str, GroupResult]:
    """Every group of ``steps`` on one stack, overlapping where a step says so; every
    resolution waited for (deferred ones last, or before an ``alone`` step). Returns
    each group's result, judged against the groups that ran at the same time."""
    by_group = groups(faults)
    skipped = set(skip)
    runs: list[GroupRun] = []
    open_runs: list[GroupRun] = []  # reverted, main resolutions not waited for yet

    def finish(run: GroupRun) -> None:
        try:
            run.wait_resolutions()
        finally:
            run.close()
            open_runs.remove(run)

    try:
        for step in steps:
            chosen = [f for f in by_group.get(step.group, []) if f.name not in skipped]
            if not chosen:
                continue
            for run in list(open_runs):
                if run.name != step.during:
                    finish(run)
            if step.alone:
                for run in runs:
                    run.wait_resolutions(deferred=True)
            run = GroupRun(stack, chosen, rendered, disk_dir=disk_dir, slack=slack, margin=margin,
                           resolve_within=resolve_within, log=log)
            for other in open_runs:
                shared = run.keys() & other.keys()
                if shared:
                    raise ValueError(f"{step.group} cannot run during {other.name}: both page "
                                     f"{sorted(map(str, shared))}")
            runs.append(run)
            open_runs.append(run)
            try:
                run.inject()
                run.wait_pages()
            finally:
                run.revert()
        for run in list(open_runs):
            finish(run)
        for run in runs:
            run.wait_resolutions(deferred=True)
    finally:
        for run in open_runs:
            run.close()
    return {run.name: run.result(runs) for run in runs}
