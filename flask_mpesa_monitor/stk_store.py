"""Where STK pushes and their callbacks meet: one row per CheckoutRequestID, one state.

Under gunicorn, the worker that sent a push is often not the one that receives its
callback, and Daraja retries callbacks, maybe to a third worker. A per-process table
would then count half the pushes as "missing" and the same payment twice. So, when
metrics are multiprocess (``PROMETHEUS_MULTIPROC_DIR``), the table is a small SQLite
file beside the metric files that every worker of the host shares; one process alone
keeps it in memory (SQLite ``:memory:``, same code); several hosts behind a load
balancer can share one table in the app's PostgreSQL (``MPESA_MONITOR_STK_STORE_URL``).

Each CheckoutRequestID has exactly one row, in one of four states, and every change is
one atomic transition, so whichever worker (or host) gets there first wins and nothing
is counted twice:

=========  ==========================================================================
``pending``  a push waiting for its callback
``missing``  a push whose callback did not come in time (counted missing); a late
             callback may still resolve it, once
``held``     a callback whose push was not (yet) recorded: the app records a push
             after Daraja's answer returns, and a fast failure callback can beat it;
             held for a grace period, then counted as unmatched
``done``     resolved: matched (on time or late), or given up; later callbacks with
             the same id are duplicates
=========  ==========================================================================

A callback and a later reconciliation (an STK Query result) go through the same
:meth:`SQLPendingStore.complete`, so a push is resolved once whichever reports first.

Bounds: at most ``max_pending`` pending rows (the oldest are evicted as missing) and as
many resolved rows (the oldest are forgotten; held ones are first counted unmatched),
checked every few writes (:attr:`SQLPendingStore.check_every`);
every stored string has a length limit (:data:`MAX_ID_LENGTH` and the label limits), and
the SQLite file has a hard page limit (:func:`max_bytes`). A full table raises; the
tracker logs it and the payment request goes on.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from .sqlite_file import open_shared

#: Daraja's CheckoutRequestIDs look like ``ws_CO_191220191020363925`` (about 30
#: characters); anything longer is not one of them and is refused before it is stored.
MAX_ID_LENGTH = 64
MAX_CODE_LENGTH = 32
MAX_LABEL_LENGTH = 64  # organization label values (tenancy admits at most 64 characters)

#: Rows older than this are removed when a server starts (see :func:`prune_on_start`).
START_MAX_AGE = 24 * 3600.0

#: File name beside the multiprocess metric files. Not ``*.db``: prometheus_client
#: reads every ``*.db`` file there as metrics.
FILE_NAME = "mpesa_monitor_stk.sqlite"

_T = TypeVar("_T")

PENDING, MISSING, HELD, DONE = "pending", "missing", "held", "done"


class Push(NamedTuple):
    organization: str
    started: float
    amount: float


class Completion(NamedTuple):
    outcome: str
    result_code: str
    amount: float


class Held(NamedTuple):
    """A callback that found no push: who it claimed to be for, and what it said."""

    checkout: str
    organization: str
    arrived: float
    completion: Completion


class Match(NamedTuple):
    """What :meth:`SQLPendingStore.complete` found.

    ``kind``: ``matched`` (a pending push), ``late`` (a push already counted missing),
    ``held`` (no push yet: held for the grace period), ``duplicate`` (already resolved;
    ``previous`` is the first completion), ``unchecked`` (not held: matching is off);
    the tracker uses ``unavailable`` when the table could not be reached. ``dropped``:
    held callbacks forgotten to keep the bound, to be counted as unmatched.
    """

    kind: str
    push: Push | None = None
    previous: Completion | None = None
    dropped: tuple[Held, ...] = ()


class Added(NamedTuple):
    """What :meth:`SQLPendingStore.add` did: pushes evicted as missing, and the held
    callback the push resolved, if its callback came first."""

    evicted: list[Push]
    held: Held | None = None
    dropped: tuple[Held, ...] = ()


class Expired(NamedTuple):
    missing: list[Push]
    unmatched: list[Held]


def max_bytes(max_pending: int) -> int:
    """Byte bound of a SQLite table file: a row with the largest allowed strings and
    its two index entries takes well under 1 KiB; twice the rows (pending + resolved),
    plus 1 MiB of slack for the schema and half-full pages."""
    return 2 * max_pending * 1024 + (1 << 20)


def valid_id(value: Any) -> str | None:
    """The CheckoutRequestID as stored, or None when it cannot be a Daraja id."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID_LENGTH:
        return None
    if not value.isascii() or not value.isprintable() or " " in value:
        return None
    return value


_COLUMNS = "checkout, state, organization, started, amount, outcome, result_code, callback_amount, updated"


class SQLPendingStore:
    """The table, in SQL shared by SQLite and PostgreSQL (``?`` becomes ``%s`` there)."""

    table = "mpesa_monitor_stk"
    placeholder = "?"

    def __init__(self, max_pending: int) -> None:
        self.max_pending = max_pending
        # Counting rows costs a scan of the index: each process checks the bounds every
        # few of its own writes only, so a table may pass its bound by that many rows per
        # process for a moment (the file's page limit holds regardless).
        self.check_every = max(1, min(64, max_pending // 100))
        self._writes = 0
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._conn: Any = None

    # --- connection -------------------------------------------------------------
    def _open(self) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def _connection(self) -> Any:
        # One connection per process: a connection must not cross a fork.
        if self._conn is None or self._pid != os.getpid():
            self._conn, self._pid = self._open(), os.getpid()
        return self._conn

    def _run(self, work: Callable[[Callable[..., list[tuple[Any, ...]]]], _T], write: bool = True) -> _T:
        """Run ``work(execute)`` in one transaction (a write transaction unless ``write``
        is false: a scrape reading counts must not queue behind, or block, writers)."""
        with self._lock:
            conn = self._connection()
            cursor = self._begin(conn) if write else self._begin_read(conn)
            p = self.placeholder

            def execute(sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
                sql = sql.replace("?", p).replace("{t}", self.table)
                cursor.execute(sql, params)
                return cursor.fetchall() if cursor.description is not None else []

            try:
                result = work(execute)
                self._commit(conn)
            except BaseException:
                self._rollback(conn)
                raise
        return result

    def _begin(self, conn: Any) -> Any:
        conn.execute("BEGIN IMMEDIATE")
        return conn.cursor()

    def _begin_read(self, conn: Any) -> Any:
        conn.execute("BEGIN")
        return conn.cursor()

    def _commit(self, conn: Any) -> None:
        conn.execute("COMMIT")

    def _rollback(self, conn: Any) -> None:
        try:
            conn.execute("ROLLBACK")
        except Exception:
            pass

    def close(self) -> None:
        """Close this process's connection (the next operation opens a new one)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    # --- operations -------------------------------------------------------------
    def add(self, checkout: str, push: Push) -> Added:
        """Remember a push. A push already known is ignored; a held callback is resolved."""
        now = time.time()

        def work(execute: Callable[..., list[tuple[Any, ...]]]) -> Added:
            rows = execute("SELECT state, organization, started, outcome, result_code, callback_amount "
                           "FROM {t} WHERE checkout = ?", (checkout,))
            held = None
            if not rows:
                execute(f"INSERT INTO {{t}} ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, NULL, NULL, NULL, ?)",
                        (checkout, PENDING, push.organization, push.started, push.amount, now))
            elif rows[0][0] == HELD:
                state, org, arrived, outcome, code, amount = rows[0]
                execute("UPDATE {t} SET state = ?, organization = ?, amount = ?, updated = ? WHERE checkout = ?",
                        (DONE, push.organization, push.amount, now, checkout))
                held = Held(checkout, org, arrived, Completion(outcome, code, amount))
            if not self._due():
                return Added([], held)
            excess = self._excess(execute, PENDING)
            evicted = [Push(*row) for row in execute(
                "UPDATE {t} SET state = ?, updated = ? WHERE checkout IN (SELECT checkout FROM {t} "
                "WHERE state = ? ORDER BY started LIMIT ?) RETURNING organization, started, amount",
                (MISSING, now, PENDING, excess))] if excess > 0 else []
            return Added(evicted, held, self._trim(execute))

        return self._run(work)

    def complete(self, checkout: str, completion: Completion, organization: str, hold: bool = True,
                 create: bool = True) -> Match:
        """Resolve ``checkout`` with a callback (or a query result) claiming ``organization``.

        ``create=False`` (a reconciliation): an id without a row is left alone, ``unknown``."""
        now = time.time()

        def work(execute: Callable[..., list[tuple[Any, ...]]]) -> Match:
            rows = execute("SELECT state, organization, started, amount, outcome, result_code, callback_amount "
                           "FROM {t} WHERE checkout = ?", (checkout,))
            if not rows and not create:
                return Match("unknown")
            if not rows:
                execute(f"INSERT INTO {{t}} ({_COLUMNS}) VALUES (?, ?, ?, ?, 0, ?, ?, ?, ?)",
                        (checkout, HELD if hold else DONE, organization, now, *completion, now))
                return Match("held" if hold else "unchecked", dropped=self._trim(execute) if self._due() else ())
            state, org, started, amount, outcome, code, paid = rows[0]
            if state in (HELD, DONE):
                return Match("duplicate", previous=Completion(outcome, code, paid))
            execute("UPDATE {t} SET state = ?, outcome = ?, result_code = ?, callback_amount = ?, updated = ? "
                    "WHERE checkout = ?", (DONE, *completion, now, checkout))
            return Match("matched" if state == PENDING else "late", push=Push(org, started, amount))

        return self._run(work)

    def first_seen(self, key: str, organization: str, completion: Completion) -> tuple[bool, tuple[Held, ...]]:
        """Remember a result that has no push to match (a C2B confirmation by ``TransID``,
        a B2C result by ``ConversationID``; ``key`` carries the flow as a prefix) as
        resolved at once. True the first time, whichever worker (or host) sees it; False
        for Daraja's retries. Also returns held callbacks forgotten to keep the bound."""
        now = time.time()

        def work(execute: Callable[..., list[tuple[Any, ...]]]) -> tuple[bool, tuple[Held, ...]]:
            rows = execute(f"INSERT INTO {{t}} ({_COLUMNS}) VALUES (?, ?, ?, ?, 0, ?, ?, ?, ?) "
                           "ON CONFLICT (checkout) DO NOTHING RETURNING checkout",
                           (key, DONE, organization, now, *completion, now))
            return bool(rows), (self._trim(execute) if rows and self._due() else ())

        return self._run(work)

    def expire(self, deadline: float, held_deadline: float | None = None) -> Expired:
        """Pushes started before ``deadline`` become missing; callbacks held since before
        ``held_deadline`` are given up (unmatched). Each is returned once."""
        now = time.time()
        held_deadline = deadline if held_deadline is None else held_deadline

        def work(execute: Callable[..., list[tuple[Any, ...]]]) -> Expired:
            missing = [Push(*row) for row in execute(
                "UPDATE {t} SET state = ?, updated = ? WHERE state = ? AND started <= ? "
                "RETURNING organization, started, amount", (MISSING, now, PENDING, deadline))]
            unmatched = [Held(row[0], row[1], row[2], Completion(*row[3:])) for row in execute(
                "UPDATE {t} SET state = ?, updated = ? WHERE state = ? AND started <= ? "
                "RETURNING checkout, organization, started, outcome, result_code, callback_amount",
                (DONE, now, HELD, held_deadline))]
            return Expired(missing, unmatched + list(self._trim(execute) if missing or unmatched else ()))

        return self._run(work)

    def _due(self) -> bool:
        self._writes += 1
        return self._writes % self.check_every == 0

    def _excess(self, execute: Callable[..., list[tuple[Any, ...]]], *states: str) -> int:
        marks = ", ".join("?" for _ in states)
        count: int = execute(f"SELECT count(*) FROM {{t}} WHERE state IN ({marks})", states)[0][0]
        return count - self.max_pending

    def _trim(self, execute: Callable[..., list[tuple[Any, ...]]]) -> tuple[Held, ...]:
        """Keep at most ``max_pending`` resolved rows: forget the oldest; held callbacks
        forgotten that way are returned, to be counted unmatched rather than lost."""
        excess = self._excess(execute, MISSING, HELD, DONE)
        if excess <= 0:
            return ()
        rows = execute(
            "DELETE FROM {t} WHERE checkout IN (SELECT checkout FROM {t} WHERE state <> ? "
            "ORDER BY updated LIMIT ?) "
            "RETURNING checkout, state, organization, started, outcome, result_code, callback_amount",
            (PENDING, excess))
        return tuple(Held(r[0], r[2], r[3], Completion(*r[4:])) for r in rows if r[1] == HELD)

    def prune(self, max_age: float, now: float | None = None) -> int:
        """Remove rows untouched for ``max_age`` seconds (at server start: a row that old
        can no longer be matched usefully). Returns how many."""
        cutoff = (time.time() if now is None else now) - max_age
        return len(self._run(lambda execute: execute(
            "DELETE FROM {t} WHERE updated < ? RETURNING checkout", (cutoff,))))

    def state_of(self, checkout: str) -> str | None:
        """The state of one id's row (pending, missing, held, done), or None."""
        rows = self._run(lambda execute: execute("SELECT state FROM {t} WHERE checkout = ?", (checkout,)),
                         write=False)
        return rows[0][0] if rows else None

    def pending_count(self) -> int:
        """Pushes waiting for their callback, over the whole table (every worker, or host)."""
        count: int = self._run(lambda execute: execute("SELECT count(*) FROM {t} WHERE state = ?", (PENDING,)),
                               write=False)[0][0]
        return count

    def pending_by_organization(self) -> dict[str, int]:
        """Pending pushes per organization (for a scrape-time gauge)."""
        rows = self._run(lambda execute: execute(
            "SELECT organization, count(*) FROM {t} WHERE state = ? GROUP BY organization", (PENDING,)), write=False)
        return {org: count for org, count in rows}


_SQLITE_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {SQLPendingStore.table} (
    checkout TEXT PRIMARY KEY, state TEXT NOT NULL, organization TEXT NOT NULL,
    started REAL NOT NULL, amount REAL NOT NULL, outcome TEXT, result_code TEXT,
    callback_amount REAL, updated REAL NOT NULL);
CREATE INDEX IF NOT EXISTS {SQLPendingStore.table}_state_started ON {SQLPendingStore.table} (state, started);
CREATE INDEX IF NOT EXISTS {SQLPendingStore.table}_updated ON {SQLPendingStore.table} (updated);
"""


class SQLitePendingStore(SQLPendingStore):
    """The table shared by the workers of one host, in a SQLite file (WAL mode)."""

    def __init__(self, path: str, max_pending: int) -> None:
        super().__init__(max_pending)
        self.path = path

    def _open(self) -> sqlite3.Connection:
        conn = open_shared(self.path, _SQLITE_SCHEMA)
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count={max_bytes(self.max_pending) // page_size}")
        return conn

    def drop_previous_layout(self) -> None:
        """Drop the tables of the previous layout (one per state), if the file has them:
        called at the first start after an upgrade (:func:`prune_on_start`)."""
        self._connection().executescript("DROP TABLE IF EXISTS pending; DROP TABLE IF EXISTS completed;")


class MemoryPendingStore(SQLitePendingStore):
    """One process's table: the same SQL in an in-memory SQLite database."""

    def __init__(self, max_pending: int) -> None:
        super().__init__(":memory:", max_pending)


_PG_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {SQLPendingStore.table} (
    checkout VARCHAR({MAX_ID_LENGTH}) PRIMARY KEY, state VARCHAR(8) NOT NULL,
    organization VARCHAR({MAX_LABEL_LENGTH}) NOT NULL, started DOUBLE PRECISION NOT NULL,
    amount DOUBLE PRECISION NOT NULL, outcome VARCHAR(32), result_code VARCHAR({MAX_CODE_LENGTH}),
    callback_amount DOUBLE PRECISION, updated DOUBLE PRECISION NOT NULL);
CREATE INDEX IF NOT EXISTS {SQLPendingStore.table}_state_started ON {SQLPendingStore.table} (state, started);
CREATE INDEX IF NOT EXISTS {SQLPendingStore.table}_updated ON {SQLPendingStore.table} (updated);
"""


class PostgresPendingStore(SQLPendingStore):
    """The table shared by every host, in the app's PostgreSQL (psycopg2).

    Its byte bound is the row bound times the column limits (``VARCHAR(n)``); the table
    name is fixed (``mpesa_monitor_stk``) and created when missing.
    """

    placeholder = "%s"

    #: Seconds without a new connection attempt after one failed: a database that is down
    #: must not add a connect timeout to every payment request.
    RETRY_AFTER = 10.0

    def __init__(self, dsn: str, max_pending: int, connect_timeout: float = 2.0) -> None:
        super().__init__(max_pending)
        self.dsn = dsn
        self.connect_timeout = connect_timeout
        self._retry_at = 0.0

    def _open(self) -> Any:
        import psycopg2

        if time.monotonic() < self._retry_at:
            raise ConnectionError("the shared STK table's database failed moments ago; not retrying yet")
        try:
            # Bounded statements: a lock held elsewhere must not hold a payment request.
            conn = psycopg2.connect(self.dsn, connect_timeout=max(1, int(self.connect_timeout)),
                                    options="-c statement_timeout=2000 -c lock_timeout=2000",
                                    application_name="flask-mpesa-monitor")
        except Exception:
            self._retry_at = time.monotonic() + self.RETRY_AFTER
            raise
        conn.autocommit = False
        with conn.cursor() as cursor:
            # Hosts starting together race to create the table: one lock decides.
            cursor.execute("SELECT pg_advisory_xact_lock(72170321)")
            cursor.execute(_PG_SCHEMA)
        conn.commit()
        return conn

    def _begin(self, conn: Any) -> Any:
        if conn.closed:
            self._conn = conn = self._connection_reset()
        cursor = conn.cursor()
        # Serialise writers of the table: each operation is short, and this makes the
        # read-then-write steps atomic across hosts as BEGIN IMMEDIATE does in SQLite.
        cursor.execute(f"LOCK TABLE {self.table} IN SHARE ROW EXCLUSIVE MODE")
        return cursor

    def _begin_read(self, conn: Any) -> Any:
        if conn.closed:
            self._conn = conn = self._connection_reset()
        return conn.cursor()

    def _connection_reset(self) -> Any:
        self._conn = None
        return self._connection()

    def _commit(self, conn: Any) -> None:
        self._conn.commit()

    def _rollback(self, conn: Any) -> None:
        try:
            self._conn.rollback()
        except Exception:
            self._conn = None  # broken: reconnect next time


def default_store(max_pending: int, path: str | None = None, url: str | None = None) -> SQLPendingStore:
    """PostgreSQL when ``url`` is set, else SQLite beside the multiprocess metric files
    when there are any, else memory."""
    if url:
        return PostgresPendingStore(url, max_pending)
    if path is None:
        directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if directory:
            path = os.path.join(directory, FILE_NAME)
    if path:
        return SQLitePendingStore(path, max_pending)
    return MemoryPendingStore(max_pending)


def prune_on_start(directory: str | os.PathLike[str], max_age: float = START_MAX_AGE) -> int:
    """For a server's start hook: keep the host's table across a restart or upgrade
    (pending pushes still get their callbacks) but drop rows older than ``max_age``.

    The start hook removes metric files (``*.db``) only, then calls this. A table file
    that cannot be read is removed (it would fail every worker). Returns rows removed.
    """
    path = Path(directory) / FILE_NAME
    if not path.exists():
        return 0
    store = SQLitePendingStore(str(path), max_pending=1 << 20)
    try:
        removed = store.prune(max_age)
        store.drop_previous_layout()
        store.close()
        return removed
    except sqlite3.Error:
        for stale in Path(directory).glob(FILE_NAME + "*"):
            stale.unlink(missing_ok=True)
        return 0
