"""The compose stack for real: ./deploy-monitoring.sh under a private Docker engine.

Docker Hub is out of reach, so the pinned images are stand-ins built from Debian
packages with the pinned names (tests/docker/images.py); the compose files are used as
they are, with one override that swaps Grafana's image only: Grafana cannot be had
here, and its stand-in (grafana-mount-probe) only proves that its mounts, secrets and
volume are readable and writable as uid 472. The engine (examples/demo/docker_engine.py)
runs its containers in its own network namespace; "the Docker host" there (what
host.docker.internal reaches) is this test: PostgreSQL, the demo app, a Daraja
simulator, the fake SMS provider and the Slack and dead-man's-switch recorders all run
in that namespace, on its loopback, reached from the containers through a DNAT of
their ports on the namespace's docker0 address.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from examples.demo.docker_engine import DockerEngine
from examples.demo.servers import ManagedProcess, PostgresServer, RecordingHTTPServer, SMTPSink, free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
import docker_images as images  # noqa: E402  (tests/docker_images.py)

pytestmark = [pytest.mark.docker, pytest.mark.slow]

DOCKER_HOST_IP = "172.17.0.1"   # docker0 in the engine's namespace: host-gateway
PROJECT = "mpesa-monitoring"
SERVICES = ["prometheus", "alertmanager", "grafana", "sms-relay", "node-exporter",
            "postgres-exporter"]
PASSWORD = "compose-test-Prom.pass"


def _say(text: str) -> None:
    print(f"[compose-docker] {text}", flush=True)


def _copy_repo(target: Path) -> Path:
    shutil.copytree(ROOT, target, ignore=shutil.ignore_patterns(
        ".git", "__pycache__", ".pytest_cache", "secrets", ".local-stack", "*.egg-info",
        ".env.monitoring", "bench", "build"))
    return target


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DockerEngine, Path]]:
    if os.geteuid() != 0:
        pytest.fail("the compose test needs root (a private dockerd, namespaces)")
    for tool in ("dockerd", "debootstrap", "unshare", "nsenter", "iptables"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} missing: scripts/test.sh installs docker.io and debootstrap")
    engine = DockerEngine()
    left = engine.cleanup()
    if left:
        _say(f"cleaned up what a killed run left: {left}")
    repo = _copy_repo(tmp_path_factory.mktemp("compose") / "repo")
    try:
        engine.start("build")
        for line in images.build_all(engine, repo):
            _say(line)
        engine.stop()
        engine.start("run")
        left = _forget_previous_runs(engine)
        if left:
            _say(f"removed what a previous run of the stack left: {', '.join(left)}")
        _say("GRAFANA IS A STAND-IN: grafana-mount-probe only proves Grafana's mounts, "
             "secrets and volume as uid 472; Grafana itself is not run here")
        yield engine, repo
    finally:
        engine.stop()
    left = engine.leftovers()
    assert not left, f"the engine left: {left}"


def _forget_previous_runs(engine: DockerEngine) -> list[str]:
    """Remove the project's containers, networks and volumes left in the cached data root.

    The data root is kept between runs for its images, and with it the named volumes
    that `--down` rightly keeps. A previous run's Alertmanager notification log would
    then say that this run's alert group was already sent to Slack and the relay (within
    its repeat interval Alertmanager sends it to no one again), and Prometheus would
    start with that run's samples: each run starts from empty volumes instead.
    """
    label = f"label=com.docker.compose.project={PROJECT}"
    removed = []
    for kind, listing in (("container", ["ps", "-aq"]), ("network", ["network", "ls", "-q"]),
                          ("volume", ["volume", "ls", "-q"])):
        ids = engine.docker(*listing, "--filter", label).stdout.split()
        if ids:
            remove = ["rm", "-f"] if kind == "container" else [kind, "rm"]
            engine.docker(*remove, *ids)
            removed.append(f"{len(ids)} {kind}(s)")
    return removed


def _in_ns(engine: DockerEngine, *argv: str, check: bool = True, timeout: float = 60) -> str:
    result = subprocess.run(engine.nsenter(list(argv)), capture_output=True, text=True, timeout=timeout)
    if check:
        assert result.returncode == 0, f"{argv}: {result.stdout}{result.stderr}"
    return result.stdout


def _expose_to_containers(engine: DockerEngine, port: int) -> None:
    """host.docker.internal:port -> 127.0.0.1:port, in the engine's namespace only."""
    _in_ns(engine, "iptables", "-t", "nat", "-I", "PREROUTING", "-d", f"{DOCKER_HOST_IP}/32",
           "-p", "tcp", "--dport", str(port), "-j", "DNAT", "--to-destination", f"127.0.0.1:{port}")


def _http(url: str, *, auth: tuple[str, str] | None = None, data: Any = None,
          timeout: float = 5) -> tuple[int, bytes]:
    request = urllib.request.Request(url, method="POST" if data is not None else "GET")
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    body = None
    if data is not None:
        body = json.dumps(data).encode()
        request.add_header("Content-Type", "application/json")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, body, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


class HostSide:
    """What runs on "the Docker host" (inside the engine's namespace)."""

    def __init__(self, engine: DockerEngine, base: Path) -> None:
        self.engine = engine
        self.pg = PostgresServer(settings={"listen_addresses": "127.0.0.1"})
        self.provider = RecordingHTTPServer(default_body=json.dumps({"SMSMessageData": {
            "Message": "Sent to 1/1", "Recipients": [{"number": "+254700000001", "status": "Success",
                                                      "statusCode": 101, "cost": "KES 0.8",
                                                      "messageId": "ATXid_1"}]}}))
        self.slack = RecordingHTTPServer()
        self.watchdog = RecordingHTTPServer()
        # No AUTH offered: Go's SMTP client (Alertmanager) refuses to send a password over
        # a connection without TLS to a host other than localhost, and the sink has no TLS.
        self.smtp = SMTPSink(accept_auth=False)
        self.sim_port = free_port()
        self.sim = ManagedProcess([sys.executable, "-m", "examples.demo.daraja_sim", "--port", str(self.sim_port)],
                                  cwd=ROOT, log_path=base / "daraja-sim.log", name="daraja-sim",
                                  env={"PYTHONPATH": str(ROOT)})
        self.app_port = free_port()
        self.app: ManagedProcess | None = None
        self.base = base

    def start(self) -> None:
        self.pg.start()
        # Containers connect from the compose network, not from 127.0.0.1.
        with open(self.pg.data_dir / "pg_hba.conf", "a") as hba:
            hba.write("host all all 172.16.0.0/12 scram-sha-256\n")
        subprocess.run(["runuser", "-u", "postgres", "--", str(self.pg.bin_dir / "pg_ctl"), "reload",
                        "-D", str(self.pg.data_dir)], check=True, capture_output=True, timeout=30)
        for server in (self.provider, self.slack, self.watchdog, self.smtp):
            server.start()
        self.sim.start()
        from examples.demo.servers import GunicornServer
        self.app = GunicornServer("examples.demo.app:create_app()", workers=1, port=self.app_port,
                                  cwd=ROOT, base_dir=self.base / "app", ready_path="/health",
                                  multiproc_dir=self.base / "app-multiproc", env={
                                      "PYTHONPATH": str(ROOT),
                                      "DATABASE_URL": self.pg.dsn,
                                      "DARAJA_BASE_URL": f"http://127.0.0.1:{self.sim_port}",
                                      "MPESA_MONITOR_DARAJA_BASE_URL": f"http://127.0.0.1:{self.sim_port}",
                                      "DEMO_PUBLIC_URL": f"http://127.0.0.1:{self.app_port}",
                                      "MPESA_MONITOR_METRICS_TOKEN": "compose-test-metrics-token",
                                      "MPESA_MONITOR_HEALTH_INTERVAL": "5"})
        wait_until(lambda: _http(f"http://127.0.0.1:{self.sim_port}/sim/config")[0] == 200, timeout=30,
                   interval=0.5, description="the Daraja simulator")
        self.app.start()
        # Loopback as a DNAT target: allowed in this namespace only.
        _in_ns(self.engine, "sysctl", "-q", "-w", "net.ipv4.conf.all.route_localnet=1")
        for port in (self.pg.port, self.app_port, self.provider.port, self.slack.port, self.watchdog.port,
                     self.smtp.port):
            _expose_to_containers(self.engine, port)

    def stop(self) -> None:
        for server in (self.app, self.sim, self.provider, self.slack, self.watchdog, self.smtp, self.pg):
            if server is not None:
                try:
                    server.stop()
                except Exception as exc:  # keep stopping the others
                    _say(f"stopping {server!r}: {exc}")


def _settings(host: HostSide) -> dict[str, str]:
    return {
        "COMPOSE_PROJECT_NAME": PROJECT,
        "MPESA_APP_TARGETS": f"host.docker.internal:{host.app_port}",
        "ALERTMANAGER_SMTP_FROM": "alertmanager@mpesa-monitor.test",
        "ALERTMANAGER_SMTP_SMARTHOST": f"{DOCKER_HOST_IP}:{host.smtp.port}",
        "ALERTMANAGER_SMTP_USERNAME": "alertmanager@mpesa-monitor.test",
        "ALERTMANAGER_SMTP_REQUIRE_TLS": "false",
        "ALERTMANAGER_EMAIL_TO_CRITICAL": "oncall@mpesa-monitor.test",
        "ALERTMANAGER_EMAIL_TO_HIGH": "oncall@mpesa-monitor.test",
        # Alertmanager and the relay have no host.docker.internal (no extra_hosts, and no
        # DNS in this namespace): they reach "external" services by address.
        "ALERTMANAGER_WATCHDOG_URL": f"http://{DOCKER_HOST_IP}:{host.watchdog.port}/ping",
        "SMS_RELAY_PROVIDER": "africastalking",
        "SMS_RELAY_AT_USERNAME": "sandbox",
        "SMS_RELAY_RECIPIENTS": "+254700000001",
        "SMS_RELAY_BASE_URL": f"http://{DOCKER_HOST_IP}:{host.provider.port}",
        "POSTGRES_EXPORTER_DATA_SOURCE_URI": f"host.docker.internal:{host.pg.port}/{host.pg.database}?sslmode=disable",
        "POSTGRES_EXPORTER_USER": host.pg.user,
        "NODE_EXPORTER_LISTEN_ADDRESS": DOCKER_HOST_IP,
        "GRAFANA_BIND_ADDRESS": "127.0.0.1",
        "MONITORING_DOMAIN": "monitoring.mpesa-monitor.test",
        "MONITORING_VERIFY_TIMEOUT": "150",
    }


def _write_config(repo: Path, host: HostSide) -> Path:
    env = repo / ".env.monitoring"
    overrides = _settings(host)
    lines = []
    for line in (repo / ".env.monitoring.example").read_text().splitlines():
        key = line.split("=", 1)[0]
        if key in overrides:
            line = f"{key}={overrides.pop(key)}"
        lines.append(line)
    lines += [f"{k}={v}" for k, v in overrides.items()]
    env.write_text("\n".join(lines) + "\n")
    secrets = repo / "deploy" / "secrets"
    secrets.mkdir(parents=True, exist_ok=True)
    values = {"prometheus_password": PASSWORD, "mpesa_metrics_token": "compose-test-metrics-token",
              "grafana_admin_password": "compose-test-grafana",
              "slack_api_url": f"http://{DOCKER_HOST_IP}:{host.slack.port}/slack",
              "smtp_password": "compose-test-smtp", "sms_provider_secret": "compose-test-at-key",
              "postgres_exporter_password": host.pg.password}
    for name, value in values.items():
        (secrets / name).write_text(value + "\n")
    return env


def _override(engine: DockerEngine) -> None:
    """Grafana's pinned name on its stand-in, in this engine's data root only.

    The compose files stay exactly as committed (the deploy's own checks read them:
    the dashboards SDK pin follows the Grafana version they name).
    """
    engine.docker("tag", images.GRAFANA_PROBE, images.pinned_images()["grafana"])


def _deploy(engine: DockerEngine, repo: Path, *args: str, timeout: float = 420) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/root"),
           "LANG": "C.UTF-8", "DOCKER_HOST": engine.host, "PYTHONPATH": str(repo)}
    result = subprocess.run(engine.nsenter(["./deploy-monitoring.sh", *args]), cwd=repo, env=env,
                            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    _say(f"deploy-monitoring.sh {' '.join(args)} -> {result.returncode}\n"
         f"{result.stdout[-3000:]}{result.stderr[-2000:]}")
    return result


def _health(engine: DockerEngine) -> dict[str, str]:
    out = engine.docker("ps", "-a", "--filter", f"label=com.docker.compose.project={PROJECT}", "--format",
                        '{{.Label "com.docker.compose.service"}} {{.Status}}').stdout
    return {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in out.splitlines() if line}


def _logs(engine: DockerEngine, service: str) -> str:
    ids = engine.docker("ps", "-aq", "--filter", f"label=com.docker.compose.service={service}").stdout.split()
    out = ""
    for cid in ids[:1]:
        result = engine.docker("logs", cid, check=False)
        out += result.stdout + result.stderr
    return out


def test_compose_stack_under_a_real_engine(engine: tuple[DockerEngine, Path], tmp_path: Path) -> None:
    docker, repo = engine
    _override(docker)
    with docker.inside():
        host = HostSide(docker, tmp_path)
        try:
            host.start()
            _write_config(repo, host)
            _run_the_stack(docker, repo, host)
        finally:
            try:
                _deploy(docker, repo, "--down", timeout=180)
                _forget_previous_runs(docker)
            finally:
                host.stop()


def _run_the_stack(docker: DockerEngine, repo: Path, host: HostSide) -> None:
    auth = ("prometheus", PASSWORD)
    result = _deploy(docker, repo)
    health = _health(docker)
    assert result.returncode == 0, f"deploy failed; containers: {health}"
    assert "up and verified" in result.stdout
    assert "== building" not in result.stdout, "the relay image existed: nothing to build"
    for service in SERVICES:
        assert "(healthy)" in health.get(service, ""), f"{service}: {health.get(service)}"

    user = next(line.split("=", 1)[1] for line in (repo / ".env.monitoring").read_text().splitlines()
                if line.startswith("PROMETHEUS_BASIC_AUTH_USER="))
    auth = (user, PASSWORD)
    assert _http("http://127.0.0.1:9090/api/v1/rules")[0] == 401, "Prometheus without basic auth"
    status, body = _http("http://127.0.0.1:9090/api/v1/rules", auth=auth)
    assert status == 200
    groups = json.loads(body)["data"]["groups"]
    rule_files = {Path(g["file"]).name for g in groups}
    expected = {p.name for p in (repo / "deploy/prometheus/rules").glob("*.yml")}
    assert expected <= rule_files, f"rules not loaded: {expected - rule_files}"

    # MPESA_RUNBOOK_URL is empty: every alert links its section of the runbooks page this
    # Prometheus serves (PROMETHEUS_EXTERNAL_URL, localhost:9090 here), behind its basic auth.
    links = {rule["name"]: rule["annotations"]["runbook_url"]
             for group in groups for rule in group["rules"] if rule["type"] == "alerting"}
    assert len(links) > 20, links
    pages = {url.partition("#")[0] for url in links.values()}
    assert pages == {"http://localhost:9090/consoles/runbooks.html"}, pages
    (page,) = pages
    assert _http(page)[0] == 401, "the runbooks page without basic auth"
    status, body = _http(page, auth=auth)
    assert status == 200, body[:500]
    missing = [name for name, url in links.items() if f'id="{url.partition("#")[2]}"'.encode() not in body]
    assert not missing, f"no section on {page} for {missing}"
    assert "ok    runbooks  served by Prometheus" in result.stdout

    def targets() -> list[dict[str, Any]] | None:
        status, body = _http("http://127.0.0.1:9090/api/v1/targets", auth=auth)
        active = json.loads(body)["data"]["activeTargets"] if status == 200 else []
        return active if active and all(t["health"] == "up" for t in active) else None
    try:
        active = wait_until(targets, timeout=90, interval=3, description="every scrape target up")
    except TimeoutError:
        status, body = _http("http://127.0.0.1:9090/api/v1/targets", auth=auth)
        pytest.fail("targets not all up: " + json.dumps([(t["labels"]["job"], t["health"], t["lastError"])
                                                          for t in json.loads(body)["data"]["activeTargets"]]))
    jobs = {t["labels"]["job"] for t in active}
    assert {"mpesa-mcp", "prometheus", "alertmanager", "node-exporter", "postgres-exporter", "sms-relay"} <= jobs

    # Prometheus -> Alertmanager -> webhook: the always-firing Watchdog.
    try:
        host.watchdog.wait_for(path="/ping", timeout=120)
    except TimeoutError as exc:
        alerts = _http("http://127.0.0.1:9090/api/v1/alerts", auth=auth)[1][:1500]
        pytest.fail(f"{exc}\nPrometheus alerts: {alerts!r}\nalertmanager: {_logs(docker, 'alertmanager')[-3000:]}")
    # Alertmanager -> relay -> the fake provider: a critical alert.
    # A label of this run only: a group already notified (a state this test did not
    # make) cannot stand in for this run's notification.
    run = uuid.uuid4().hex[:12]
    alert = [{"labels": {"alertname": "ComposeTestCritical", "severity": "critical",
                         "service": "mpesa-mcp", "organization": "acme", "compose_run": run},
              "annotations": {"summary": "compose test alert", "description": "compose test"}}]
    assert _http("http://127.0.0.1:9093/api/v2/alerts", data=alert)[0] == 200
    try:
        (sms,) = host.provider.wait_for(path="/version1/messaging", timeout=150)[:1]
    except TimeoutError as exc:
        am = [line for line in _logs(docker, "alertmanager").splitlines() if "level=INFO" not in line]
        relay = [line for line in _logs(docker, "sms-relay").splitlines() if "/metrics" not in line]
        status = _http("http://127.0.0.1:9093/api/v2/alerts")[1][:3000]
        pytest.fail(f"{exc}\nalertmanager alerts: {status!r}\nalertmanager: {am[-15:]}\nrelay: {relay[-15:]}\n"
                    f"slack: {host.slack.received()}\nmail: {len(host.smtp.messages)} message(s)")
    assert "ComposeTestCritical" in sms.body.decode(errors="replace") or b"compose" in sms.body
    # The receiver's other integrations: Slack and email, for this run's alert.
    # (the stack's own alerts may reach Slack too: look for this one)
    wait_until(lambda: [r for r in host.slack.received(path="/slack") if b"ComposeTestCritical" in r.body],
               timeout=60, interval=1, description=f"Slack: ComposeTestCritical ({host.slack.received()})")
    try:
        wait_until(lambda: [m for m in host.smtp.messages if "ComposeTestCritical" in m.subject + m.body],
                   timeout=60, interval=1, description="email: ComposeTestCritical")
    except TimeoutError as exc:
        am = [line for line in _logs(docker, "alertmanager").splitlines() if "email" in line]
        pytest.fail(f"{exc}\nmail: {host.smtp.log_tail()}\nalertmanager: {am[-5:]}")
    relay_log = _logs(docker, "sms-relay")
    lines = [line for line in relay_log.splitlines() if line.strip()]
    # Checked at the end, so that a relay logging twice does not hide the rest.
    duplicated = sorted({line for line in lines if lines.count(line) > 1})
    probe_log = _logs(docker, "grafana")
    assert "all readable and writable" in probe_log, probe_log
    _say("grafana service: stand-in grafana-mount-probe (NOT Grafana) reported: "
         + " | ".join(probe_log.splitlines()[-2:]))

    prod = _deploy(docker, repo, "--prod")
    assert prod.returncode == 0, f"--prod failed; containers: {_health(docker)}"
    assert "(healthy)" in _health(docker).get("tls-proxy", ""), _health(docker)

    down = _deploy(docker, repo, "--down", "--prod")
    assert down.returncode == 0
    assert _health(docker) == {}, "containers left after --down"
    again = _deploy(docker, repo, "--down")
    assert again.returncode == 0 and again.stderr == "", again.stderr
    assert len(again.stdout.splitlines()) <= 1, again.stdout

    assert not duplicated, f"relay log lines printed more than once under gunicorn: {duplicated[:5]}"
