"""Health checks, the runner and the health endpoints (SQLite, fakes, a hanging TCP server).

The real-PostgreSQL cases are in test_health_postgres.py.
"""

import json
import logging
import os
import signal
import sqlite3
import threading
import time

import pytest
from flask import Flask
from metric_values import value

from examples.demo.servers import free_port, wait_until
from flask_mpesa_monitor import MPesaMonitor
from flask_mpesa_monitor.health import HealthCheck, HealthRunner

TOKEN = "health-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def make_app(tmp_path=None, **config):
    app = Flask(__name__)
    app.config["MPESA_MONITOR_HEALTH_TOKEN"] = TOKEN
    if tmp_path is not None:
        app.config["MPESA_MONITOR_DATABASE_URL"] = f"sqlite:///{tmp_path / 'app.db'}"
    app.config.update(config)
    monitor = MPesaMonitor(app)
    return app, monitor


@pytest.fixture
def stop_runners():
    """Stop the background threads of the apps a test made (they would idle otherwise)."""
    apps = []
    yield apps.append
    for app in apps:
        app.extensions["mpesa_monitor"].health.stop()


class CountingFactory:
    """A DB-API connection factory over SQLite that counts the connections it opens."""

    def __init__(self, path, delay=0.0):
        self.path, self.delay, self.calls = str(path), delay, 0
        self._lock = threading.Lock()

    def __call__(self):
        with self._lock:
            self.calls += 1
        time.sleep(self.delay)
        return sqlite3.connect(self.path)


# --- endpoints ------------------------------------------------------------------------
def test_health_liveness_answers_without_touching_the_database(tmp_path):
    app, monitor = make_app(MPESA_MONITOR_HEALTH_BACKGROUND=False)
    factory = CountingFactory(tmp_path / "db")
    monitor.set_database(factory)
    response = app.test_client().get("/health")
    assert response.status_code == 200
    assert response.json["status"] == "healthy" and response.json["version"]
    assert response.json["timestamp"].endswith("Z")
    assert factory.calls == 0


def test_health_detailed_healthy_shows_statuses_only_without_token(tmp_path, stop_runners):
    app, _ = make_app(tmp_path)
    stop_runners(app)
    client = app.test_client()
    response = client.get("/health/detailed")
    assert response.status_code == 200
    body = response.json
    statuses = body["status"]
    assert (statuses["database"], statuses["mpesa_api"], statuses["security"]) == (
        "healthy", "not_configured", "healthy")
    assert statuses["application"] in ("healthy", "degraded")  # a loaded host may trip `system`
    assert set(body["checks"]) == {"database", "system", "security"}
    for check in body["checks"].values():
        assert set(check) == {"status", "response_time_ms"}
    assert body["timestamp"].endswith("Z")
    assert response.headers["Cache-Control"] == "no-store"
    wrong = client.get("/health/detailed", headers={"Authorization": "Bearer nope"}).json
    assert all(set(check) == {"status", "response_time_ms"} for check in wrong["checks"].values())
    detailed = client.get("/health/detailed", headers=AUTH).json
    assert detailed["checks"]["database"]["critical"] is True
    assert detailed["checks"]["database"]["details"]["backend"] == "sqlite"
    assert detailed["checks"]["system"]["details"]["cpu_warning_ratio"] == 0.85


def test_health_database_down_is_503_without_leaking_the_dsn(caplog):
    password = "pa55-word-never-shown"
    dsn = f"postgresql://mpesa:{password}@127.0.0.1:{free_port()}/mpesa"
    app, _ = make_app(MPESA_MONITOR_DATABASE_URL=dsn, MPESA_MONITOR_HEALTH_BACKGROUND=False)
    caplog.set_level(logging.DEBUG)
    response = app.test_client().get("/health/detailed", headers=AUTH)
    assert response.status_code == 503
    database = response.json["checks"]["database"]
    assert database["status"] == "unhealthy"
    assert "OperationalError" in database["error"]
    assert response.json["status"]["application"] == "unhealthy"
    for text in (response.text, caplog.text):
        assert password not in text and dsn not in text
    assert value("mpesa_health_check_status", check="database") == 0


def test_health_hanging_database_times_out_and_the_endpoint_stays_bounded(hanging_tcp, stop_runners):
    app, monitor = make_app(MPESA_MONITOR_DATABASE_URL=hanging_tcp.dsn, MPESA_MONITOR_HEALTH_TIMEOUT=2.0,
                            MPESA_MONITOR_HEALTH_INTERVAL=30)
    stop_runners(app)
    client = app.test_client()
    started = time.monotonic()
    response = client.get("/health/detailed", headers=AUTH)
    elapsed = time.monotonic() - started
    assert response.status_code == 503
    assert response.json["checks"]["database"]["error"] == "timed out after 2.0 s"
    assert elapsed < 2.0 + 0.5, f"answered in {elapsed:.2f} s"
    assert hanging_tcp.accepted >= 1
    # later requests are served from the cache at once
    started = time.monotonic()
    assert client.get("/health/detailed").status_code == 503
    assert time.monotonic() - started < 0.5
    # psycopg2's own connect_timeout ends the abandoned thread shortly after
    wait_until(lambda: not any(t.name == "mpesa-health-database" for t in threading.enumerate()),
               timeout=5, description="the abandoned database check thread ended")


def test_health_hung_check_is_not_started_twice():
    release = threading.Event()
    runner = HealthRunner(interval=0.1, background=False)
    runner.add(HealthCheck("stuck", lambda: release.wait(10), timeout=0.2))
    try:
        first = runner.run_once().results["stuck"]
        second = runner.run_once().results["stuck"]
        third = runner.run_once().results["stuck"]
        assert first.error == "timed out after 0.2 s"
        assert "still running from an earlier run" in second.error and third.status == "unhealthy"
        assert sum(t.name == "mpesa-health-stuck" for t in threading.enumerate()) == 1
    finally:
        release.set()
    wait_until(lambda: runner.run_once().results["stuck"].status == "healthy", timeout=3)


def test_health_1000_concurrent_requests_run_the_checks_once(tmp_path, stop_runners):
    app, monitor = make_app(MPESA_MONITOR_HEALTH_INTERVAL=60)
    stop_runners(app)
    factory = CountingFactory(tmp_path / "db", delay=0.05)
    monitor.set_database(factory)
    runner = app.extensions["mpesa_monitor"].health
    statuses, barrier = [], threading.Barrier(1000, timeout=30)

    def probe():
        client = app.test_client()
        barrier.wait()
        statuses.append(client.get("/health/detailed").status_code)

    threads = [threading.Thread(target=probe) for _ in range(1000)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert statuses.count(200) == 1000
    assert runner.runs == 1 and factory.calls == 1
    assert app.extensions["mpesa_monitor"].database_check.queries == 1


def test_health_on_demand_is_single_flight_and_cached_for_the_interval(tmp_path):
    app, monitor = make_app(MPESA_MONITOR_HEALTH_BACKGROUND=False, MPESA_MONITOR_HEALTH_INTERVAL=0.5)
    factory = CountingFactory(tmp_path / "db", delay=0.2)
    monitor.set_database(factory)
    runner = app.extensions["mpesa_monitor"].health
    statuses, barrier = [], threading.Barrier(100, timeout=30)

    def probe():
        client = app.test_client()
        barrier.wait()
        statuses.append(client.get("/health/detailed").status_code)

    threads = [threading.Thread(target=probe) for _ in range(100)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert statuses.count(200) == 100
    assert factory.calls == 1 and runner.runs == 1
    assert not runner.thread_running
    time.sleep(0.6)  # past the interval: the next request runs the checks again
    app.test_client().get("/health/detailed")
    assert factory.calls == 2


def test_health_background_thread_starts_on_first_request_and_refreshes(tmp_path, stop_runners):
    app, monitor = make_app(tmp_path, MPESA_MONITOR_HEALTH_INTERVAL=0.2)
    stop_runners(app)
    runner = app.extensions["mpesa_monitor"].health
    assert not runner.thread_running and runner.runs == 0  # nothing at init_app (gunicorn master)
    app.test_client().get("/health")
    assert runner.thread_running
    wait_until(lambda: runner.runs >= 3, timeout=5, description="three background runs")
    runner.stop()
    wait_until(lambda: not runner.thread_running, timeout=2)


def test_health_background_thread_restarts_in_a_forked_worker(tmp_path, stop_runners):
    app, _ = make_app(tmp_path, MPESA_MONITOR_HEALTH_INTERVAL=0.2)
    stop_runners(app)
    runner = app.extensions["mpesa_monitor"].health
    app.test_client().get("/health")
    assert runner.thread_running
    pid = os.fork()
    if pid == 0:  # the child: a gunicorn worker forked from a master that had the thread
        code = 1
        try:
            fresh = not runner.thread_running and runner.runs == 0
            app.test_client().get("/health")
            deadline = time.monotonic() + 5
            while runner.runs < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            code = 0 if fresh and runner.thread_running and runner.runs >= 2 else 3
        finally:
            os._exit(code)
    deadline = time.monotonic() + 15  # bounded: never wait forever for the child
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    if not done:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the forked worker did not finish within 15 s")
    assert os.waitstatus_to_exitcode(status) == 0


# --- statuses, critical checks, exports ---------------------------------------------------
def test_health_app_checks_critical_and_not(tmp_path):
    app, monitor = make_app(tmp_path, MPESA_MONITOR_HEALTH_BACKGROUND=False, MPESA_MONITOR_HEALTH_INTERVAL=0.01)
    state = {"redis": True, "ledger": True}

    @monitor.health_check("redis", critical=False, timeout=0.5)
    def redis_ok():
        return state["redis"]

    @monitor.health_check("ledger", critical=True)
    def ledger_ok():
        if not state["ledger"]:
            raise ConnectionError("ledger unreachable at 254712345678")
        return {"status": "healthy", "lag_s": 0}

    client = app.test_client()
    assert client.get("/health/detailed").status_code == 200
    state["redis"] = False
    time.sleep(0.02)
    response = client.get("/health/detailed", headers=AUTH)
    assert response.status_code == 200
    assert response.json["status"]["application"] == "degraded"
    assert response.json["checks"]["redis"]["status"] == "unhealthy"
    assert response.json["checks"]["redis"]["timeout_s"] == 0.5
    state["ledger"] = False
    time.sleep(0.02)
    response = client.get("/health/detailed", headers=AUTH)
    assert response.status_code == 503
    assert response.json["checks"]["ledger"]["error"].startswith("ConnectionError: ledger unreachable")
    assert "254712345678" not in response.text
    assert value("mpesa_health_check_status", check="ledger") == 0
    assert value("mpesa_health_check_status", check="redis") == 0


def test_health_results_exported_as_gauges(tmp_path):
    app, monitor = make_app(tmp_path, MPESA_MONITOR_HEALTH_BACKGROUND=False)

    @monitor.health_check("slowish", timeout=1.0)
    def slowish():
        time.sleep(0.05)
        return "degraded"

    monitor.run_health_checks()
    assert value("mpesa_health_check_status", check="database") == 1
    assert value("mpesa_health_check_status", check="slowish") == 0.5
    assert 0.05 <= value("mpesa_health_check_duration_seconds", check="slowish") < 1.0


def test_health_json_ietf_shape_when_asked(tmp_path):
    app, _ = make_app(MPESA_MONITOR_DATABASE_URL=f"sqlite:///{tmp_path}/missing/dir/db",
                      MPESA_MONITOR_HEALTH_BACKGROUND=False)
    client = app.test_client()
    response = client.get("/health/detailed", headers={"Accept": "application/health+json", **AUTH})
    assert response.status_code == 503
    assert response.mimetype == "application/health+json"
    body = response.json
    assert body["status"] == "fail" and body["serviceId"] == "mpesa-mcp"
    [database] = body["checks"]["database:responseTime"]
    assert database["status"] == "fail" and database["componentType"] == "datastore"
    assert database["observedUnit"] == "ms" and "unable to open" in database["output"]
    [system] = body["checks"]["system:utilization"]
    assert system["observedUnit"] == "percent" and system["status"] in ("pass", "warn")
    plain = client.get("/health/detailed", headers={"Accept": "application/json"})
    assert plain.mimetype == "application/json" and "checks" in plain.json
    anonymous = client.get("/health/detailed", headers={"Accept": "application/health+json"}).json
    assert "output" not in anonymous["checks"]["database:responseTime"][0]


def test_health_bad_database_url_fails_at_init_app():
    with pytest.raises(ValueError, match="postgresql://... or sqlite:///path"):
        make_app(MPESA_MONITOR_DATABASE_URL="mysql://user:pw@db/app")


def test_health_factory_and_sqlalchemy_engine_sources(tmp_path):
    sqlalchemy = pytest.importorskip("sqlalchemy")
    app, monitor = make_app(MPESA_MONITOR_HEALTH_BACKGROUND=False)
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'engine.db'}")
    try:
        monitor.set_database(engine)
        result = monitor.run_health_checks().results["database"]
        assert result.status == "healthy" and result.details["backend"] == "sqlalchemy"
    finally:
        engine.dispose()
    monitor.set_database(CountingFactory(tmp_path / "factory.db"))
    result = monitor.run_health_checks().results["database"]
    assert result.status == "healthy" and result.details["backend"] == "factory"
    with pytest.raises(ValueError, match="Cannot health-check a database"):
        monitor.set_database(42)


# --- system -------------------------------------------------------------------------------
def test_health_system_exports_ratios_and_degrades_above_threshold(tmp_path):
    app, monitor = make_app(MPESA_MONITOR_HEALTH_BACKGROUND=False, MPESA_MONITOR_MEMORY_WARNING=0.0001,
                            MPESA_MONITOR_DISK_PATH=str(tmp_path))
    result = monitor.run_health_checks().results["system"]
    assert result.status == "degraded" and "memory" in result.error
    details = result.details
    assert value("mpesa_system_memory_usage_ratio") == details["memory_usage_ratio"] or \
        abs(value("mpesa_system_memory_usage_ratio") - details["memory_usage_ratio"]) < 1e-3
    assert 0 < value("mpesa_system_disk_usage_ratio") <= 1
    assert 0 <= value("mpesa_system_cpu_usage_ratio") <= 1
    assert details["memory_warning_ratio"] == 0.0001


# --- security -----------------------------------------------------------------------------
def test_health_security_degraded_after_cross_tenant_attempt():
    app, monitor = make_app(MPESA_MONITOR_HEALTH_BACKGROUND=False, MPESA_MONITOR_SECURITY_WINDOW=0.3)
    assert monitor.run_health_checks().results["security"].status == "healthy"
    monitor.verify_tenant_isolation("sec-acme", "sec-jambo")
    result = monitor.run_health_checks().results["security"]
    assert result.status == "degraded" and "cross-tenant" in result.error
    time.sleep(0.35)
    assert monitor.run_health_checks().results["security"].status == "healthy"


def test_health_encryption_self_test_makes_security_unhealthy():
    app, monitor = make_app(MPESA_MONITOR_HEALTH_BACKGROUND=False)
    outcome = {"value": True}

    @monitor.encryption_self_test
    def self_test():
        if outcome["value"] == "raise":
            raise RuntimeError("key store unavailable")
        return outcome["value"]

    assert monitor.run_health_checks().results["security"].status == "healthy"
    outcome["value"] = False
    result = monitor.run_health_checks().results["security"]
    assert result.status == "unhealthy" and result.error == "encryption self-test failed"
    outcome["value"] = "raise"
    result = monitor.run_health_checks().results["security"]
    assert result.status == "unhealthy" and "RuntimeError: key store unavailable" in result.error
    # security is not critical: the app stays ready
    assert app.test_client().get("/health/detailed").status_code == 200


def test_health_audit_verifier_exports_count_and_alerts(http_recorder):
    alertmanager = http_recorder()
    app, monitor = make_app(MPESA_MONITOR_HEALTH_BACKGROUND=False,
                            MPESA_MONITOR_ALERTMANAGER_URL=alertmanager.url,
                            MPESA_MONITOR_RUNBOOK_URL="http://127.0.0.1:8025/runbooks")
    tampered = {"count": 0}
    monitor.audit_verifier(lambda: tampered["count"])
    assert monitor.run_health_checks().results["security"].status == "healthy"
    assert value("mpesa_audit_tampered_entries") == 0
    tampered["count"] = 3
    result = monitor.run_health_checks().results["security"]
    assert result.status == "unhealthy" and result.details["audit_tampered_entries"] == 3
    assert value("mpesa_audit_tampered_entries") == 3
    [post] = alertmanager.wait_for(1, path="/api/v2/alerts", method="POST")
    [alert] = post.json()
    assert alert["labels"] == {"alertname": "AuditLogTampering", "severity": "critical",
                               "service": "mpesa-mcp", "source": "app"}
    assert alert["annotations"]["runbook_url"] == "http://127.0.0.1:8025/runbooks#auditlogtampering"
    monitor.run_health_checks()  # same count within the resend interval: no second alert
    time.sleep(0.3)
    assert len(alertmanager.received(path="/api/v2/alerts")) == 1
    tampered["count"] = 0
    monitor.run_health_checks()
    assert value("mpesa_audit_tampered_entries") == 0


# --- mpesa_api ----------------------------------------------------------------------------
def daraja_app(url, **config):
    """On-demand checks with a tiny cache interval: every request runs them again."""
    return make_app(MPESA_MONITOR_HEALTH_BACKGROUND=False, MPESA_MONITOR_HEALTH_INTERVAL=0.001,
                    MPESA_MONITOR_DARAJA_BASE_URL=url, **config)


def test_health_mpesa_api_absent_unless_configured():
    _, monitor = make_app(MPESA_MONITOR_HEALTH_BACKGROUND=False)
    assert "mpesa_api" not in monitor.run_health_checks().results


def test_health_mpesa_api_oauth_with_credentials_never_shown(http_recorder, caplog):
    daraja = http_recorder()
    daraja.set_response("/oauth/v1/generate", 200, {"access_token": "tok-secret-123", "expires_in": "3599"})
    key, secret = "consumer-key-abc", "consumer-secret-xyz"
    app, monitor = daraja_app(daraja.url, MPESA_MONITOR_DARAJA_CONSUMER_KEY=key,
                              MPESA_MONITOR_DARAJA_CONSUMER_SECRET=secret)
    caplog.set_level(logging.DEBUG)
    response = app.test_client().get("/health/detailed", headers=AUTH)
    assert response.json["status"]["mpesa_api"] == "healthy"
    [request] = daraja.received(path="/oauth/v1/generate")
    assert request.query == {"grant_type": ["client_credentials"]}
    assert request.headers["authorization"].startswith("Basic ")
    daraja.set_response("/oauth/v1/generate", 400, {"errorMessage": f"Invalid key {key}"})
    time.sleep(0.01)  # past the cache interval
    response = app.test_client().get("/health/detailed", headers=AUTH)
    check = response.json["checks"]["mpesa_api"]
    assert check["status"] == "unhealthy" and "HTTP 400" in check["error"]
    assert response.status_code == 200  # not critical
    for text in (response.text, caplog.text):
        assert key not in text and secret not in text and "tok-secret-123" not in text


def test_health_mpesa_api_degraded_when_slow_and_plain_get_without_credentials(http_recorder):
    daraja = http_recorder()
    daraja.set_response("/", 404, "not found", delay=0.3)
    _, monitor = daraja_app(daraja.url, MPESA_MONITOR_DARAJA_LATENCY_THRESHOLD=0.1)
    result = monitor.run_health_checks().results["mpesa_api"]
    assert result.status == "degraded" and "threshold 0.1 s" in result.error
    assert [r.path for r in daraja.received()] == ["/"]
    daraja.set_response("/", 503, "busy")
    assert monitor.run_health_checks().results["mpesa_api"].status == "unhealthy"


def test_health_mpesa_api_unreachable():
    _, monitor = daraja_app(f"http://127.0.0.1:{free_port()}")
    result = monitor.run_health_checks().results["mpesa_api"]
    assert result.status == "unhealthy" and "ConnectionError" in result.error


def test_health_check_status_gauge_reflects_each_run(tmp_path):
    app, monitor = make_app(tmp_path, MPESA_MONITOR_HEALTH_BACKGROUND=False)
    healthy = {"ok": True}
    monitor.health_check("flaky")(lambda: healthy["ok"])
    monitor.run_health_checks()
    assert value("mpesa_health_check_status", check="flaky") == 1
    healthy["ok"] = False
    monitor.run_health_checks()
    assert value("mpesa_health_check_status", check="flaky") == 0
    body = json.loads(app.test_client().get("/health/detailed").data)
    assert body["checks"]["flaky"]["status"] == "unhealthy"
