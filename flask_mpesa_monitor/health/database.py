"""The ``database`` check: ``SELECT 1`` through whatever the app uses to reach its database.

Accepted sources (:func:`database_probe` tells them apart by shape, so this module
imports neither SQLAlchemy nor a pool class):

- a DSN string: ``postgresql://...`` (psycopg2) or ``sqlite:///path`` (sqlite3);
  libpq ``key=value`` strings go to psycopg2 too;
- a SQLAlchemy engine (anything with ``.connect()`` and ``.pool``);
- a psycopg2 pool (``getconn``/``putconn``), which also feeds
  ``mpesa_mcp_active_connections{state="in_use"|"idle"}``;
- a connection factory: a callable returning a DB-API connection.

A psycopg2 connection of our own is opened with ``connect_timeout`` and
``statement_timeout`` so the check thread ends on its own even when the server accepts
the connection and never answers; the runner abandons it at the check's timeout anyway.
Error messages keep their first line only and pass through :func:`redact.mask_phones`,
which hides a password in every common DSN shape (a URL, also with an empty user as in
``redis://:pw@host`` or an ``@`` inside the password, and libpq ``password=...``) and any
phone number: no DSN password or number reaches the output.
"""

from __future__ import annotations

import math
import sqlite3
import threading
from collections.abc import Callable
from typing import Any

from .. import metrics
from ..redact import mask_phones
from .result import HEALTHY, UNHEALTHY, Outcome

SELECT_ONE = "SELECT 1"


class DatabaseCheck:
    """Callable check over one database source; ``queries`` counts the probes sent."""

    def __init__(self, source: Any, timeout: float) -> None:
        self.kind, self._probe, self._pool_stats = database_probe(source, timeout)
        self.queries = 0
        self._lock = threading.Lock()

    def __call__(self) -> Outcome:
        with self._lock:
            self.queries += 1
        details: dict[str, Any] = {"backend": self.kind}
        try:
            self._probe()
        except Exception as exc:
            self._export_pool(details)
            return Outcome(UNHEALTHY, error=describe_error(exc), details=details)
        self._export_pool(details)
        return Outcome(HEALTHY, details=details)

    def _export_pool(self, details: dict[str, Any]) -> None:
        if self._pool_stats is None:
            return
        try:
            in_use, idle = self._pool_stats()
        except Exception:  # a pool without the attributes we read: no pool figures
            return
        metrics.active_connections.labels("in_use").set(in_use)
        metrics.active_connections.labels("idle").set(idle)
        details["pool_in_use"], details["pool_idle"] = in_use, idle


def describe_error(exc: BaseException) -> str:
    """First line of an exception, prefixed with its class, masked (no DSN password)."""
    text = str(exc).strip().splitlines()
    first = text[0].strip() if text else ""
    message = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return mask_phones(message)[:300]


def database_probe(
    source: Any, timeout: float
) -> tuple[str, Callable[[], None], Callable[[], tuple[int, int]] | None]:
    """``(kind, probe, pool_stats)`` for a database source; raises ValueError if unknown."""
    if isinstance(source, str):
        return _dsn_probe(source, timeout)
    if hasattr(source, "getconn") and hasattr(source, "putconn"):
        return "psycopg2_pool", lambda: _pool_select(source), lambda: _psycopg2_pool_stats(source)
    if hasattr(source, "connect") and hasattr(source, "pool"):
        return "sqlalchemy", lambda: _engine_select(source), lambda: _sqlalchemy_pool_stats(source)
    if callable(source):
        return "factory", lambda: _factory_select(source), None
    raise ValueError(
        f"Cannot health-check a database given as {type(source).__name__}: pass a DSN "
        "(postgresql://... or sqlite:///path), a SQLAlchemy engine, a psycopg2 pool or a "
        "callable returning a DB-API connection."
    )


# --- DSNs -----------------------------------------------------------------------------
def _dsn_probe(dsn: str, timeout: float) -> tuple[str, Callable[[], None], None]:
    scheme = dsn.split("://", 1)[0].lower() if "://" in dsn else ""
    base = scheme.split("+", 1)[0]
    if base == "sqlite":
        path = dsn.split("://", 1)[1]
        path = path[1:] if path.startswith("/") else path  # sqlite:///rel, sqlite:////abs
        return "sqlite", lambda: _sqlite_select(path or ":memory:", timeout), None
    if base in ("postgresql", "postgres") or (not scheme and "=" in dsn):
        if "+" in scheme:  # SQLAlchemy spelling: postgresql+psycopg2://
            dsn = base + "://" + dsn.split("://", 1)[1]
        return "postgresql", lambda: _postgres_select(dsn, timeout), None
    raise ValueError(
        "MPESA_MONITOR_DATABASE_URL must be a postgresql://... or sqlite:///path URL "
        f"(got one with scheme {scheme or 'none'!r})."
    )


def _sqlite_select(path: str, timeout: float) -> None:
    conn = sqlite3.connect(path, timeout=timeout)
    try:
        conn.execute(SELECT_ONE).fetchone()
    finally:
        conn.close()


def postgres_options(timeout: float) -> dict[str, Any]:
    """psycopg2 keyword arguments bounding connect and statement time.

    libpq's ``connect_timeout`` is whole seconds (at least 2); it is set one second
    past the check timeout so that the runner's "timed out after N s" is what the
    operator reads, while the thread still ends by itself shortly after.
    """
    return {
        "connect_timeout": max(2, math.ceil(timeout) + 1),
        "options": f"-c statement_timeout={max(1, int(timeout * 1000))}",
        "application_name": "flask-mpesa-monitor-health",
    }


def _postgres_select(dsn: str, timeout: float) -> None:
    import psycopg2

    conn = psycopg2.connect(dsn, **postgres_options(timeout))
    try:
        with conn.cursor() as cur:
            cur.execute(SELECT_ONE)
            cur.fetchone()
    finally:
        conn.close()


# --- handed-over sources --------------------------------------------------------------
def _pool_select(pool: Any) -> None:
    conn = pool.getconn()
    broken = True
    try:
        with conn.cursor() as cur:
            cur.execute(SELECT_ONE)
            cur.fetchone()
        if not getattr(conn, "autocommit", True):
            conn.rollback()
        broken = False
    finally:
        pool.putconn(conn, close=broken)


def _psycopg2_pool_stats(pool: Any) -> tuple[int, int]:
    return len(pool._used), len(pool._pool)


def _engine_select(engine: Any) -> None:
    with engine.connect() as conn:
        if hasattr(conn, "exec_driver_sql"):
            conn.exec_driver_sql(SELECT_ONE).fetchone()
        else:  # SQLAlchemy < 1.4
            conn.execute(SELECT_ONE).fetchone()


def _sqlalchemy_pool_stats(engine: Any) -> tuple[int, int]:
    pool = engine.pool
    return int(pool.checkedout()), int(pool.checkedin())


def _factory_select(factory: Callable[[], Any]) -> None:
    conn = factory()
    try:
        cur = conn.cursor()
        try:
            cur.execute(SELECT_ONE)
            cur.fetchone()
        finally:
            close = getattr(cur, "close", None)
            if close is not None:
                close()
    finally:
        conn.close()
