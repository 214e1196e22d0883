"""The `database` check against a real PostgreSQL 15, started and stopped by the tests."""

import threading
import time

import pytest
from flask import Flask
from metric_values import value

from examples.demo.servers import wait_until
from flask_mpesa_monitor import MPesaMonitor

pytestmark = pytest.mark.slow

TOKEN = "pg-health-token"
INTERVAL = 0.3


def make_app(**config):
    app = Flask(__name__)
    app.config.update(MPESA_MONITOR_HEALTH_TOKEN=TOKEN, **config)
    monitor = MPesaMonitor(app)
    return app, monitor


def test_health_postgres_down_and_back_within_one_interval(postgres):
    app, _ = make_app(MPESA_MONITOR_DATABASE_URL=postgres.dsn, MPESA_MONITOR_HEALTH_INTERVAL=INTERVAL,
                      MPESA_MONITOR_HEALTH_TIMEOUT=2.0)
    runner = app.extensions["mpesa_monitor"].health
    client = app.test_client()
    try:
        response = client.get("/health/detailed", headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 200, response.text
        assert response.json["status"]["database"] == "healthy"
        assert response.json["checks"]["database"]["details"]["backend"] == "postgresql"
        assert postgres.password not in response.text
        assert value("mpesa_health_check_status", check="database") == 1

        postgres.stop()
        stopped = time.monotonic()
        # a run starts at most one interval later; a refused connection fails at once
        wait_until(lambda: client.get("/health/detailed").status_code == 503, timeout=INTERVAL + 1.0,
                   interval=0.02, description="503 after PostgreSQL stopped")
        assert time.monotonic() - stopped < INTERVAL + 1.0
        assert value("mpesa_health_check_status", check="database") == 0
        detailed = client.get("/health/detailed", headers={"Authorization": f"Bearer {TOKEN}"})
        assert detailed.json["checks"]["database"]["status"] == "unhealthy"
        assert "OperationalError" in detailed.json["checks"]["database"]["error"]
        assert postgres.password not in detailed.text

        postgres.start()
        wait_until(lambda: client.get("/health/detailed").status_code == 200, timeout=INTERVAL + 3.0,
                   interval=0.05, description="healthy again after PostgreSQL started")
        assert value("mpesa_health_check_status", check="database") == 1
    finally:
        runner.stop()


def test_health_postgres_1000_concurrent_requests_send_one_query(postgres, fresh_database):
    name = fresh_database.rsplit("/", 1)[1]
    app, _ = make_app(MPESA_MONITOR_DATABASE_URL=fresh_database, MPESA_MONITOR_HEALTH_INTERVAL=60)
    runner = app.extensions["mpesa_monitor"].health
    before = postgres.calls("SELECT $1", database=name)
    statuses, barrier = [], threading.Barrier(1000, timeout=30)

    def probe():
        client = app.test_client()
        barrier.wait()
        statuses.append(client.get("/health/detailed").status_code)

    threads = [threading.Thread(target=probe) for _ in range(1000)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        runner.stop()
    assert statuses.count(200) == 1000
    assert runner.runs == 1
    assert postgres.calls("SELECT $1", database=name) - before == 1


def test_health_postgres_pool_feeds_active_connections(postgres):
    from psycopg2.pool import ThreadedConnectionPool

    pool = ThreadedConnectionPool(1, 4, postgres.dsn)
    held = [pool.getconn(), pool.getconn()]
    try:
        pool.putconn(held.pop())  # one idle, one in use by "the app"
        app, monitor = make_app(MPESA_MONITOR_HEALTH_BACKGROUND=False)
        monitor.set_database(pool)
        result = monitor.run_health_checks().results["database"]
        assert result.status == "healthy" and result.details["backend"] == "psycopg2_pool"
        assert value("mpesa_mcp_active_connections", state="in_use") == 1
        assert value("mpesa_mcp_active_connections", state="idle") == 1
        assert result.details["pool_in_use"] == 1 and result.details["pool_idle"] == 1
    finally:
        for conn in held:
            pool.putconn(conn)
        pool.closeall()


def test_health_postgres_sqlalchemy_engine(postgres):
    sqlalchemy = pytest.importorskip("sqlalchemy")
    engine = sqlalchemy.create_engine(postgres.dsn.replace("postgresql://", "postgresql+psycopg2://"))
    try:
        app, monitor = make_app(MPESA_MONITOR_HEALTH_BACKGROUND=False)
        monitor.set_database(engine)
        result = monitor.run_health_checks().results["database"]
        assert result.status == "healthy" and result.details["backend"] == "sqlalchemy"
        assert value("mpesa_mcp_active_connections", state="idle") == 1
    finally:
        engine.dispose()
