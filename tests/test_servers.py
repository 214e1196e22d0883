"""Smoke tests of the server launchers (the package examples/demo/servers/) the other tests rely on.

Each test proves one launcher starts a real, working server and stops it; if one of
these fails, the integration tests that use that server cannot be trusted either.
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import re
import signal
import smtplib
import socket
import threading
import uuid
from email.message import EmailMessage
from pathlib import Path

import psycopg2
import pytest

from examples.demo.servers import (
    AlertmanagerServer,
    GunicornServer,
    HangingTCPServer,
    PostgresServer,
    PrometheusServer,
    RecordingHTTPServer,
    SMTPSink,
    VictoriaMetricsServer,
    free_port,
    http_request,
    log_tails,
    wait_until,
)

NULL_ROUTE_CONFIG = """
route:
  receiver: "null"
  group_wait: 1s
  group_interval: 1s
receivers:
  - name: "null"
"""


def _select_one(dsn: str) -> int:
    conn = psycopg2.connect(dsn, connect_timeout=3)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            return cur.fetchone()[0]
    finally:
        conn.close()


@pytest.mark.slow
def test_postgres_stop_refuses_and_start_serves_again(postgres: PostgresServer) -> None:
    assert _select_one(postgres.dsn) == 1, postgres.log_tail()

    postgres.stop()
    assert not postgres.running
    with pytest.raises(psycopg2.OperationalError, match="refused"):
        _select_one(postgres.dsn)

    postgres.start()
    assert postgres.running
    assert _select_one(postgres.dsn) == 1, postgres.log_tail()


@pytest.mark.slow
def test_postgres_rejects_wrong_password(postgres: PostgresServer) -> None:
    wrong = postgres.dsn.replace(postgres.password, "not-the-password")
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        _select_one(wrong)


@pytest.mark.slow
def test_postgres_counts_queries_with_pg_stat_statements(fresh_database: str, postgres: PostgresServer) -> None:
    name = fresh_database.rsplit("/", 1)[1]
    assert name != postgres.database
    before = postgres.calls("SELECT $1", database=name)
    for _ in range(3):
        assert _select_one(fresh_database) == 1
    assert postgres.calls("SELECT $1", database=name) - before == 3


@pytest.mark.slow
def test_prometheus_ready_and_scrapes_itself(prometheus_factory) -> None:
    port = free_port()
    config = f"""
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: self
    static_configs:
      - targets: ["127.0.0.1:{port}"]
"""
    prom: PrometheusServer = prometheus_factory(config, port=port, extra_args=["--rules.alert.resend-delay=1s"])
    result = prom.wait_for(lambda: prom.query('up{job="self"} == 1'), timeout=15)
    assert result[0]["metric"]["instance"] == f"127.0.0.1:{port}"
    assert [t["health"] for t in prom.targets()] == ["up"]
    assert prom.value('up{job="self"}') == 1.0


@pytest.mark.slow
def test_prometheus_reload_loads_rule_files(prometheus_factory, tmp_path) -> None:
    rules = tmp_path / "always.yml"
    rules.write_text(
        "groups:\n  - name: smoke\n    rules:\n      - alert: AlwaysFiring\n        expr: vector(1)\n"
    )
    prom: PrometheusServer = prometheus_factory("global:\n  evaluation_interval: 1s\n")
    assert prom.rules() == []
    prom.reload(rule_files=[rules])
    firing = prom.wait_for(lambda: prom.firing("AlwaysFiring"), timeout=15)
    assert firing[0]["labels"]["alertname"] == "AlwaysFiring"


@pytest.mark.slow
def test_alertmanager_accepts_an_alert_and_keeps_state_over_restart(alertmanager_factory) -> None:
    am: AlertmanagerServer = alertmanager_factory(NULL_ROUTE_CONFIG)
    marker = uuid.uuid4().hex
    am.post_alerts([{"labels": {"alertname": "SmokeTest", "severity": "info", "marker": marker}}])
    alerts = am.wait_for(lambda: am.alerts(labels={"marker": marker}), timeout=10)
    assert alerts[0]["labels"]["alertname"] == "SmokeTest"
    assert am.alerts(labels={"marker": "someone-else"}) == []

    port = am.port
    am.restart()
    assert am.port == port and am.running
    # alerts live in memory: after a restart they come back only when sent again
    assert am.alerts(labels={"marker": marker}) == []
    assert (am.storage_path / "nflog").exists() or (am.storage_path / "silences").exists(), am.log_tail()


@pytest.mark.slow
def test_victoriametrics_answers_queries_and_keeps_its_data_over_restart(tmp_path) -> None:
    with VictoriaMetricsServer(base_dir=tmp_path / "vm") as vm:
        status, _, body = http_request("POST", f"{vm.url}/api/v1/import/prometheus",
                                       'smoke_samples{marker="vm"} 42\n')
        assert status == 204, body
        vm.flush()
        assert vm.wait_for(lambda: vm.value('smoke_samples{marker="vm"}'), timeout=15) == 42.0
        port = vm.port
        vm.restart()
        assert vm.port == port and vm.running
        assert vm.wait_for(lambda: vm.value('smoke_samples{marker="vm"}'), timeout=15) == 42.0
        assert vm.query('smoke_samples{marker="nobody"}') == []
        assert vm.disk_bytes() > 0
    assert not vm.running and (tmp_path / "vm").exists()  # a directory it was given is kept


def test_hanging_tcp_accepts_and_never_answers(hanging_tcp: HangingTCPServer) -> None:
    with socket.create_connection(hanging_tcp.address, timeout=2) as client:
        client.settimeout(0.3)
        with pytest.raises(TimeoutError):
            client.recv(1)
    wait_until(lambda: hanging_tcp.accepted == 1, timeout=5)


def test_hanging_tcp_stop_closes_held_connections() -> None:
    server = HangingTCPServer().start()
    client = socket.create_connection(server.address, timeout=2)
    try:
        wait_until(lambda: server.accepted == 1, timeout=5)
        server.stop()
        client.settimeout(5)
        assert client.recv(1) == b""  # closed by the server, not left hanging
    finally:
        client.close()
        server.stop()


def _post(url: str, body: bytes, content_type: str = "application/json") -> tuple[int, bytes]:
    status, _, reply = http_request("POST", url, body, headers={"Content-Type": content_type}, timeout=5)
    return status, reply


def test_recorder_records_requests_and_answers_per_path(http_recorder) -> None:
    fake: RecordingHTTPServer = http_recorder()
    fake.set_response("/slack/fail", 500, {"error": "down"})
    fake.set_response("/sms/*", 201, {"accepted": True})
    fake.set_handler("/echo", lambda req: (202, {"got": req.json()}, {"X-Echo": "1"}))

    assert _post(fake.url + "/slack/hook", b'{"text": "hi"}') == (200, b"ok")
    assert _post(fake.url + "/slack/fail", b"{}") == (500, b'{"error": "down"}')
    assert _post(fake.url + "/sms/send?x=1", b"to=placeholder", "application/x-www-form-urlencoded") == (
        201,
        b'{"accepted": true}',
    )
    status, body = _post(fake.url + "/echo", b'{"n": 1}')
    assert (status, json.loads(body)) == (202, {"got": {"n": 1}})

    [hook] = fake.wait_for(1, path="/slack/hook")
    assert hook.method == "POST"
    assert hook.json() == {"text": "hi"}
    assert hook.headers["content-type"] == "application/json"
    [sms] = fake.received(path="/sms/*")
    assert sms.query == {"x": ["1"]} and sms.form() == {"to": "placeholder"}
    assert len(fake.received()) == 4
    with pytest.raises(TimeoutError, match="/never"):
        fake.wait_for(1, path="/never", timeout=0.2)


def test_recorder_stop_does_not_wait_for_a_delayed_answer() -> None:
    fake = RecordingHTTPServer().start()
    try:
        fake.set_response("/slow", 200, "late", delay=30)
        client = threading.Thread(target=lambda: _post_ignoring_errors(fake.url + "/slow"), daemon=True)
        client.start()
        fake.wait_for(1, path="/slow", timeout=5)
    finally:
        fake.stop()
    client.join(10)
    assert not client.is_alive()


def _post_ignoring_errors(url: str) -> None:
    try:
        _post(url, b"{}")
    except OSError:
        pass


def test_smtp_sink_receives_mail_sent_with_smtplib(smtp_sink: SMTPSink) -> None:
    message = EmailMessage()
    message["From"] = "alertmanager@example.invalid"
    message["To"] = "oncall@example.invalid"
    message["Subject"] = "[FIRING:1] DatabaseDown"
    message.set_content("database check failing")
    with smtplib.SMTP(smtp_sink.host, smtp_sink.port, timeout=5) as client:
        client.login("placeholder-user", "placeholder-password")
        client.send_message(message)

    [mail] = smtp_sink.wait_for(1, timeout=5)
    assert mail.mail_from == "alertmanager@example.invalid"
    assert mail.rcpt_tos == ["oncall@example.invalid"]
    assert mail.subject == "[FIRING:1] DatabaseDown"
    assert mail.body.strip() == "database check failing"


@pytest.mark.slow
def test_gunicorn_runs_two_workers_with_multiprocess_metrics(gunicorn_factory, tmp_path) -> None:
    server: GunicornServer = gunicorn_factory(
        "tests.apps.hello:app",
        workers=2,
        multiproc_dir=tmp_path / "prom",
        env={"HELLO_RENDEZVOUS_DIR": str(tmp_path / "rendezvous")},
    )
    assert server.get("/") == (200, b"hello")
    wait_until(lambda: len(server.worker_pids()) == 2, timeout=10)

    def rendezvous(token: str) -> set[int]:
        seen: list[set[int]] = []
        threads = [
            threading.Thread(target=lambda: seen.append(set(json.loads(server.get(f"/rendezvous?token={token}")[1]))))
            for _ in range(2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(15)
        assert len(seen) == 2, log_tails(server)
        return seen[0] | seen[1]

    # two concurrent requests are served by two different workers
    assert len(rendezvous("first")) == 2, log_tails(server)

    for _ in range(10):
        assert server.get("/count")[0] == 200
    metrics = server.get("/metrics")[1].decode()
    assert "hello_requests_total 10.0" in metrics, metrics
    assert "hello_worker_up 2.0" in metrics, metrics

    # a worker that dies is replaced, and its live gauge is no longer counted
    victim = min(server.worker_pids())
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: victim not in server.worker_pids() and len(server.worker_pids()) == 2, timeout=15)
    assert len(rendezvous("second")) == 2, log_tails(server)  # both workers have loaded the app
    metrics = server.get("/metrics")[1].decode()
    assert "hello_worker_up 2.0" in metrics, metrics
    assert "hello_requests_total 10.0" in metrics, metrics


def test_free_port_hands_out_distinct_bindable_ports() -> None:
    ports = {free_port() for _ in range(20)}
    assert len(ports) == 20
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", ports.pop()))


def test_wait_until_returns_value_and_times_out() -> None:
    calls = iter(range(100))
    assert wait_until(lambda: next(calls) >= 3, timeout=5, interval=0.001) is True
    with pytest.raises(TimeoutError, match="never"):
        wait_until(lambda: False, timeout=0.05, interval=0.01, description="never")


# --- the package itself -------------------------------------------------------------
REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(("package_name", "modules"), [
    ("servers", {"process", "service", "postgres", "prometheus", "gunicorn", "fakes"}),
    ("daraja_sim", {"config", "callbacks", "simulator", "app"}),
])
def test_package_reexports_every_public_name_of_its_modules(package_name: str, modules: set[str]) -> None:
    """A launcher added as a new module is reachable as ``examples.demo.servers.X``."""
    package = importlib.import_module(f"examples.demo.{package_name}")
    found = sorted(info.name for info in pkgutil.iter_modules(package.__path__) if info.name != "__main__")
    assert modules <= set(found)
    exported: set[str] = set()
    for name in found:
        module = importlib.import_module(f"{package.__name__}.{name}")
        assert module.__all__, f"{name}.py declares no __all__"
        for public in module.__all__:
            assert getattr(package, public, None) is getattr(module, public), f"{name}.{public} not re-exported"
        exported |= set(module.__all__)
    assert set(package.__all__) == exported
    assert not (REPO / "examples" / "demo" / f"{package_name}.py").exists()


def test_tests_bench_and_local_stack_import_the_package_one_way() -> None:
    """Only ``from examples.demo.servers import ...``: never a module of it, never relative."""
    users = [*(REPO / "tests").rglob("*.py"), *(REPO / "bench").rglob("*.py"),
             *(p for p in (REPO / "examples" / "demo").glob("*.py"))]
    importers = []
    for path in users:
        text = path.read_text()
        assert not re.search(r"from \.+servers\b|examples\.demo\.servers\.\w+ import|import examples\.demo\.servers\.",
                             text), path
        if "from examples.demo.servers import" in text:
            importers.append(path.relative_to(REPO).parts[0])
    assert {"tests", "bench", "examples"} <= set(importers)
