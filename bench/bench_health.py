"""4. Health under load: /health/detailed with 200 concurrent clients against a real PostgreSQL.

A throw-away PostgreSQL 15 (``examples/demo/servers.PostgresServer``, with
pg_stat_statements) backs the ``database`` check of our app (``bench.apps:create_ours``,
``MPESA_MONITOR_DATABASE_URL`` set) under gunicorn, 2 sync workers, multiprocess
metrics. The load generator holds 200 connections for 10 s on ``/health/detailed``;
beside it, the same load on ``/health`` (liveness, no check at all) is the floor that
the server and the load generator alone impose, and a 2-connection run gives the
service time without queueing. Database queries are counted by pg_stat_statements
for the app's role only, over the server's whole life.

Targets: p99 under 20 ms, and at most one database query per worker per
health interval (``MPESA_MONITOR_HEALTH_INTERVAL``; the checks run in a background
thread and the endpoint serves the cache).

The health checks were written alongside this benchmark; when the installed
extension has no ``/health/detailed`` or no database check, the benchmark is skipped
with the reason.

Run alone: ``python -m bench.bench_health [--duration S] [--clients N]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from .common import REPO_ROOT, Result, Target, fmt, ratio
from .load import run_load

#: Shorter than the extension's default (15 s) so that a short run spans several
#: intervals and the query bound is tested, not trivially met.
HEALTH_INTERVAL = 5.0


def unavailable() -> str | None:
    """Why this benchmark cannot run with the extension as installed (None: it can)."""
    if importlib.util.find_spec("flask_mpesa_monitor.health") is None:
        return "flask_mpesa_monitor.health does not exist yet (the health checks are not written)."
    from flask_mpesa_monitor import config

    if not any(setting.key == "DATABASE_URL" for setting in config.SETTINGS):
        return "the extension has no MPESA_MONITOR_DATABASE_URL setting."
    from . import apps

    app = apps.create_ours(MPESA_MONITOR_HEALTH_BACKGROUND=False)
    if not any(rule.rule == "/health/detailed" for rule in app.url_map.iter_rules()):
        return "the extension does not serve /health/detailed yet."
    state = app.extensions.get("mpesa_monitor")
    if state is None or not hasattr(state, "set_database") and not hasattr(state, "database_check"):
        return "the extension has no database health check wired in yet."
    return None


#: Statements that are transaction control, not queries (psycopg2 sends BEGIN itself
#: unless the connection is in autocommit mode); reported, not counted as queries.
TRANSACTION_CONTROL = {"BEGIN", "COMMIT", "ROLLBACK"}


def _queries(pg: Any, role: str, database: str) -> dict[str, int]:
    """Statements (normalized text -> calls) run by ``role`` in ``database``."""
    rows = pg.admin_execute(
        "SELECT s.query, sum(s.calls) FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid "
        "JOIN pg_database d ON d.oid = s.dbid WHERE r.rolname = %s AND d.datname = %s GROUP BY s.query",
        [role, database], database=database,
    )
    return {query: int(calls) for query, calls in rows}


def run(duration: float = 10.0, clients: int = 200, workers: int = 2,
        interval: float = HEALTH_INTERVAL, tool: str = "auto", postgres: Any = None) -> Result:
    """Run the benchmark; ``postgres`` is a running ``PostgresServer`` to use (else one is made)."""
    started = time.monotonic()
    result = Result(
        key="health",
        title="4. Health under load (/health/detailed, real PostgreSQL)",
        method=(
            f"gunicorn {workers} sync workers (multiprocess metrics), our app with "
            f"`MPESA_MONITOR_DATABASE_URL` pointing at a local PostgreSQL 15 and "
            f"`MPESA_MONITOR_HEALTH_INTERVAL={interval:g}`; {clients} concurrent connections for "
            f"{duration:g} s on `/health/detailed`, the same on `/health` (liveness, the floor), and "
            "2 connections on `/health/detailed` (service time without queueing). Database queries "
            "from pg_stat_statements for the app's role over the server's whole life (start, the "
            "three runs)."
        ),
    )
    reason = unavailable()
    if reason:
        result.skipped = reason
        result.targets = [
            Target("health p99", "< 20 ms with 200 clients", "skipped", None, reason),
            Target("database queries", "≤ 1 per worker per health interval", "skipped", None, reason),
        ]
        result.seconds = time.monotonic() - started
        return result

    from examples.demo.servers import GunicornServer, PostgresServer

    workdir = Path(tempfile.mkdtemp(prefix="bench-health-"))
    runs: dict[str, dict[str, Any]] = {}
    own = postgres is None
    pg = PostgresServer() if own else postgres
    database = None
    try:
        if own:
            pg.start()
        dsn = pg.create_database()
        database = dsn.rsplit("/", 1)[1]
        env = {
            "MPESA_MONITOR_DATABASE_URL": dsn,
            "MPESA_MONITOR_HEALTH_INTERVAL": str(interval),
        }
        pg.reset_statements()
        t0 = time.monotonic()
        with GunicornServer("bench.apps:create_ours()", workers=workers, env=env,
                            multiproc_dir=workdir / "prom", base_dir=workdir / "run",
                            cwd=REPO_ROOT, ready_path="/health") as server:
            status, body = server.get("/health/detailed")
            if status != 200 or b'"database"' not in body:
                raise RuntimeError(f"/health/detailed answered {status} before the load: {body[:500]!r}")
            runs["detailed"] = run_load(server.url, ["/health/detailed"], duration, clients, tool,
                                        threads=2).as_dict()
            runs["floor"] = run_load(server.url, ["/health"], duration, clients, tool, threads=2).as_dict()
            runs["detailed_2"] = run_load(server.url, ["/health/detailed"], max(1.0, duration / 2), 2,
                                          tool).as_dict()
            window = time.monotonic() - t0
            queries = _queries(pg, pg.user, database)
    finally:
        if own:
            pg.cleanup()
        elif database is not None:
            pg.drop_database(database)
        shutil.rmtree(workdir, ignore_errors=True)

    control = {q: n for q, n in queries.items() if q.strip().upper() in TRANSACTION_CONTROL}
    total_queries = sum(n for q, n in queries.items() if q not in control)
    allowed = workers * (math.floor(window / interval) + 1)
    d, f, low = runs["detailed"], runs["floor"], runs["detailed_2"]
    result.header = ["endpoint", "connections", "req/s", "p50 ms", "p99 ms", "errors"]
    result.rows = [
        ["/health/detailed", str(clients), fmt(d["rps"], 0), fmt(d["p50_ms"], 2), fmt(d["p99_ms"], 2),
         str(d["errors"] + d["non_2xx"])],
        ["/health (liveness, floor)", str(clients), fmt(f["rps"], 0), fmt(f["p50_ms"], 2), fmt(f["p99_ms"], 2),
         str(f["errors"] + f["non_2xx"])],
        ["/health/detailed", "2", fmt(low["rps"], 0), fmt(low["p50_ms"], 2), fmt(low["p99_ms"], 2),
         str(low["errors"] + low["non_2xx"])],
    ]
    result.data = {"runs": runs, "queries": queries, "total_queries": total_queries,
                   "allowed_queries": allowed, "transaction_control": sum(control.values()),
                   "window_s": window, "interval_s": interval, "workers": workers, "clients": clients}
    little = clients / d["rps"] * 1000 if d["rps"] > 0 else float("nan")
    result.targets.append(Target(
        "health p99", f"< 20 ms with {clients} clients", f"{fmt(d['p99_ms'], 1)} ms "
        f"(floor /health: {fmt(f['p99_ms'], 1)} ms; 2 clients: {fmt(low['p99_ms'], 1)} ms)",
        bool(d["p99_ms"] < 20),
        reason=(
            f"queueing, not the check: {clients} clients on {workers} sync workers wait "
            f"{fmt(little, 0)} ms on average by Little's law at {fmt(d['rps'], 0)} req/s; "
            f"/health, which runs no check at all, shows {fmt(f['p99_ms'], 1)} ms under the same load, "
            f"and /health/detailed alone answers in {fmt(low['p99_ms'], 1)} ms at p99 "
            f"({fmt(ratio(d['rps'], f['rps']), 2)}× the liveness throughput)."
        ) if d["p99_ms"] >= 20 else "",
    ))
    result.targets.append(Target(
        "database queries", "≤ 1 per worker per health interval",
        f"{total_queries} in {fmt(window, 1)} s with {workers} workers, interval {interval:g} s "
        f"(bound {allowed})",
        bool(total_queries <= allowed),
    ))
    if queries:
        result.notes.append("Statements seen: " + "; ".join(f"`{k}` × {v}" for k, v in sorted(queries.items())))
    if control:
        result.notes.append(
            "Transaction control is not counted as a query, but each is a round trip: a probe in "
            "autocommit mode (`conn.autocommit = True`) would send `SELECT 1` alone.")
    result.seconds = time.monotonic() - started
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--tool", choices=("auto", "wrk", "python"), default="auto")
    args = parser.parse_args()
    print(run(args.duration, args.clients, tool=args.tool).markdown())


if __name__ == "__main__":
    main()
