"""The admitted organizations of a host, shared by its gunicorn workers.

Each worker exports its own series, and prometheus_client keeps a dead worker's counter
files. If every worker admitted its own ``MPESA_MONITOR_MAX_ORGANIZATIONS`` values, N
workers and a few restarts (max_requests, HUP, a crash) would expose many times the
bound: an attacker sending random organization headers would grow ``/metrics`` with
every new worker. So under multiprocess metrics the admitted set is one small SQLite
table beside the metric files (like the STK table, and cleared with them when gunicorn
starts): a value admitted by one worker is admitted for all, a restarted worker finds
the set as it was, and the bound holds for the whole host.

Only an admission touches the table; lookups are answered from each worker's own dict
(see :class:`.tenancy.BoundedLabel`), so an attack costs at most one short transaction
per new value per worker before the bound is reached, and none after.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from typing import Protocol

from .sqlite_file import open_shared

FILENAME = "mpesa_monitor_organizations.sqlite"

_SCHEMA = "CREATE TABLE IF NOT EXISTS admitted (value TEXT PRIMARY KEY, admitted REAL NOT NULL)"


class AdmissionStore(Protocol):
    def admit(self, value: str, limit: int, force: bool = False) -> bool:
        """True when ``value`` is admitted (already, or now: the set had room, or
        ``force``); False when the set is full."""

    def admit_many(self, values: Iterable[str]) -> None:
        """Admit ``values`` whatever the bound."""

    def values(self) -> list[str]:
        """Every admitted value."""

    def reset(self) -> None: ...


class SQLiteAdmissionStore:
    """The admitted set in a SQLite file shared by the processes of one host."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._conn: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        # One connection per process: a connection must not cross a fork.
        if self._conn is None or self._pid != os.getpid():
            conn = open_shared(self.path, _SCHEMA)
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def admit(self, value: str, limit: int, force: bool = False) -> bool:
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                if conn.execute("SELECT 1 FROM admitted WHERE value = ?", (value,)).fetchone():
                    admitted = True
                elif force or conn.execute("SELECT count(*) FROM admitted").fetchone()[0] < limit:
                    conn.execute("INSERT INTO admitted VALUES (?, ?)", (value, time.time()))
                    admitted = True
                else:
                    admitted = False
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return admitted

    def admit_many(self, values: Iterable[str]) -> None:
        """Admit ``values`` whatever the bound (known tenants, at start)."""
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                now = time.time()
                conn.executemany("INSERT OR IGNORE INTO admitted VALUES (?, ?)", [(v, now) for v in values])
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def values(self) -> list[str]:
        with self._lock:
            return [row[0] for row in self._connection().execute("SELECT value FROM admitted ORDER BY admitted")]

    def reset(self) -> None:
        with self._lock:
            self._connection().execute("DELETE FROM admitted")


def default_admission_store() -> SQLiteAdmissionStore | None:
    """A store beside the multiprocess metric files when there are any, else None
    (one process: its own dict is the whole host's set)."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir")
    if not directory:
        return None
    # Not *.db: prometheus_client reads every *.db file there as metrics.
    return SQLiteAdmissionStore(os.path.join(directory, FILENAME))
