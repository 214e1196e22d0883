"""The demo app's database: SQLite by default, PostgreSQL through ``DATABASE_URL``.

Every query goes through ``monitor_database_operation`` so that the dashboards show
database latency per operation. A connection per operation keeps the demo simple and
makes a database outage visible at once (a pool would hide it for a while).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flask_mpesa_monitor import monitor_database_operation

_SCHEMA = """
CREATE TABLE IF NOT EXISTS transactions (
    checkout_id TEXT PRIMARY KEY,
    organization TEXT NOT NULL,
    amount NUMERIC NOT NULL,
    status TEXT NOT NULL,
    result_code TEXT,
    created_at DOUBLE PRECISION NOT NULL
)
"""


class Store:
    """Transactions per organization, in SQLite or PostgreSQL."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_postgres = url.startswith(("postgresql://", "postgres://"))
        if not self.is_postgres and not url.startswith("sqlite:///"):
            raise ValueError(f"DATABASE_URL must be postgresql://... or sqlite:///path, got {url.split(':')[0]}:...")
        self.placeholder = "%s" if self.is_postgres else "?"
        if not self.is_postgres:
            Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)

    @contextmanager
    def connect(self) -> Iterator[Any]:
        if self.is_postgres:
            import psycopg2

            conn = psycopg2.connect(self.url, connect_timeout=2, options="-c statement_timeout=2000")
        else:
            conn = sqlite3.connect(self.url[len("sqlite:///"):], timeout=5)
        try:
            yield conn
            conn.commit()
        finally:
            conn.close()

    def _execute(self, sql: str, params: tuple = (), fetch: bool = False) -> list[tuple]:
        with self.connect() as conn:
            cursor = conn.cursor()
            cursor.execute(sql.replace("?", self.placeholder), params)
            return cursor.fetchall() if fetch else []

    def create_schema(self) -> None:
        self._execute(_SCHEMA)

    @monitor_database_operation("insert_transaction")
    def add_pending(self, checkout_id: str, organization: str, amount: int) -> None:
        self._execute("INSERT INTO transactions VALUES (?, ?, ?, 'pending', NULL, ?)",
                      (checkout_id, organization, amount, time.time()))

    @monitor_database_operation("update_transaction")
    def complete(self, checkout_id: str, status: str, result_code: str) -> None:
        self._execute("UPDATE transactions SET status = ?, result_code = ? WHERE checkout_id = ?",
                      (status, result_code, checkout_id))

    @monitor_database_operation("list_pending")
    def pending_before(self, organization: str, before: float, limit: int = 50) -> list[str]:
        """Checkout ids of the tenant's pushes still pending since before ``before``."""
        rows = self._execute("SELECT checkout_id FROM transactions WHERE organization = ? AND status = 'pending' "
                             "AND created_at < ? ORDER BY created_at LIMIT ?",
                             (organization, before, limit), fetch=True)
        return [row[0] for row in rows]

    @monitor_database_operation("list_transactions")
    def transactions(self, organization: str, limit: int = 20) -> list[dict[str, Any]]:
        rows = self._execute(
            "SELECT checkout_id, amount, status, result_code, created_at FROM transactions "
            "WHERE organization = ? ORDER BY created_at DESC LIMIT ?", (organization, limit), fetch=True)
        keys = ("checkout_id", "amount", "status", "result_code", "created_at")
        return [dict(zip(keys, (float(v) if k == "amount" else v for k, v in zip(keys, row)))) for row in rows]

    @monitor_database_operation("audit_check")
    def tampered_rows(self) -> int:
        rows = self._execute("SELECT count(*) FROM transactions WHERE status NOT IN ('pending', 'success', "
                             "'customer_cancelled', 'customer_error', 'timeout', 'provider_error', 'system_error') "
                             "OR amount <= 0", fetch=True)
        return int(rows[0][0])

    @monitor_database_operation("balance")
    def balance(self, organization: str) -> float:
        rows = self._execute("SELECT COALESCE(SUM(amount), 0) FROM transactions WHERE organization = ? "
                             "AND status = 'success'", (organization,), fetch=True)
        return float(rows[0][0])
