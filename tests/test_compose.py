"""The compose stack as code and deploy-monitoring.sh, checked without a Docker engine.

docker-compose 1.29 (Debian) validates and merges the files for real; the deploy script
runs for real in a temporary copy of the repository, with ``docker``/``docker-compose``
replaced by small recording stand-ins (there is no Docker engine here) and the
services' health endpoints and the app played by local HTTP recorders, so that the
refusal, the rendering and the verification logic are all exercised.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from examples.demo.servers import PrometheusServer, RecordingHTTPServer

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "docker-compose.monitoring.yml"
PROD = ROOT / "docker-compose.prod.yml"
EXAMPLE_ENV = ROOT / ".env.monitoring.example"
SCRIPT = ROOT / "deploy-monitoring.sh"
SERVICES = {"prometheus", "alertmanager", "grafana", "sms-relay", "node-exporter",
            "postgres-exporter"}


def _docker_compose() -> str:
    path = shutil.which("docker-compose")
    if path is None:
        pytest.fail("docker-compose is needed (scripts/test.sh installs Debian's package)")
    return path


def _clean_env(**extra: str) -> dict[str, str]:
    """A minimal environment: no setting of the stack leaks in from the caller's shell."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
           "HOME": os.environ.get("HOME", "/root")}
    env.update(extra)
    return env


def compose_config(*files: Path, env_file: Path = EXAMPLE_ENV,
                   **env: str) -> subprocess.CompletedProcess[str]:
    argv = [_docker_compose(), "--env-file", str(env_file)]
    for path in files:
        argv += ["-f", str(path)]
    return subprocess.run(argv + ["config"], capture_output=True, text=True, timeout=60,
                          env=_clean_env(**env), cwd=ROOT)


@functools.cache
def _merged_text(files: tuple[Path, ...], env: tuple[tuple[str, str], ...]) -> str:
    """docker-compose 1.29 takes about a second a call: each merge is done once a run."""
    result = compose_config(*files, **dict(env))
    assert result.returncode == 0, result.stderr
    return result.stdout


def merged(*files: Path, **env: str) -> dict[str, Any]:
    """The merged, interpolated configuration as docker-compose itself sees it."""
    return yaml.safe_load(_merged_text(files, tuple(sorted(env.items()))))


def _published(service: dict[str, Any]) -> list[tuple[str, int]]:
    """(host address, published port) of every published port of a merged service."""
    out = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            out.append((port.get("host_ip", "0.0.0.0"), int(port["published"])))
        else:
            parts = str(port).split("/")[0].split(":")
            host = parts[0] if len(parts) == 3 else "0.0.0.0"
            out.append((host, int(parts[-2])))
    return out


# --- compose files -------------------------------------------------------------------
def test_compose_config_passes_with_example_env() -> None:
    for files in ((BASE,), (BASE, PROD)):
        argv = [_docker_compose(), "--env-file", str(EXAMPLE_ENV)]
        for path in files:
            argv += ["-f", str(path)]
        result = subprocess.run(argv + ["config", "-q"], capture_output=True, text=True,
                                timeout=60, env=_clean_env(), cwd=ROOT)
        assert result.returncode == 0, result.stderr


def test_compose_config_fails_without_required_settings(tmp_path: Path) -> None:
    """The `${VAR:?}` guards work: compose itself refuses an incomplete settings file."""
    empty = tmp_path / "empty.env"
    empty.write_text("")
    result = compose_config(BASE, env_file=empty)
    assert result.returncode != 0
    assert "PROMETHEUS_RETENTION_TIME" in result.stderr or "set " in result.stderr


def test_compose_has_the_services_network_and_named_volumes() -> None:
    config = merged(BASE)
    assert set(config["services"]) == SERVICES
    assert "monitoring" in config["networks"]
    for name, service in config["services"].items():
        if name == "node-exporter":
            continue  # on the host's network: test_compose_node_exporter_sees_the_host
        assert list(service["networks"]) == ["monitoring"], name
    assert {v["name"] for v in config["volumes"].values()} == {
        "mpesa-monitoring_prometheus_data", "mpesa-monitoring_alertmanager_data",
        "mpesa-monitoring_grafana_data"}
    build = config["services"]["sms-relay"]["build"]
    assert build["dockerfile"] == "deploy/sms-relay/Dockerfile"
    assert Path(build["context"]) == ROOT


def test_compose_node_exporter_sees_the_host() -> None:
    """Host network and pid namespace, the host's root under /host, udev data there too."""
    service = merged(BASE)["services"]["node-exporter"]
    assert service.get("network_mode") == "host"
    assert service.get("pid") == "host"
    assert "ports" not in service and "networks" not in service
    command = service["command"]
    assert "--path.rootfs=/host" in command
    assert "--path.udev.data=/host/run/udev/data" in command
    assert any(arg.startswith("--web.listen-address=172.17.0.1:") for arg in command), command
    prometheus = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    job = next(j for j in prometheus["scrape_configs"] if j["job_name"] == "node-exporter")
    assert job["static_configs"][0]["targets"] == ["host.docker.internal:9100"]


def test_compose_prometheus_3_gets_no_flag_it_refuses() -> None:
    """expand-external-labels is always on in Prometheus 3, which refuses the flag."""
    service = merged(BASE)["services"]["prometheus"]
    assert re.search(r":v3\.5\.\d+$", service["image"]), service["image"]
    assert not [arg for arg in service["command"] if "expand-external-labels" in arg]


def test_compose_images_are_pinned_to_exact_versions() -> None:
    from flask_mpesa_monitor import __version__

    for name, service in merged(BASE, PROD)["services"].items():
        image = service["image"]
        assert "@sha256:" in image or re.search(r":[^/:]+$", image), f"{name}: {image}"
        tag = image.rsplit(":", 1)[1]
        assert tag != "latest" and re.search(r"\d", tag), f"{name}: {image}"
    relay = merged(BASE)["services"]["sms-relay"]["image"]
    assert relay.endswith(f":{__version__}"), "tag the relay image with the package version"


def test_compose_internal_ports_bound_to_loopback() -> None:
    services = merged(BASE)["services"]
    for name, service in services.items():
        for host, _port in _published(service):
            if name == "grafana":
                continue
            assert host == "127.0.0.1", f"{name} is published on {host}"
    assert _published(services["grafana"]) == [("0.0.0.0", 3000)]


def test_compose_prod_publishes_only_the_tls_proxy() -> None:
    services = merged(BASE, PROD, GRAFANA_BIND_ADDRESS="127.0.0.1")["services"]
    public = {name for name, service in services.items()
              for host, _port in _published(service) if host != "127.0.0.1"}
    assert public == {"tls-proxy"}
    assert sorted(p for _h, p in _published(services["tls-proxy"])) == [80, 443]
    for name, service in services.items():
        assert service["labels"]["com.mpesa-monitor.environment"] == "production", name
        if name != "tls-proxy":
            assert "com.mpesa-monitor.config-digest" in service["labels"], name
    assert services["prometheus"]["environment"]["MONITORING_ENVIRONMENT"] == "production"
    assert services["grafana"]["environment"]["GF_SERVER_ROOT_URL"].startswith("https://")


def test_compose_services_have_healthchecks_limits_and_readonly_mounts() -> None:
    config = merged(BASE, PROD)
    named = set(config["volumes"])
    for name, service in config["services"].items():
        assert service["healthcheck"]["test"], name
        assert service.get("mem_limit") and service.get("cpus"), name
        assert service["restart"] == "unless-stopped", name
        for volume in service.get("volumes", []):
            source, _target, *mode = str(volume).split(":")
            if source in named:
                continue
            assert mode and mode[0].startswith("ro"), f"{name}: {volume} is not read-only"


def test_compose_secrets_come_from_gitignored_files() -> None:
    config = merged(BASE)
    for name, secret in config["secrets"].items():
        assert Path(secret["file"]).is_relative_to(ROOT / "deploy" / "secrets"), name
    assert "deploy/secrets/" in (ROOT / ".gitignore").read_text().split()
    text = BASE.read_text()
    assert not re.search(r"(PASSWORD|TOKEN|API_KEY|SECRET)\s*:\s*[^$/\s]", text), \
        "a secret value in the environment of a service"


def test_compose_grafana_is_locked_down() -> None:
    grafana = merged(BASE)["services"]["grafana"]
    env = grafana["environment"]
    assert env["GF_SECURITY_ADMIN_PASSWORD__FILE"] == "/run/secrets/grafana_admin_password"
    assert env["GF_USERS_ALLOW_SIGN_UP"] == "false"
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    sources = {s["source"] if isinstance(s, dict) else s for s in grafana["secrets"]}
    assert {"grafana_admin_password", "prometheus_password"} <= sources


def test_compose_prometheus_has_basic_auth_and_retention_settings() -> None:
    prometheus = merged(BASE)["services"]["prometheus"]
    command = prometheus["command"]
    assert "--web.config.file=/etc/prometheus/web.yml" in command
    assert "--storage.tsdb.retention.time=30d" in command
    assert "--storage.tsdb.retention.size=20GB" in command
    mounts = {target: source for source, target, *_ in (str(v).split(":") for v in prometheus["volumes"])}
    # The rendered files (deploy/render.py, git-ignored) are what the container reads.
    assert Path(mounts["/etc/prometheus/targets"]) == ROOT / "deploy/secrets/rendered/targets"
    # Every rule file is rendered (SLO objective, alert links from the settings).
    assert Path(mounts["/etc/prometheus/rules"]) == ROOT / "deploy/secrets/rendered/rules"
    # The runbooks page the alerts link by default: the rendered console template.
    from examples.demo.localstack import render

    consoles = ROOT / "deploy/secrets/rendered" / Path(render.RUNBOOK_CONSOLE).parent
    assert Path(mounts["/etc/prometheus/consoles"]) == consoles
    assert "--web.console.templates=/etc/prometheus/consoles" in command
    assert "--web.console.libraries=/etc/prometheus/consoles" in command


def test_compose_example_env_lists_every_variable() -> None:
    example = EXAMPLE_ENV.read_text()
    defined = set(re.findall(r"^([A-Z_][A-Z0-9_]*)=", example, re.M))
    used = set()
    for path in (BASE, PROD):
        used |= set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", path.read_text()))
    script = SCRIPT.read_text()
    used |= set(re.findall(r"setting ([A-Z_][A-Z0-9_]*)", script))
    for block in re.findall(r"(?:REQUIRED|PROD)_SETTINGS=\(([^)]*)\)", script):
        used |= set(block.split())
    assert used - defined == set(), "document these in .env.monitoring.example"
    for line in example.splitlines():
        if re.match(r"^[A-Z_]+=", line):
            assert not re.search(r"(?i)(password|token|secret|api_key)=\S", line), line


# --- deploy-monitoring.sh ------------------------------------------------------------
def _copy_repo(tmp_path: Path) -> Path:
    """The repository without git data, caches or real secrets.

    The promtool rule unit tests are swapped for one trivial case: they take tens of
    seconds, test_deploy_check_passes runs the real ones through the script, and here
    only the script's flow is under test.
    """
    target = tmp_path / "repo"
    shutil.copytree(ROOT, target, ignore=shutil.ignore_patterns(
        ".git", "__pycache__", ".pytest_cache", "secrets", ".local-stack", "*.egg-info",
        ".env.monitoring", "bench"))
    rule_tests = target / "deploy" / "prometheus" / "tests"
    shutil.rmtree(rule_tests, ignore_errors=True)
    rule_tests.mkdir(parents=True)
    (rule_tests / "trivial_test.yml").write_text(
        "rule_files: []\nevaluation_interval: 1m\ntests:\n"
        "  - interval: 1m\n    input_series: []\n    alert_rule_test: []\n")
    return target


def _fake_docker(tmp_path: Path, engine: bool = True, image: bool = True,
                 running: bool = True) -> tuple[Path, Path]:
    """docker and docker-compose stand-ins that log every call; `config` is real.

    engine: whether `docker info` finds an engine; image: whether the relay image
    exists; running: whether the project has containers.
    """
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    log = tmp_path / "docker-calls.log"
    (bin_dir / "docker-compose").write_text(f"""#!/usr/bin/env bash
echo "docker-compose $* digest=${{MONITORING_CONFIG_DIGEST:-}}" >>{log}
for arg in "$@"; do
  case "$arg" in
    config) exec {_docker_compose()} "$@" ;;
    ps) echo "fake-${{!#}}"; exit 0 ;;
  esac
done
exit 0
""")
    (bin_dir / "docker").write_text(f"""#!/usr/bin/env bash
echo "docker $*" >>{log}
case "$1 $2" in
  "info "*) {'exit 0' if engine else 'echo "Cannot connect to the Docker daemon" >&2; exit 1'} ;;
  "image inspect") exit {0 if image else 1} ;;
  "ps -aq") {'echo fake-container' if running else 'true'}; exit 0 ;;
  "compose "*) exit 1 ;;
esac
[ "$1" = inspect ] && echo healthy
exit 0
""")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    return bin_dir, log


def _write_secrets(repo: Path, password: str = "s3cret-Prom.pass") -> None:
    secrets = repo / "deploy" / "secrets"
    secrets.mkdir(parents=True, exist_ok=True)
    for name in ("mpesa_metrics_token", "grafana_admin_password", "slack_api_url",
                 "smtp_password", "sms_provider_secret", "postgres_exporter_password"):
        (secrets / name).write_text(f"placeholder-{name}\n")
    (secrets / "prometheus_password").write_text(password + "\n")


# Own values for the example's placeholders, which a deploy refuses.
NOT_PLACEHOLDERS = {
    "ALERTMANAGER_SMTP_FROM": "alertmanager@mpesa-monitor.test",
    "ALERTMANAGER_SMTP_SMARTHOST": "smtp.mpesa-monitor.test:587",
    "ALERTMANAGER_SMTP_USERNAME": "alertmanager@mpesa-monitor.test",
    "ALERTMANAGER_EMAIL_TO_CRITICAL": "oncall@mpesa-monitor.test",
    "ALERTMANAGER_EMAIL_TO_HIGH": "oncall@mpesa-monitor.test",
    "ALERTMANAGER_WATCHDOG_URL": "https://deadmans-switch.mpesa-monitor.test/ping/1",
    "MONITORING_DOMAIN": "monitoring.mpesa-monitor.test",
}


def _env_file(path: Path, placeholders: bool = False, **overrides: str) -> Path:
    """The example file with overrides; its placeholders replaced unless asked for."""
    if not placeholders:
        overrides = {**NOT_PLACEHOLDERS, **overrides}
    lines = []
    for line in EXAMPLE_ENV.read_text().splitlines():
        key = line.split("=", 1)[0]
        if key in overrides:
            line = f"{key}={overrides.pop(key)}"
        lines.append(line)
    lines += [f"{k}={v}" for k, v in overrides.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def run_script(repo: Path, *args: str, bin_dir: Path | None = None,
               timeout: float = 300) -> subprocess.CompletedProcess[str]:
    path = os.environ.get("PATH", "/usr/bin:/bin")
    if bin_dir is not None:
        path = f"{bin_dir}:{path}"
    return subprocess.run(["bash", str(repo / "deploy-monitoring.sh"), *args],
                          capture_output=True, text=True, timeout=timeout,
                          env=_clean_env(PATH=path), cwd=repo, stdin=subprocess.DEVNULL)


def test_deploy_help_prints_usage() -> None:
    result = run_script(ROOT, "--help")
    assert result.returncode == 0
    for option in ("--check", "--down", "--local", "--prod", "--env-file"):
        assert option in result.stdout
    assert run_script(ROOT, "--bogus").returncode == 64


def test_deploy_check_passes() -> None:
    result = run_script(ROOT, "--check")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "== all checks passed" in result.stdout


def test_deploy_refuses_listing_every_missing_item(tmp_path: Path) -> None:
    repo = _copy_repo(tmp_path)
    bin_dir, log = _fake_docker(tmp_path)
    empty = tmp_path / "empty.env"
    empty.write_text("# nothing set\n")
    result = run_script(repo, "--env-file", str(empty), bin_dir=bin_dir)
    assert result.returncode == 2
    script = SCRIPT.read_text()
    required = re.search(r"REQUIRED_SETTINGS=\(([^)]*)\)", script).group(1).split()
    secrets = re.search(r"REQUIRED_SECRETS=\(([^)]*)\)", script).group(1).split()
    documented = re.findall(r"^# .*Required\.\n(?:#.*\n)*([A-Z_]+)=", EXAMPLE_ENV.read_text(),
                            re.M)
    assert set(documented) <= set(required), "a setting marked Required is not checked"
    generated = re.search(r"GENERATED_SECRETS=\(([^)]*)\)", script).group(1).split()
    compose_secrets = set(merged(BASE)["secrets"]) - {"prometheus_web_config"} - set(generated)
    assert compose_secrets == set(secrets)
    for name in required:
        assert f"missing setting {name}" in result.stderr, name
    for name in secrets:
        assert f"missing secret file deploy/secrets/{name}" in result.stderr, name
    assert not log.exists(), f"docker was called: {log.read_text()}"


def test_deploy_refuses_malformed_values_and_open_grafana_in_prod(tmp_path: Path) -> None:
    repo = _copy_repo(tmp_path)
    _write_secrets(repo, password="has spaces")
    bin_dir, log = _fake_docker(tmp_path)
    env = _env_file(tmp_path / "bad.env", MPESA_APP_TARGETS="app.internal",
                    MPESA_SLO_OBJECTIVE="99.5", ALERTMANAGER_SMTP_REQUIRE_TLS="yes",
                    SMS_RELAY_PROVIDER="twilio", GRAFANA_BIND_ADDRESS="0.0.0.0",
                    MPESA_RUNBOOK_URL="https://wiki.mpesa-monitor.test/runbooks#top")
    result = run_script(repo, "--prod", "--env-file", str(env), bin_dir=bin_dir)
    assert result.returncode == 2
    for expected in ("invalid target 'app.internal'", "MPESA_SLO_OBJECTIVE=99.5",
                     "ALERTMANAGER_SMTP_REQUIRE_TLS=yes", "SMS_RELAY_TWILIO_SID",
                     "SMS_RELAY_FROM", "GRAFANA_BIND_ADDRESS=127.0.0.1",
                     "deploy/secrets/prometheus_password",
                     "invalid setting MPESA_RUNBOOK_URL=https://wiki.mpesa-monitor.test/runbooks#top"):
        assert expected in result.stderr, expected
    assert not log.exists()


class _AuthPrometheus(PrometheusServer):
    """Debian's Prometheus behind basic auth: 401 also means "up" for the start wait."""

    ready_statuses = (200, 401)


def test_deploy_render_writes_configs_that_real_servers_accept(
        tmp_path: Path, auth_prometheus_factory: Callable[..., PrometheusServer]) -> None:
    repo = _copy_repo(tmp_path)
    _write_secrets(repo)
    env = _env_file(tmp_path / "render.env", MPESA_SLO_OBJECTIVE="0.999",
                    PROMETHEUS_BASIC_AUTH_USER="reader",
                    MPESA_APP_TARGETS="host.docker.internal:5000, [::1]:5001",
                    ALERTMANAGER_EMAIL_TO_CRITICAL="pager@example.org",
                    ALERTMANAGER_WATCHDOG_URL="https://switch.example.org/ping/abc")
    result = run_script(repo, "--render", "--env-file", str(env))
    assert result.returncode == 0, result.stderr

    rendered = repo / "deploy/secrets/rendered"
    targets = json.loads((rendered / "targets/mpesa-mcp.json").read_text())
    assert targets[0]["targets"] == ["host.docker.internal:5000", "[::1]:5001"]
    slo = (rendered / "rules/slo-objective.yml").read_text()
    assert "expr: vector(0.999)" in slo
    # The committed files are templates: the render leaves them as they are.
    for committed in ("deploy/prometheus/targets/mpesa-mcp.json", "deploy/prometheus/rules/slo-objective.yml"):
        assert (repo / committed).read_text() == (ROOT / committed).read_text(), committed
    prom = yaml.safe_load((rendered / "prometheus.yml").read_text())
    self_job = next(j for j in prom["scrape_configs"] if j["job_name"] == "prometheus")
    assert self_job["basic_auth"]["username"] == "reader"
    am = (rendered / "alertmanager.yml").read_text()
    assert "pager@example.org" in am and "https://switch.example.org/ping/abc" in am
    assert "deadmans-switch.invalid" not in am
    assert oct((repo / "deploy/secrets").stat().st_mode & 0o777) == "0o700"
    # The Alertmanager -> SMS relay token is generated once and kept.
    token = (repo / "deploy/secrets/sms_relay_token").read_text()
    assert len(token.strip()) >= 32 and "credentials_file: /etc/alertmanager/secrets/sms_relay_token" in am

    checked = subprocess.run(["promtool", "check", "web-config",
                              str(rendered / "prometheus-web.yml")],
                             capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    prometheus = auth_prometheus_factory(
        "global: {scrape_interval: 15s}\n",
        extra_args=[f"--web.config.file={rendered / 'prometheus-web.yml'}"])
    url = f"{prometheus.url}/-/healthy"
    denied = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", url],
                            capture_output=True, text=True, timeout=30)
    allowed = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                              "-u", "reader:s3cret-Prom.pass", url],
                             capture_output=True, text=True, timeout=30)
    wrong = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                            "-u", "reader:not-the-password", url],
                           capture_output=True, text=True, timeout=30)
    assert (denied.stdout, wrong.stdout, allowed.stdout) == ("401", "401", "200")

    # Rendering again with the same password keeps the hash (no needless change).
    before = (rendered / "prometheus-web.yml").read_text()
    assert run_script(repo, "--render", "--env-file", str(env)).returncode == 0
    assert (rendered / "prometheus-web.yml").read_text() == before
    assert (repo / "deploy/secrets/sms_relay_token").read_text() == token


@pytest.fixture
def auth_prometheus_factory(tmp_path_factory: pytest.TempPathFactory
                            ) -> Iterator[Callable[..., PrometheusServer]]:
    """Like conftest's prometheus_factory, for a Prometheus behind basic auth."""
    started: list[PrometheusServer] = []

    def make(config: str, **kwargs: Any) -> PrometheusServer:
        server = _AuthPrometheus(config, base_dir=tmp_path_factory.mktemp("prom-auth"),
                                 **kwargs)
        started.append(server)
        server.start()
        return server

    try:
        yield make
    finally:
        for server in started:
            server.cleanup()


def _verify_run(tmp_path: Path, http_recorder: Callable[..., RecordingHTTPServer],
                app_status: int, runbooks_page: bool = True,
                **settings: str) -> tuple[subprocess.CompletedProcess[str], RecordingHTTPServer,
                                          RecordingHTTPServer, Path]:
    """A full default run: refusal check, --check, render, (fake) up, verify; ``settings``
    override the example file's. The fake Prometheus serves the runbooks page unless
    ``runbooks_page`` is false."""
    repo = _copy_repo(tmp_path)
    _write_secrets(repo)
    bin_dir, log = _fake_docker(tmp_path)
    services = http_recorder()
    services.set_response("/api/v1/query", 200, {
        "status": "success",
        "data": {"resultType": "vector", "result": [{"metric": {}, "value": [0, "1"]}]}})
    services.set_response("/metrics", 200, "# exporter\npg_up 1\n")
    if runbooks_page:
        services.set_response("/consoles/runbooks.html", 200, '<h2 id="watchdog">Watchdog</h2>')
    app = http_recorder()
    app.set_response("/health", app_status, {"status": "healthy" if app_status == 200
                                              else "unhealthy"})
    port = str(services.port)
    env = _env_file(tmp_path / "deploy.env", MPESA_APP_TARGETS=f"127.0.0.1:{app.port}",
                    PROMETHEUS_PORT=port, ALERTMANAGER_PORT=port, GRAFANA_PORT=port,
                    SMS_RELAY_PORT=port, NODE_EXPORTER_PORT=port,
                    NODE_EXPORTER_LISTEN_ADDRESS="127.0.0.1",
                    POSTGRES_EXPORTER_PORT=port, MONITORING_VERIFY_TIMEOUT="10", **settings)
    result = run_script(repo, "--env-file", str(env), bin_dir=bin_dir)
    return result, services, app, log


def test_deploy_verifies_services_and_the_app_on_its_own_port(
        tmp_path: Path, http_recorder: Callable[..., RecordingHTTPServer]) -> None:
    runbooks = http_recorder()
    runbooks.set_response("/docs/runbooks.md", 200, "# Runbooks\n")
    result, services, app, log = _verify_run(tmp_path, http_recorder, 200, MPESA_APP_JOB="payments-api",
                                             MPESA_RUNBOOK_URL=f"{runbooks.url}/docs/runbooks.md")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "== all checks passed" in result.stdout
    assert "the monitoring stack is up and verified" in result.stdout
    calls = log.read_text()
    (up,) = [line for line in calls.splitlines() if " up -d" in line]
    assert "--build" not in up, "the relay image exists: nothing to build"
    assert " build" not in calls
    assert "-p mpesa-monitoring" in up
    assert re.search(r"digest=[0-9a-f]{16}$", up), "no config digest passed to compose up"
    assert len(app.received("/health")) == 1, "the app's /health was not probed on its port"
    for path in ("/-/healthy", "/api/health", "/metrics", "/api/v1/query"):
        assert services.received(path), path
    query = services.received("/api/v1/query")[0]
    assert query.headers["authorization"].startswith("Basic ")
    # The app's targets are counted under the job the settings name (MPESA_APP_JOB).
    assert query.form()["query"] == 'sum(up{job="payments-api"} == 1)', query.text
    assert "Prometheus scrapes the app (job payments-api)" in result.stdout
    # Every alert links into MPESA_RUNBOOK_URL: the verification asks it once.
    assert len(runbooks.received("/docs/runbooks.md")) == 1
    assert f"ok    runbooks  {runbooks.url}/docs/runbooks.md" in result.stdout
    assert "s3cret" not in " ".join(calls.split("\n")), "a secret on a command line"


def test_deploy_asks_prometheus_about_the_job_the_render_uses() -> None:
    """deploy-monitoring.sh's checks count targets of MPESA_APP_JOB; unset, of the same
    default job deploy/render.py writes into prometheus.yml and the rules, and no check
    names a job of its own."""
    from examples.demo.localstack import render

    text = SCRIPT.read_text()
    assert re.findall(r"""printf '%s' "\$\{job:-([^}]+)\}\"""", text) == [render.DEFAULT_JOB]
    assert re.findall(r'\{job=\\?"([^"\\]*)', text) == ["$job", "$(app_job)"]  # PromQL matchers
    assert EXAMPLE_ENV.read_text().count(f"MPESA_APP_JOB={render.DEFAULT_JOB}\n") == 1


def test_deploy_verify_fails_when_the_app_is_unhealthy(
        tmp_path: Path, http_recorder: Callable[..., RecordingHTTPServer]) -> None:
    result, services, app, _log = _verify_run(tmp_path, http_recorder, 503)
    assert result.returncode == 1
    assert f"app 127.0.0.1:{app.port} /health" in result.stderr
    assert app.received("/health")
    # MPESA_RUNBOOK_URL empty (the example's): alerts link the page Prometheus serves,
    # asked for through its basic auth.
    (page,) = services.received("/consoles/runbooks.html")
    assert page.headers["authorization"].startswith("Basic ")
    assert ("ok    runbooks  served by Prometheus (basic auth), linked as "
            "http://localhost:9090/consoles/runbooks.html") in result.stdout


def test_deploy_verify_fails_when_prometheus_does_not_serve_the_runbooks(
        tmp_path: Path, http_recorder: Callable[..., RecordingHTTPServer]) -> None:
    """The default runbook links point into the stack itself: a page it does not serve
    is a failed deploy, not a warning."""
    result, services, _app, _log = _verify_run(tmp_path, http_recorder, 200, runbooks_page=False)
    assert result.returncode == 1, result.stdout[-3000:]
    assert services.received("/consoles/runbooks.html")
    assert "FAIL  runbooks" in result.stdout
    assert "Prometheus does not serve the runbooks at /consoles/runbooks.html" in result.stderr
    rendered = (tmp_path / "repo" / "deploy/secrets/rendered/rules/app.yml").read_text()
    assert '"http://localhost:9090/consoles/runbooks.html#mpesamcpdown"' in rendered


def test_deploy_runs_the_checks_first_and_starts_nothing_when_one_fails(
        tmp_path: Path) -> None:
    repo = _copy_repo(tmp_path)
    _write_secrets(repo)
    bin_dir, log = _fake_docker(tmp_path)
    dashboard = repo / "deploy" / "grafana" / "dashboards" / "security.json"
    dashboard.write_text(dashboard.read_text().replace("mpesa_auth_attempts_total",
                                                       "mpesa_auth_attempt_total"))
    env = _env_file(tmp_path / "deploy.env")
    result = run_script(repo, "--env-file", str(env), bin_dir=bin_dir)
    assert result.returncode == 1
    assert "FAILED: grafana dashboards" in result.stdout
    assert "validation failed: nothing was started" in result.stderr
    calls = log.read_text() if log.exists() else ""
    assert "config -q" in calls and " up " not in calls
    assert not (repo / "deploy" / "secrets" / "rendered").exists()


def test_deploy_local_branch_runs_the_localstack_module(tmp_path: Path) -> None:
    """--local hands every later argument to python3 -m examples.demo.localstack."""
    repo = tmp_path / "repo"
    (repo / "examples" / "demo").mkdir(parents=True)
    shutil.copy(SCRIPT, repo / "deploy-monitoring.sh")
    (repo / "examples" / "__init__.py").write_text("")
    (repo / "examples" / "demo" / "__init__.py").write_text("")
    (repo / "examples" / "demo" / "localstack.py").write_text(
        "import sys\nprint('localstack', sys.argv[1:])\n")
    result = run_script(repo, "--local", "--duration", "5")
    assert result.returncode == 0, result.stderr
    assert "localstack ['--duration', '5']" in result.stdout


def test_compose_operations_doc_matches_the_stack() -> None:
    """docs/operations.md names volumes, images, options and files that really exist."""
    doc = (ROOT / "docs" / "operations.md").read_text()
    config = merged(BASE)
    volumes = {v["name"] for v in config["volumes"].values()}
    for name in set(re.findall(r"mpesa-monitoring_\w+_data", doc)):
        assert name in volumes, name
    assert "mpesa-monitoring_${svc}_data" in doc
    assert {f"mpesa-monitoring_{s}_data" for s in ("prometheus", "grafana", "alertmanager")} \
        == volumes
    images = {s["image"] for s in config["services"].values()}
    for image in set(re.findall(r"prom/\w+:v[\d.]+", doc)):
        assert image in images, f"{image} is not the pinned image"
    usage = run_script(ROOT, "--help").stdout
    for option in set(re.findall(r"deploy-monitoring\.sh (--[a-z]+)", doc)):
        assert option in usage, option
    for path in set(re.findall(r"`((?:deploy|docs|tests)/[\w./-]+\.\w+)`", doc)):
        assert (ROOT / path).exists() or path.startswith("deploy/secrets/"), path
    for secret in re.search(r"REQUIRED_SECRETS=\(([^)]*)\)", SCRIPT.read_text()).group(1).split():
        assert f"`{secret}`" in doc, f"secret {secret} missing from the checklist"


# --- refusals in one line, before any check ------------------------------------------
def _tool_farm(tmp_path: Path, leave_out: set[str]) -> Path:
    """A PATH directory with every tool of /usr/bin and /bin except leave_out."""
    farm = tmp_path / "farm"
    farm.mkdir()
    for directory in (Path("/usr/bin"), Path("/bin"), Path("/usr/sbin"), Path("/sbin")):
        if not directory.is_dir():
            continue
        for tool in directory.iterdir():
            if tool.name not in leave_out and not (farm / tool.name).exists():
                (farm / tool.name).symlink_to(tool)
    return farm


def _assert_one_line_refusal(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    assert "== prometheus config" not in result.stdout, "a check ran before the refusal"


def test_deploy_refuses_without_a_docker_engine_in_one_line(tmp_path: Path) -> None:
    repo = _copy_repo(tmp_path)
    _write_secrets(repo)
    bin_dir, log = _fake_docker(tmp_path, engine=False)
    result = run_script(repo, "--env-file", str(_env_file(tmp_path / "d.env")), bin_dir=bin_dir)
    _assert_one_line_refusal(result, "no Docker engine answers", "DOCKER_HOST")
    assert " up " not in log.read_text()
    assert not (repo / "deploy" / "secrets" / "rendered").exists()


def test_deploy_refuses_without_compose_in_one_line(tmp_path: Path) -> None:
    repo = _copy_repo(tmp_path)
    _write_secrets(repo)
    bin_dir, _log = _fake_docker(tmp_path)
    (bin_dir / "docker-compose").unlink()
    farm = _tool_farm(tmp_path, {"docker-compose", "docker"})
    result = subprocess.run(
        ["bash", str(repo / "deploy-monitoring.sh"), "--env-file", str(_env_file(tmp_path / "d.env"))],
        capture_output=True, text=True, timeout=120, cwd=repo, stdin=subprocess.DEVNULL,
        env=_clean_env(PATH=f"{bin_dir}:{farm}"))
    _assert_one_line_refusal(result, "docker-compose not found", "apt-get install docker-compose")


def test_deploy_refuses_placeholder_values_in_one_line(tmp_path: Path) -> None:
    repo = _copy_repo(tmp_path)
    _write_secrets(repo)
    bin_dir, log = _fake_docker(tmp_path)
    env = _env_file(tmp_path / "d.env", placeholders=True)
    result = run_script(repo, "--env-file", str(env), bin_dir=bin_dir)
    _assert_one_line_refusal(result, "placeholder values", "ALERTMANAGER_SMTP_FROM",
                             "ALERTMANAGER_WATCHDOG_URL", str(env))
    assert result.returncode == 2
    assert not log.exists() or " up " not in log.read_text()


@pytest.mark.parametrize("engine", [False, True], ids=["no-engine", "engine-idle"])
def test_down_is_quiet_and_succeeds_when_nothing_runs(tmp_path: Path, engine: bool) -> None:
    repo = _copy_repo(tmp_path)
    bin_dir, log = _fake_docker(tmp_path, engine=engine, running=False)
    result = run_script(repo, "--down", bin_dir=bin_dir)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert len(result.stdout.splitlines()) == 1, result.stdout
    assert " down" not in log.read_text()


def test_down_without_compose_is_quiet_and_succeeds(tmp_path: Path) -> None:
    repo = _copy_repo(tmp_path)
    farm = _tool_farm(tmp_path, {"docker-compose", "docker"})
    result = subprocess.run(["bash", str(repo / "deploy-monitoring.sh"), "--down"],
                            capture_output=True, text=True, timeout=120, cwd=repo,
                            stdin=subprocess.DEVNULL, env=_clean_env(PATH=str(farm)))
    assert result.returncode == 0, result.stderr
    assert result.stderr == "" and len(result.stdout.splitlines()) == 1, result


def test_down_stops_a_running_stack(tmp_path: Path) -> None:
    repo = _copy_repo(tmp_path)
    bin_dir, log = _fake_docker(tmp_path, running=True)
    result = run_script(repo, "--down", bin_dir=bin_dir)
    assert result.returncode == 0, result.stderr
    assert "down --remove-orphans" in log.read_text()


def test_dockerignore_sends_only_the_relay_wheels() -> None:
    """The build context: no secret, no settings file, no .git reaches the daemon."""
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines[0] == "*"
    assert set(lines[1:]) == {"!build/sms-relay-wheels/", "!deploy/sms-relay/requirements.txt"}
    dockerfile = (ROOT / "deploy" / "sms-relay" / "Dockerfile").read_text()
    assert "--no-index" in dockerfile and "--find-links=/wheels" in dockerfile
    copies = re.findall(r"(?m)^COPY\s+(\S+)", dockerfile)
    assert set(copies) == {"build/sms-relay-wheels/", "deploy/sms-relay/requirements.txt"}
