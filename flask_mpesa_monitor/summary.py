"""The day's business figures behind ``/metrics/summary``: a rolling window, or Prometheus.

Figures: ``total_organizations`` (organizations with transactions or active users in
the window, ``unknown``/``other`` not counted), ``active_users`` (distinct users named by
the app's user resolver), ``transactions_24h`` (completed transactions: pending ones
are not completed yet), ``revenue_24h`` (money collected: successful ``stk_push`` and
``c2b``, never ``b2c`` payouts) and ``success_rate_24h`` (successes over completed
transactions, in percent with one decimal; a customer who cancels counts as not
successful; ``null`` when nothing completed).

Two sources:

- :class:`SummaryWindow`, the default: per-minute buckets over the last 24 hours in a
  small SQLite database. Under gunicorn every worker writes to the same file (by
  default beside ``PROMETHEUS_MULTIPROC_DIR``), so the figures add up across workers;
  without a multiprocess directory it lives in memory, per process. Requests only touch
  an in-memory buffer; a background thread (per worker, after fork) writes it out every
  second, so another worker's figures are at most about a second behind.
- :class:`PrometheusSummary`, when ``MPESA_MONITOR_PROMETHEUS_URL`` is set: PromQL
  ``increase(...[24h])`` over the counters, which adds up workers and replicas alike
  (Prometheus extrapolates, so its figures are rounded estimates). Users have no metric
  (a user id must never be a label), so ``active_users`` still comes from the window.

Who may read which figures is :class:`SummaryAccess`: the ``/metrics`` credentials, or
the app's own rule (``@monitor.summary_access``) that can narrow a caller to one tenant.

Active users are counted in bounded memory: user ids are hashed with a per-store random
key (never stored in clear), and each (organization, hour) keeps at most
``sketch_size`` of the smallest hashes (a K-minimum-values sketch). Below that size the
count is exact; above it, it is an estimate within a few percent.
"""

from __future__ import annotations

import hashlib
import math
import os
import secrets
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from . import tenancy
from .auth import Credentials
from .health.background import Ticker, after_fork_in_child, at_exit
from .redact import get_logger

log = get_logger(__name__)

WINDOW_SECONDS = 24 * 3600
BUCKET_SECONDS = 60
USER_BUCKET_SECONDS = 3600
SKETCH_SIZE = 256
FLUSH_INTERVAL = 1.0
MAX_PENDING_USERS = 65536
#: Seconds the exit waits for a background write of the window to end.
EXIT_WAIT = 5.0
EXCLUDED_ORGANIZATIONS = (tenancy.UNKNOWN, tenancy.OTHER)
SUCCESS = "success"
PENDING = "pending"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS transactions (
    minute INTEGER NOT NULL, organization TEXT NOT NULL, currency TEXT NOT NULL,
    completed INTEGER NOT NULL, successes INTEGER NOT NULL, revenue REAL NOT NULL,
    PRIMARY KEY (minute, organization, currency));
CREATE TABLE IF NOT EXISTS users (
    hour INTEGER NOT NULL, organization TEXT NOT NULL, hash INTEGER NOT NULL,
    PRIMARY KEY (organization, hour, hash)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS users_by_hour ON users (hour, hash);
"""


class SummaryUnavailable(RuntimeError):
    """The summary source could not answer (Prometheus down, store unreadable)."""


def default_store_path(configured: str | None) -> str | None:
    """``MPESA_MONITOR_SUMMARY_DB``, else a file beside the multiprocess directory, else None
    (in memory). Beside, not inside: gunicorn setups empty that directory at start."""
    if configured:
        return configured
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir")
    if not directory:
        return None
    return os.path.normpath(directory) + ".summary.sqlite"


def json_safe(figures: dict[str, Any]) -> dict[str, Any]:
    """``figures`` with every non-finite number (inf, nan) as ``None``: JSON has no
    Infinity or NaN, and a summary that parses is worth more than one figure."""
    def safe(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {key: safe(item) for key, item in value.items()}
        return value

    return {key: safe(value) for key, value in figures.items()}


def _close_when_free(conn: sqlite3.Connection, lock: threading.Lock) -> None:
    """Close ``conn`` once no thread writes through it: closing a SQLite connection under
    a running statement crashes the process. A write still running after EXIT_WAIT
    seconds keeps the connection (the process is ending; its exit closes the file)."""
    if not lock.acquire(timeout=EXIT_WAIT):
        return
    try:
        conn.close()
    finally:
        lock.release()


def _rate(successes: int, completed: int) -> float | None:
    return round(100.0 * successes / completed, 1) if completed else None


class SummaryWindow:
    """Rolling 24-hour figures, shared through SQLite by every process using ``path``.

    ``path=None`` keeps the window in memory for this process only.
    """

    def __init__(self, path: str | None = None, *, sketch_size: int = SKETCH_SIZE,
                 flush_interval: float = FLUSH_INTERVAL) -> None:
        self.path = path
        self.sketch_size = sketch_size
        self.flush_interval = flush_interval
        self._ticker = Ticker(self, "_tick", "mpesa-monitor-summary") if path else None
        self._reset()
        after_fork_in_child(self)
        at_exit(self)

    def _reset(self) -> None:
        self._lock = threading.Lock()      # the buffers
        self._db_lock = threading.Lock()   # the connection
        self._conn: sqlite3.Connection | None = None
        self._key: bytes | None = None
        self._tx: dict[tuple[int, str, str], list[float]] = {}
        self._users: set[tuple[int, str, str]] = set()
        self._seen: set[tuple[int, str, str]] = set()
        self._seen_hour = -1
        self._last_flush = time.monotonic()
        self._last_prune = 0.0
        self._last_error_log = -3600.0

    def _after_fork(self) -> None:
        # A SQLite connection must not cross a fork; the parent's buffers are its own.
        self._reset()

    def _at_exit(self) -> None:
        # The background flush first (it may be writing now), then what is left, then
        # the store, once no write holds it.
        if self._ticker is not None:
            self._ticker.stop(timeout=EXIT_WAIT)
        if self._tx or self._users:
            try:
                self.flush()
            except Exception:
                log.exception("could not write the summary window at exit")
        conn, self._conn = self._conn, None
        if conn is not None:
            _close_when_free(conn, self._db_lock)

    # --- recording (request path: memory only) -------------------------------------
    def record_transaction(self, organization: str, type_: str, outcome: str, revenue: float,
                           currency: str = "KES", now: float | None = None) -> None:
        """Count one completed transaction (pending ones are ignored: not completed)."""
        if outcome == PENDING:
            return
        if not isinstance(revenue, (int, float)) or not math.isfinite(revenue):
            revenue = 0.0  # one bad figure must not poison the window for a day
        now = time.time() if now is None else now
        key = (int(now // BUCKET_SECONDS), organization, currency)
        with self._lock:
            entry = self._tx.get(key)
            if entry is None:
                entry = self._tx[key] = [0, 0, 0.0]
            entry[0] += 1
            if outcome == SUCCESS:
                entry[1] += 1
                entry[2] += revenue
        self._recorded()

    def record_user(self, organization: str, user: Any, now: float | None = None) -> None:
        """Note that ``user`` (any id; only a keyed hash is stored) was active."""
        if user is None or user == "":
            return
        now = time.time() if now is None else now
        key = (int(now // USER_BUCKET_SECONDS), organization, str(user)[:256])
        with self._lock:
            if key in self._seen or key in self._users:
                return
            if len(self._users) >= MAX_PENDING_USERS:
                return  # the writer is far behind; a later request will note this user
            self._users.add(key)
        self._recorded()

    def _recorded(self) -> None:
        if self._ticker is not None:
            self._ticker.ensure_started()
        elif time.monotonic() - self._last_flush >= self.flush_interval:
            self.flush()

    def _tick(self) -> float:
        self.flush()
        return self.flush_interval

    # --- the store ----------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(self.path or ":memory:", timeout=5.0, check_same_thread=False,
                                   isolation_level=None)
            if self.path:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
            conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('hash_key', ?)",
                         (secrets.token_hex(16),))
            self._key = bytes.fromhex(conn.execute("SELECT value FROM meta WHERE key = 'hash_key'").fetchone()[0])
            self._conn = conn
            # A window dropped by the app closes its store; at exit, _at_exit does it.
            weakref.finalize(self, _close_when_free, conn, self._db_lock).atexit = False
        return self._conn

    def _hash(self, user: str) -> int:
        assert self._key is not None
        digest = hashlib.blake2b(user.encode(), key=self._key, digest_size=8).digest()
        return int.from_bytes(digest, "big") >> 1  # fits SQLite's signed 64-bit INTEGER

    def flush(self, now: float | None = None) -> None:
        """Write the buffers to the store (and drop buckets older than the window)."""
        with self._lock:
            tx, users = self._tx, self._users
            self._tx, self._users = {}, set()
            hour = int((time.time() if now is None else now) // USER_BUCKET_SECONDS)
            if hour != self._seen_hour or len(self._seen) > MAX_PENDING_USERS:
                self._seen, self._seen_hour = set(), hour  # bounded: this hour's users only
            self._seen.update(key for key in users if key[0] == hour)
            self._last_flush = time.monotonic()
        prune = time.monotonic() - self._last_prune > 60
        if not tx and not users and not prune:
            return
        try:
            with self._db_lock:
                self._write(tx, users, prune, now)
        except sqlite3.Error:
            if time.monotonic() - self._last_error_log > 60:  # once a minute, not every second
                self._last_error_log = time.monotonic()
                log.exception("could not write the summary window to %s; retrying", self.path or "memory")
            with self._lock:
                for key, (completed, successes, revenue) in tx.items():
                    entry = self._tx.setdefault(key, [0, 0, 0.0])
                    entry[0] += completed
                    entry[1] += successes
                    entry[2] += revenue
                self._seen.difference_update(users)
                room = MAX_PENDING_USERS - len(self._users)
                self._users.update(list(users)[:max(0, room)])

    def _write(
        self, tx: dict[tuple[int, str, str], list[float]], users: set[Any], prune: bool, now: float | None
    ) -> None:
        conn = self._connect()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(
                "INSERT INTO transactions (minute, organization, currency, completed, successes, revenue) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (minute, organization, currency) DO UPDATE SET "
                "completed = completed + excluded.completed, successes = successes + excluded.successes, "
                "revenue = revenue + excluded.revenue",
                [(*key, int(c), int(s), r) for key, (c, s, r) in tx.items()],
            )
            conn.executemany("INSERT OR IGNORE INTO users (hour, organization, hash) VALUES (?, ?, ?)",
                             [(hour, org, self._hash(user)) for hour, org, user in users])
            for hour, org in {(hour, org) for hour, org, _ in users}:
                conn.execute(  # keep the sketch: the K smallest hashes of this org and hour
                    "DELETE FROM users WHERE organization = ? AND hour = ? AND hash > (SELECT hash FROM "
                    "users WHERE organization = ? AND hour = ? ORDER BY hash LIMIT 1 OFFSET ?)",
                    (org, hour, org, hour, self.sketch_size - 1),
                )
            if prune:
                first_minute, _, first_hour, _ = self._window(now)
                conn.execute("DELETE FROM transactions WHERE minute < ?", (first_minute,))
                conn.execute("DELETE FROM users WHERE hour < ?", (first_hour,))
                self._last_prune = time.monotonic()
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    @staticmethod
    def _window(now: float | None) -> tuple[int, int, int, int]:
        """First and last minute, first and last hour of the window ending at ``now``."""
        now = time.time() if now is None else now
        last_minute, last_hour = int(now // BUCKET_SECONDS), int(now // USER_BUCKET_SECONDS)
        first_minute = last_minute - WINDOW_SECONDS // BUCKET_SECONDS + 1
        first_hour = int((now - WINDOW_SECONDS) // USER_BUCKET_SECONDS)
        return first_minute, last_minute, first_hour, last_hour

    # --- reading ------------------------------------------------------------------
    def summary(self, organization: str | None = None, now: float | None = None) -> dict[str, Any]:
        """The figures of the last 24 hours, for every organization or one."""
        self.flush(now)
        first_minute, last_minute, first_hour, last_hour = self._window(now)
        org_filter, params = ("AND organization = ?", (organization,)) if organization else ("", ())
        minutes, hours = (first_minute, last_minute, *params), (first_hour, last_hour, *params)
        try:
            with self._db_lock:
                conn = self._connect()
                rows = conn.execute(
                    "SELECT organization, currency, SUM(completed), SUM(successes), SUM(revenue) FROM transactions "
                    f"WHERE minute BETWEEN ? AND ? {org_filter} GROUP BY organization, currency", minutes,
                ).fetchall()
                user_orgs = conn.execute(
                    f"SELECT DISTINCT organization FROM users WHERE hour BETWEEN ? AND ? {org_filter}", hours,
                ).fetchall()
                hashes = [row[0] for row in conn.execute(
                    f"SELECT DISTINCT hash FROM users WHERE hour BETWEEN ? AND ? {org_filter} ORDER BY hash LIMIT ?",
                    (*hours, self.sketch_size),
                )]
        except sqlite3.Error as exc:
            raise SummaryUnavailable(f"the summary store could not be read: {exc}") from exc
        completed = sum(row[2] for row in rows)
        successes = sum(row[3] for row in rows)
        revenue: dict[str, float] = {}
        for _, currency, _, _, amount in rows:
            revenue[currency] = revenue.get(currency, 0.0) + amount
        organizations = {row[0] for row in rows if row[2]} | {row[0] for row in user_orgs}
        return json_safe({
            "total_organizations": len(organizations - set(EXCLUDED_ORGANIZATIONS)),
            "active_users": self._distinct(hashes),
            "transactions_24h": int(completed),
            "revenue_24h": round(sum(revenue.values()), 2),
            "revenue_by_currency": {key: round(value, 2) for key, value in sorted(revenue.items()) if value},
            "success_rate_24h": _rate(int(successes), int(completed)),
        })

    def _distinct(self, smallest: list[int]) -> int:
        """Exact below the sketch size; the K-minimum-values estimate at it."""
        if len(smallest) < self.sketch_size:
            return len(smallest)
        fraction = (smallest[-1] + 1) / float(1 << 63)
        return max(self.sketch_size, int(round((self.sketch_size - 1) / fraction)))


class PrometheusSummary:
    """The same figures asked of Prometheus (``increase(...[24h])``), users from ``window``."""

    def __init__(self, url: str, window: SummaryWindow, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.window = window
        self.timeout = timeout

    @staticmethod
    def queries(organization: str | None = None) -> dict[str, str]:
        """The PromQL of each figure (``organization`` must be a valid label value)."""
        org = f',organization="{organization}"' if organization else ""
        excluded = '|'.join(EXCLUDED_ORGANIZATIONS)
        return {
            "completed": f'sum(increase(mpesa_transactions_total{{outcome!="pending"{org}}}[24h]))',
            "successes": f'sum(increase(mpesa_transactions_total{{outcome="success"{org}}}[24h]))',
            "revenue": f'sum(increase(mpesa_revenue_total{{organization!=""{org}}}[24h]))',
            "organizations": (
                "count(sum by (organization) (increase({__name__=~\"mpesa_transactions_total|"
                f'mpesa_mcp_requests_total",organization!~"{excluded}"{org}}}[24h])) > 0)'
            ),
        }

    def _value(self, query: str) -> float:
        import requests

        try:
            response = requests.get(f"{self.url}/api/v1/query", params={"query": query}, timeout=self.timeout)
            payload = response.json()
        except (requests.RequestException, ValueError) as exc:
            raise SummaryUnavailable(f"Prometheus did not answer: {type(exc).__name__}") from exc
        if response.status_code != 200 or payload.get("status") != "success":
            raise SummaryUnavailable(
                f"Prometheus refused the query (HTTP {response.status_code}): {payload.get('error', '')}"[:300])
        result = payload["data"]["result"]
        return float(result[0]["value"][1]) if result else 0.0

    def summary(self, organization: str | None = None) -> dict[str, Any]:
        values = {name: self._value(query) for name, query in self.queries(organization).items()}
        values = {name: value if math.isfinite(value) else 0.0 for name, value in values.items()}
        completed, successes = round(values["completed"]), round(values["successes"])
        return json_safe({
            "total_organizations": int(round(values["organizations"])),
            "active_users": self.window.summary(organization)["active_users"],
            "transactions_24h": int(completed),
            "revenue_24h": round(values["revenue"], 2),
            "success_rate_24h": _rate(int(min(successes, completed)), int(completed)),
        })


#: An app's summary rule: called with the requested organization (None: all); answers
#: True (allowed), False/None (refused) or the caller's own organization.
AccessRule = Callable[[str | None], Any]


class SummaryAccess:
    """Who may see which summary, decided per request of ``/metrics/summary``.

    Without an app rule, the ``/metrics`` credentials decide. With one, valid
    ``/metrics`` credentials (when set) still see everything; otherwise the rule answers
    True (anything), False/None (nothing) or the caller's organization (that one only;
    asking for another is a cross-tenant attempt, counted and alerted by
    ``verify_tenant_isolation``).
    """

    def __init__(self, credentials: Credentials, verify_tenant_isolation: Callable[[str, str], bool],
                 rule: AccessRule | None = None) -> None:
        self.credentials = credentials
        self.verify_tenant_isolation = verify_tenant_isolation
        self.rule = rule

    def scope(self, organization: str | None, authorization: str | None) -> tuple[int | None, str | None]:
        """``(error status or None, organization to show or None for all)``."""
        if self.rule is None:
            return (None, organization) if self.credentials.authorized(authorization) else (401, None)
        if self.credentials.matches(authorization):
            return None, organization
        answer = self.rule(organization)
        if answer is True:
            return None, organization
        if answer is None or answer is False:
            return 403, None
        caller = str(answer)
        if organization is None:
            return None, caller
        if not self.verify_tenant_isolation(caller, organization):
            return 403, None
        return None, organization
