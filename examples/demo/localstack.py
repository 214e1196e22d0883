"""The whole monitoring stack on 127.0.0.1, without Docker: ``./deploy-monitoring.sh --local``.

Starts, each as a plain process: PostgreSQL (or SQLite), the Daraja simulator, the inbox
(Slack, SMTP and SMS provider stand-ins), the SMS relay, the demo app under gunicorn with
2 workers and multiprocess metrics, Prometheus and Alertmanager; then runs the traffic
generator and prints a live status line until Ctrl-C (or ``--duration`` seconds).
Everything it keeps lives under ``.local-stack/``: configs, secrets, logs, metric files,
Prometheus' and Alertmanager's data, and PostgreSQL's data when the ``postgres`` user can
reach that directory (a clone under ``/root`` is private to root: the cluster then lives
under /tmp and ``.local-stack/pids.json`` records where, so that ``--down`` removes it).

Configs are rendered from the same files as production, ``deploy/prometheus`` and
``deploy/alertmanager``: only addresses, receiver URLs and secrets change (no Docker
service names, no secret files). With ``fast`` (the end-to-end tests, or ``--fast``),
scrape and evaluation run every second instead of every 15, Alertmanager groups wait one
second, and deploy/render.py divides every duration of the rules (windows, offsets,
``for:``, ``keep_firing_for:``, counts per window) by ``FAST_FACTOR`` (15): the same
rules on a 15 times faster clock. Alert links point at the local stack: runbooks (of the
rules and of the app's own alerts) at the inbox's ``/runbooks``, which serves the
checkout's docs/runbooks.md, dashboards at the inbox's dashboards view.

    python -m examples.demo.localstack [--fast] [--duration SECONDS] [--database sqlite]
    python -m examples.demo.localstack --down
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import yaml

from examples.demo.dashboards import ALERTS_PATHS, GRAPH_PATHS, TARGETS_PATHS
from examples.demo.inbox_views import first_page
from examples.demo.servers import (
    AlertmanagerServer,
    GunicornServer,
    ManagedProcess,
    PostgresServer,
    PrometheusServer,
    find_pg_bin,
    free_port,
    http_json,
    wait_http,
    wait_until,
)

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
DEFAULT_STATE = REPO / ".local-stack"
ORGANIZATIONS = ("acme", "jambo", "duka", "safari")

#: Preferred ports for the interactive stack (a free one is taken when one is busy).
DEFAULT_PORTS = {"app": 8000, "simulator": 8081, "inbox": 8025, "smtp": 2525, "relay": 9099,
                 "prometheus": 9090, "alertmanager": 9093}


def _port(preferred: int | None) -> int:
    import socket

    if preferred:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", preferred))
                return preferred
            except OSError:
                pass
    return free_port()


def _load_render() -> Any:
    """deploy/render.py (a script, not a package: the deploy host runs it with plain python3)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("deploy_render", DEPLOY / "render.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("deploy_render", module)
    spec.loader.exec_module(module)
    return module


render = _load_render()
#: Every rule duration is divided by this in fast mode (15 s scrapes -> 1 s).
FAST_FACTOR: int = render.FAST_FACTOR
#: The app's scrape job here: the committed prometheus.yml's, which the rules select and
#: the dashboards view substitutes for ``$job``.
APP_JOB: str = render.DEFAULT_JOB


def postgres_base_dir(state_dir: Path) -> Path | None:
    """``state_dir/postgres`` when the ``postgres`` user can reach it (initdb refuses to
    run as root, so the server runs as that user); None (a directory under /tmp) when a
    parent is private to root, as for a clone under /root."""
    if os.geteuid() != 0:
        return Path(state_dir) / "postgres"
    state_dir.mkdir(parents=True, exist_ok=True)
    reachable = subprocess.run(["runuser", "-u", "postgres", "--", "test", "-x", str(state_dir)],
                               capture_output=True, timeout=10).returncode == 0
    if not reachable:
        return None
    shutil.rmtree(Path(state_dir) / "postgres", ignore_errors=True)  # a killed run's cluster
    return Path(state_dir) / "postgres"


def alertmanager_has_ui(url: str) -> bool:
    """True when this Alertmanager serves its web UI (Debian's build does not: its page
    says it "does not include a web application")."""
    try:
        answer = requests.get(url.rstrip("/") + "/", timeout=2)
    except requests.RequestException:
        return False
    return answer.status_code == 200 and "does not include" not in answer.text


def render_rules(target: Path, fast: bool, slo_objective: float | None = None,
                 inbox_url: str | None = None) -> list[Path]:
    """deploy/prometheus/rules rendered by deploy/render.py: time divided by
    :data:`FAST_FACTOR` when ``fast``; given ``inbox_url``, links to the runbooks the inbox
    serves and to its dashboards view (there is no Grafana here), else to the checkout's
    runbooks file."""
    if inbox_url:
        links = render.Links(runbooks=f"{inbox_url}/runbooks", dashboards=f"{inbox_url}/dashboards", style="inbox")
    else:
        links = render.Links(style="inbox")
    return render.render_rules(target, factor=FAST_FACTOR if fast else 1, links=links,
                               slo_objective=None if slo_objective is None else str(slo_objective))


def render_prometheus(ports: dict[str, int], rules_dir: Path, token_file: Path, fast: bool) -> dict[str, Any]:
    """deploy/prometheus/prometheus.yml with local addresses; jobs of absent services dropped."""
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    interval = "1s" if fast else config["global"].get("scrape_interval", "15s")
    config["global"].update(scrape_interval=interval, evaluation_interval=interval,
                            scrape_timeout="1s" if fast else config["global"].get("scrape_timeout", "10s"),
                            external_labels={"cluster": "local", "environment": "local", "replica": "local-0"})
    config["rule_files"] = [str(rules_dir / "*.yml")]
    for alertmanagers in config["alerting"]["alertmanagers"]:
        alertmanagers["static_configs"] = [{"targets": [f"127.0.0.1:{ports['alertmanager']}"]}]
    local_targets = {APP_JOB: ports["app"], "prometheus": ports["prometheus"],
                     "alertmanager": ports["alertmanager"], "sms-relay": ports["relay"]}
    jobs = []
    for job in config["scrape_configs"]:
        name = job["job_name"]
        if name not in local_targets:
            continue  # node-exporter, postgres-exporter: not run locally
        job.pop("file_sd_configs", None)
        job.pop("basic_auth", None)  # the local Prometheus has no web.yml
        job["static_configs"] = [{"targets": [f"127.0.0.1:{local_targets[name]}"]}]
        if "authorization" in job:
            job["authorization"]["credentials_file"] = str(token_file)
        jobs.append(job)
    config["scrape_configs"] = jobs
    return config


def _shorten_route(route: dict[str, Any]) -> None:
    for key in ("group_wait", "group_interval"):
        if key in route:
            route[key] = "1s"
    for child in route.get("routes", []):
        _shorten_route(child)


def render_alertmanager(ports: dict[str, int], fast: bool) -> dict[str, Any]:
    """deploy/alertmanager/alertmanager.yml pointed at the inbox and the local relay."""
    config = yaml.safe_load((DEPLOY / "alertmanager" / "alertmanager.yml").read_text())
    inbox = f"http://127.0.0.1:{ports['inbox']}"
    glob = config["global"]
    for key in ("smtp_auth_username", "smtp_auth_password_file", "slack_api_url_file"):
        glob.pop(key, None)
    glob.update(smtp_smarthost=f"127.0.0.1:{ports['smtp']}", smtp_require_tls=False,
                slack_api_url=f"{inbox}/slack/local-stack")
    config["templates"] = [str(DEPLOY / "alertmanager" / "templates" / "*.tmpl")]
    if fast:
        config["route"]["group_wait"] = config["route"]["group_interval"] = "1s"
        _shorten_route(config["route"])
    for receiver in config["receivers"]:
        for webhook in receiver.get("webhook_configs", []):
            if receiver["name"] == "watchdog":
                webhook["url"] = f"{inbox}/watchdog"
            else:
                webhook["url"] = f"http://127.0.0.1:{ports['relay']}/alerts"
                webhook.pop("http_config", None)  # the local relay takes no token
    return config


@dataclass
class LocalStack:
    """Every process of the local stack; ``start()``/``stop()``; a context manager."""

    state_dir: Path = DEFAULT_STATE
    fast: bool = False
    database: str = "postgres"  # or "sqlite"
    quiet: bool = True
    fixed_ports: bool = False
    app_env: dict[str, str] = field(default_factory=dict)
    #: Extra gunicorn arguments, e.g. ``["--worker-class", "gthread", "--threads", "8"]``.
    app_args: list[str] = field(default_factory=list)
    ports: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir)
        self.processes: list[Any] = []
        self.postgres: PostgresServer | None = None
        self.prometheus: PrometheusServer | None = None
        self.alertmanager: AlertmanagerServer | None = None
        self.app: GunicornServer | None = None
        self.simulator: ManagedProcess | None = None
        self.inbox: ManagedProcess | None = None
        self.relay: ManagedProcess | None = None
        self.metrics_token = secrets.token_urlsafe(24)

    # --- addresses ----------------------------------------------------------------
    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    @property
    def runbook_url(self) -> str:
        """Where every alert of this stack links its runbook section: the inbox's copy of
        docs/runbooks.md (``#<alertname in lower case>`` appended)."""
        return self.url("inbox") + "/runbooks"

    @property
    def urls(self) -> dict[str, str]:
        """What a person can open, each address asked of the running program: Debian's
        Prometheus 2.42 serves only its classic pages (``/classic/alerts``), 3.x serves
        ``/alerts``; Debian's Alertmanager has no web UI, so its alerts and silences are
        shown by the inbox (and by amtool)."""
        prometheus = self.url("prometheus")
        pages = {kind: first_page(prometheus, paths) or paths[-1]
                 for kind, paths in (("alerts", ALERTS_PATHS), ("graph", GRAPH_PATHS), ("targets", TARGETS_PATHS))}
        alertmanager = self.url("alertmanager")
        if alertmanager_has_ui(alertmanager):
            alertmanager_page = alertmanager + "/#/alerts"
        else:
            alertmanager_page = (self.url("inbox") + "/alertmanager  (no web UI in this build; or: amtool "
                                 f"--alertmanager.url={alertmanager} alert query)")
        return {
            "demo app": self.url("app"),
            "app metrics": (self.url("app") + "/metrics  (bearer token in "
                            f"{self.state_dir / 'secrets' / 'metrics_token'})"),
            "app health": self.url("app") + "/health/detailed",
            "Daraja simulator": self.url("simulator") + "/sim/config",
            "inbox (Slack, email, SMS)": self.url("inbox") + "/",
            "dashboards (no Grafana)": self.url("inbox") + "/dashboards",
            "runbooks": self.runbook_url,
            "SMS relay": self.url("relay") + "/-/healthy",
            "Prometheus alerts": prometheus + pages["alerts"],
            "Prometheus graph": prometheus + pages["graph"],
            "Prometheus targets": prometheus + pages["targets"],
            "Alertmanager": alertmanager_page,
        }

    # --- lifecycle ----------------------------------------------------------------
    def render(self) -> None:
        for name in DEFAULT_PORTS:
            if name not in self.ports:
                self.ports[name] = _port(DEFAULT_PORTS[name] if self.fixed_ports else None)
        config_dir = self.state_dir / "config"
        secrets_dir = self.state_dir / "secrets"
        for directory in (config_dir, secrets_dir, self.state_dir / "logs"):
            directory.mkdir(parents=True, exist_ok=True)
        token_file = secrets_dir / "metrics_token"
        token_file.write_text(self.metrics_token)
        token_file.chmod(0o600)
        (secrets_dir / "at_api_key").write_text("local-inbox-key")
        rules = render_rules(config_dir / "rules", self.fast, inbox_url=self.url("inbox"))
        self.rule_files = rules
        self.prometheus_config = render_prometheus(self.ports, config_dir / "rules", token_file, self.fast)
        (config_dir / "prometheus.yml").write_text(yaml.safe_dump(self.prometheus_config, sort_keys=False))
        self.alertmanager_config = render_alertmanager(self.ports, self.fast)
        (config_dir / "alertmanager.yml").write_text(yaml.safe_dump(self.alertmanager_config, sort_keys=False))

    def prometheus_args(self) -> list[str]:
        """Prometheus' flags beyond the server's own: the external URL makes each alert's
        "Source" link (generatorURL) an address that works here, not the host name."""
        extra = [f"--web.external-url={self.url('prometheus')}"]
        return extra + (["--rules.alert.resend-delay=1s"] if self.fast else [])

    def _python(self, name: str, module: str, *args: str, env: dict[str, str] | None = None) -> ManagedProcess:
        process = ManagedProcess([sys.executable, "-m", module, *args], env={"PYTHONPATH": str(REPO), **(env or {})},
                                 cwd=REPO, log_path=self.state_dir / "logs" / f"{name}.log", name=name)
        process.start()
        self.processes.append(process)
        return process

    def start(self) -> LocalStack:
        self.render()
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        self._write_pids()
        return self

    def app_environment(self, database_url: str) -> dict[str, str]:
        """The demo app's environment: its database, the local Daraja simulator and
        Alertmanager, the runbooks the inbox serves, time on the fast clock when ``fast``."""
        return {
            "PYTHONPATH": str(REPO),
            "DATABASE_URL": database_url,
            "DARAJA_BASE_URL": self.url("simulator"),
            "DEMO_PUBLIC_URL": self.url("app"),
            "DEMO_ORGANIZATIONS": ",".join(ORGANIZATIONS),
            "MPESA_MONITOR_METRICS_TOKEN": self.metrics_token,
            "MPESA_MONITOR_ALERTMANAGER_URL": self.url("alertmanager"),
            # The app's own alerts link the same runbooks as the rules' (none by default).
            "MPESA_MONITOR_RUNBOOK_URL": self.runbook_url,
            "MPESA_MONITOR_DARAJA_BASE_URL": self.url("simulator"),
            "MPESA_MONITOR_HEALTH_INTERVAL": "1" if self.fast else "15",
            "MPESA_MONITOR_STK_CALLBACK_TIMEOUT": "20" if self.fast else "120",
            # The simulator posts callbacks from loopback; production keeps Safaricom's list only.
            "MPESA_MONITOR_CALLBACK_ALLOWED_IPS": "safaricom,127.0.0.0/8,::1",
            # The traffic generator stands for the reverse proxy in front of the app: its
            # X-Forwarded-For is believed, so the app sees each client's address.
            "MPESA_MONITOR_CALLBACK_TRUSTED_PROXIES": "127.0.0.1,::1",
            # The suspicious-IP window on the fast clock too (900 s / 15), so that
            # AuthenticationBruteForce resolves within its bound.
            "MPESA_MONITOR_AUTH_FAILURE_WINDOW": "60" if self.fast else "900",
            **self.app_env,
        }

    def _start(self) -> None:
        quiet = ["--quiet"] if self.quiet else []
        if self.database == "postgres":
            self.postgres = PostgresServer(postgres_base_dir(self.state_dir), stat_statements=False)
            self.postgres.start()
            self.processes.append(self.postgres)
            database_url = self.postgres.dsn
        else:
            database_url = "sqlite:///" + str(self.state_dir / "demo.sqlite3")
        self.simulator = self._python("simulator", "examples.demo.daraja_sim", "--port", str(self.ports["simulator"]),
                                      *quiet)
        self.inbox = self._python("inbox", "examples.demo.inbox", "--http-port", str(self.ports["inbox"]),
                                  "--smtp-port", str(self.ports["smtp"]), "--prometheus-url", self.url("prometheus"),
                                  "--alertmanager-url", self.url("alertmanager"),
                                  "--organizations", self.app_env.get("DEMO_ORGANIZATIONS", ",".join(ORGANIZATIONS)),
                                  "--job", APP_JOB, *quiet)
        self.relay = self._python("sms-relay", "flask_mpesa_monitor.sms_relay", env={
            "SMS_RELAY_PROVIDER": "africastalking", "SMS_RELAY_RECIPIENTS": "+254700000001,+254700000002",
            "SMS_RELAY_BASE_URL": self.url("inbox"), "SMS_RELAY_AT_USERNAME": "sandbox",
            "SMS_RELAY_AT_API_KEY_FILE": str(self.state_dir / "secrets" / "at_api_key"),
            "SMS_RELAY_HOST": "127.0.0.1", "SMS_RELAY_PORT": str(self.ports["relay"]),
            "SMS_RELAY_DEDUP_SECONDS": "3600"})  # per incident: a new incident is always texted
        for name, path in (("simulator", "/sim/config"), ("inbox", "/api/stats"), ("relay", "/-/healthy")):
            wait_http(self.url(name) + path, timeout=20)
        self.app = GunicornServer("examples.demo.app:create_app()", workers=2, env=self.app_environment(database_url),
                                  port=self.ports["app"], multiproc_dir=self.state_dir / "prometheus-multiproc",
                                  base_dir=self.state_dir / "gunicorn", cwd=REPO, ready_path="/health",
                                  extra_args=self.app_args)
        self.app.start()
        self.processes.append(self.app)
        self.alertmanager = AlertmanagerServer(self.state_dir / "config" / "alertmanager.yml",
                                               port=self.ports["alertmanager"],
                                               base_dir=self.state_dir / "alertmanager")
        self.alertmanager.start()
        self.processes.append(self.alertmanager)
        self.prometheus = PrometheusServer(self.state_dir / "config" / "prometheus.yml", port=self.ports["prometheus"],
                                           base_dir=self.state_dir / "prometheus", extra_args=self.prometheus_args())
        self.prometheus.start()
        self.processes.append(self.prometheus)
        self._wait_until_scraping()

    def _wait_until_scraping(self) -> None:
        """Ready means Prometheus scrapes the app. Prometheus 2.42 applies new targets
        about 5 s after start; until then ``MPesaMCPDown`` (whose ``for:`` is short in
        fast mode) may fire and would inhibit every other alert of the app."""
        assert self.prometheus is not None

        def ready() -> bool:
            if self.prometheus.value(f'min(up{{job="{APP_JOB}"}})') != 1:
                return False
            return not any(a["labels"].get("alertname") == "MPesaMCPDown" for a in self.prometheus.alerts())

        wait_until(ready, timeout=60, interval=0.5, description="Prometheus scraping the demo app")

    def stop(self) -> None:
        for process in reversed(self.processes):
            try:
                process.stop()
            except Exception as exc:  # keep stopping the others
                print(f"could not stop {process!r}: {exc}", file=sys.stderr)
        if self.postgres is not None:
            self.postgres.cleanup()
            shutil.rmtree(self.postgres.base_dir, ignore_errors=True)
        self.processes.clear()
        (self.state_dir / "pids.json").unlink(missing_ok=True)

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _write_pids(self) -> None:
        pids = [p.pid for p in (self.simulator, self.inbox, self.relay) if p is not None and p.pid]
        for server in (self.app, self.alertmanager, self.prometheus):
            if server is not None and server.process is not None and server.process.pid:
                pids.append(server.process.pid)
        record = {"pids": pids, "postgres_data": str(self.postgres.data_dir) if self.postgres else None,
                  "postgres_dir": str(self.postgres.base_dir) if self.postgres else None,
                  "owner": os.getpid()}
        (self.state_dir / "pids.json").write_text(json.dumps(record))

    # --- what is happening ----------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """Targets up, alerts firing and notifications received per channel."""
        status: dict[str, Any] = {"targets_up": 0, "targets": 0, "firing": [], "received": {}}
        try:
            targets = self.prometheus.targets() if self.prometheus else []
            status["targets"] = len(targets)
            status["targets_up"] = sum(1 for t in targets if t.get("health") == "up")
            status["firing"] = sorted({a["labels"]["alertname"] for a in self.prometheus.alerts()
                                       if a.get("state") == "firing" and a["labels"]["alertname"] != "Watchdog"})
        except Exception:
            pass
        try:
            status["received"] = http_json("GET", self.url("inbox") + "/api/stats", timeout=2)["received"]
        except Exception:
            pass
        return status

    def status_line(self) -> str:
        s = self.status()
        received = " ".join(f"{k} {v}" for k, v in s["received"].items()) or "-"
        firing = ", ".join(s["firing"]) or "none"
        return f"targets up {s['targets_up']}/{s['targets']} | firing: {firing} | received: {received}"


def down(state_dir: Path = DEFAULT_STATE) -> int:
    """Stop the processes of a stack started by another shell (``--down``)."""
    record_path = Path(state_dir) / "pids.json"
    if not record_path.exists():
        print("no local stack is running (no .local-stack/pids.json)")
        return 0
    record = json.loads(record_path.read_text())
    for pid in [record.get("owner"), *record["pids"]]:
        if not pid:
            continue
        try:
            os.killpg(pid, signal.SIGTERM) if pid != record.get("owner") else os.kill(pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
    if record.get("postgres_data"):
        import subprocess

        command = [str(find_pg_bin() / "pg_ctl"), "-D", record["postgres_data"], "-m", "fast", "stop"]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, capture_output=True, timeout=30)
    if record.get("postgres_dir"):
        shutil.rmtree(record["postgres_dir"], ignore_errors=True)
    record_path.unlink(missing_ok=True)
    print("local stack stopped")
    return 0


#: Traffic runs this long when no ``--duration`` is given: in effect until Ctrl-C.
UNTIL_STOPPED = 30 * 86400.0


class StatusPrinter:
    """The status line: redrawn in place on a terminal; in a log, a line only when it
    changes (so a log of a quiet day stays short)."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.last: str | None = None

    def show(self, line: str) -> None:
        if self.tty:
            self.stream.write("\r" + line.ljust(120))
        elif line != self.last:
            self.stream.write(line + "\n")
        self.stream.flush()
        self.last = line

    def say(self, text: str) -> None:
        self.stream.write(("\n" if self.tty and self.last is not None else "") + text + "\n")
        self.stream.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="deploy-monitoring.sh --local", description=__doc__.split("\n\n")[0])
    parser.add_argument("--down", action="store_true", help="stop a stack started from another shell")
    parser.add_argument("--fast", action="store_true",
                        help="1 s scrapes and evaluations, every rule duration divided by 15")
    parser.add_argument("--duration", type=float, default=None,
                        help="stop after this many seconds (default: run until Ctrl-C or --down)")
    parser.add_argument("--rps", type=float, default=5.0, help="demo requests per second")
    parser.add_argument("--database", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE)
    args = parser.parse_args(argv)
    if args.down:
        return down(args.state_dir)
    if args.duration is not None and args.duration <= 0:
        parser.error(f"--duration must be a positive number of seconds, got {args.duration}")

    from .traffic import TrafficConfig, _Runner, configure_simulator

    stack = LocalStack(args.state_dir, fast=args.fast, database=args.database, fixed_ports=True)
    stop = threading.Event()
    reason = {"why": ""}

    def on_signal(signum: int, _frame: Any) -> None:
        reason["why"] = f"received {signal.Signals(signum).name}"
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    printer = StatusPrinter()
    printer.say(f"starting the local stack (state in {args.state_dir}) ...")
    with stack:
        printer.say("\n".join(f"  {name:<28} {url}" for name, url in stack.urls.items()))
        printer.say("Grafana needs Docker and is not started here: every panel is listed, with its query, at\n"
                    f"  {stack.url('inbox')}/dashboards\n"
                    "Inject faults, e.g.:\n"
                    f"  curl -X POST {stack.url('simulator')}/sim/config -H 'Content-Type: application/json' "
                    "-d '{\"spike_arrest_ratio\": 0.3}'\n"
                    + (f"Runs for {args.duration:g} s" if args.duration else "Runs until stopped")
                    + ": Ctrl-C here, or ./deploy-monitoring.sh --down from another shell.")
        configure_simulator(stack.url("simulator"))  # Daraja as on a normal day
        runner = _Runner(TrafficConfig(stack.url("app"), duration=args.duration or UNTIL_STOPPED, rps=args.rps,
                                       orgs=ORGANIZATIONS, cross_tenant=False))
        worker = threading.Thread(target=runner.run, daemon=True)
        worker.start()
        try:
            while not stop.wait(2.0):
                if not worker.is_alive():
                    reason["why"] = (f"--duration {args.duration:g} s reached" if args.duration
                                     else "the traffic generator stopped (see its output above)")
                    break
                dead = [p for p in stack.processes if not getattr(p, "running", True)]
                if dead:
                    reason["why"] = f"{dead[0]!r} exited (logs in {args.state_dir / 'logs'})"
                    break
                printer.show(stack.status_line())
        except KeyboardInterrupt:
            reason["why"] = "Ctrl-C"
        finally:
            runner.stop()
            printer.say(f"stopping the local stack: {reason['why'] or 'interrupted'} ...")
    printer.say("local stack stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
