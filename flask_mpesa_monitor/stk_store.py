"""Where pending STK pushes and seen callbacks are kept: in memory, or shared by workers.

Under gunicorn, the worker that sent a push is often not the one that receives its
callback, and Daraja retries callbacks, maybe to a third worker. A per-process table
would then count half the pushes as "missing" and the same payment twice. So, when
metrics are multiprocess (``PROMETHEUS_MULTIPROC_DIR``), the table is a small SQLite
file beside the metric files that every worker of the host shares; one process alone
uses memory. Both are bounded.

Each operation is atomic, so a callback is matched once and a push expires once,
whichever worker gets there first.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections import OrderedDict
from typing import NamedTuple, Protocol


class Push(NamedTuple):
    organization: str
    started: float
    amount: float


class Completion(NamedTuple):
    outcome: str
    result_code: str
    amount: float


class PendingStore(Protocol):
    def add(self, checkout: str, push: Push) -> list[Push]:
        """Remember a push; return pushes evicted to keep the bound (they count as missing).
        A push already pending or completed is ignored."""

    def complete(self, checkout: str, completion: Completion) -> tuple[Completion | None, Push | None]:
        """Mark a callback seen. Returns ``(previous, push)``: ``previous`` is the earlier
        completion when this is a duplicate (nothing changed then), ``push`` the pending
        push it matched, if any."""

    def expire(self, deadline: float) -> list[Push]:
        """Remove and return pushes started before ``deadline``."""

    def pending_count(self) -> int: ...

    def pending_by_organization(self) -> dict[str, int]:
        """Pending pushes per organization (read only: the exporter's ``mpesa_stk_pending``)."""


class MemoryPendingStore:
    """One process's table: ordered dicts, oldest first."""

    def __init__(self, max_pending: int) -> None:
        self.max_pending = max_pending
        self._pending: OrderedDict[str, Push] = OrderedDict()
        self._completed: OrderedDict[str, Completion] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, checkout: str, push: Push) -> list[Push]:
        evicted: list[Push] = []
        with self._lock:
            if checkout in self._pending or checkout in self._completed:
                return evicted
            self._pending[checkout] = push
            while len(self._pending) > self.max_pending:
                evicted.append(self._pending.popitem(last=False)[1])
        return evicted

    def complete(self, checkout: str, completion: Completion) -> tuple[Completion | None, Push | None]:
        with self._lock:
            previous = self._completed.get(checkout)
            if previous is not None:
                return previous, None
            push = self._pending.pop(checkout, None)
            self._completed[checkout] = completion
            while len(self._completed) > self.max_pending:
                self._completed.popitem(last=False)
        return None, push

    def expire(self, deadline: float) -> list[Push]:
        expired: list[Push] = []
        with self._lock:
            while self._pending:
                checkout, push = next(iter(self._pending.items()))
                if push.started > deadline:
                    break
                del self._pending[checkout]
                expired.append(push)
        return expired

    def pending_count(self) -> int:
        return len(self._pending)

    def pending_by_organization(self) -> dict[str, int]:
        with self._lock:
            pushes = list(self._pending.values())
        counts: dict[str, int] = {}
        for push in pushes:
            counts[push.organization] = counts.get(push.organization, 0) + 1
        return counts


_SCHEMA = """
CREATE TABLE IF NOT EXISTS pending (
    checkout TEXT PRIMARY KEY, organization TEXT NOT NULL, started REAL NOT NULL, amount REAL NOT NULL);
CREATE INDEX IF NOT EXISTS pending_started ON pending (started);
CREATE TABLE IF NOT EXISTS completed (
    checkout TEXT PRIMARY KEY, outcome TEXT NOT NULL, result_code TEXT NOT NULL, amount REAL NOT NULL,
    done REAL NOT NULL);
CREATE INDEX IF NOT EXISTS completed_done ON completed (done);
"""


class SQLitePendingStore:
    """The table shared by the workers of one host, in a SQLite file (WAL mode)."""

    def __init__(self, path: str, max_pending: int) -> None:
        self.path = path
        self.max_pending = max_pending
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._conn: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        # One connection per process: a connection must not cross a fork.
        if self._conn is None or self._pid != os.getpid():
            conn = sqlite3.connect(self.path, timeout=5.0, isolation_level=None, check_same_thread=False)
            # Workers starting together race to switch the file to WAL and create the
            # tables; switching needs a moment alone with the file, which busy_timeout
            # does not cover: retry briefly (bounded).
            for attempt in range(50):
                try:
                    conn.execute("PRAGMA journal_mode=WAL")
                    conn.executescript(_SCHEMA)
                    break
                except sqlite3.OperationalError:
                    if attempt == 49:
                        conn.close()
                        raise
                    time.sleep(0.02)
            conn.execute("PRAGMA synchronous=NORMAL")
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def _transaction(self):  # type: ignore[no-untyped-def]
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        return conn

    def add(self, checkout: str, push: Push) -> list[Push]:
        with self._lock:
            conn = self._transaction()
            try:
                seen = conn.execute("SELECT 1 FROM completed WHERE checkout = ?", (checkout,)).fetchone()
                if seen is None:
                    conn.execute("INSERT OR IGNORE INTO pending VALUES (?, ?, ?, ?)", (checkout, *push))
                excess = conn.execute("SELECT count(*) FROM pending").fetchone()[0] - self.max_pending
                evicted: list[Push] = []
                if excess > 0:
                    evicted = [Push(*row) for row in conn.execute(
                        "DELETE FROM pending WHERE checkout IN "
                        "(SELECT checkout FROM pending ORDER BY started LIMIT ?) "
                        "RETURNING organization, started, amount", (excess,))]
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return evicted

    def complete(self, checkout: str, completion: Completion) -> tuple[Completion | None, Push | None]:
        with self._lock:
            conn = self._transaction()
            try:
                row = conn.execute("SELECT outcome, result_code, amount FROM completed WHERE checkout = ?",
                                   (checkout,)).fetchone()
                if row is not None:
                    conn.execute("COMMIT")
                    return Completion(*row), None
                found = conn.execute("DELETE FROM pending WHERE checkout = ? RETURNING organization, started, amount",
                                     (checkout,)).fetchone()
                conn.execute("INSERT INTO completed VALUES (?, ?, ?, ?, ?)", (checkout, *completion, time.time()))
                conn.execute(
                    "DELETE FROM completed WHERE checkout IN (SELECT checkout FROM completed ORDER BY done DESC "
                    "LIMIT -1 OFFSET ?)", (self.max_pending,))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return None, Push(*found) if found else None

    def expire(self, deadline: float) -> list[Push]:
        with self._lock:
            conn = self._connection()
            rows = conn.execute("DELETE FROM pending WHERE started <= ? RETURNING organization, started, amount",
                                (deadline,)).fetchall()
        return [Push(*row) for row in rows]

    def pending_count(self) -> int:
        with self._lock:
            return self._connection().execute("SELECT count(*) FROM pending").fetchone()[0]

    def pending_by_organization(self) -> dict[str, int]:
        with self._lock:
            rows = self._connection().execute(
                "SELECT organization, count(*) FROM pending GROUP BY organization").fetchall()
        return {organization: count for organization, count in rows}


def default_store(max_pending: int, path: str | None = None) -> PendingStore:
    """SQLite beside the multiprocess metric files when there are any, else memory."""
    if path is None:
        directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if directory:
            # Not *.db: prometheus_client reads every *.db file there as metrics.
            path = os.path.join(directory, "mpesa_monitor_stk.sqlite")
    if path:
        return SQLitePendingStore(path, max_pending)
    return MemoryPendingStore(max_pending)
