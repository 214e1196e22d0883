"""One SQLite file shared by every worker on a host: how a store opens it.

The STK push table (:mod:`.stk_store`) and the admitted organizations
(:mod:`.tenant_store`) each keep one connection per process in the same way; this is
that way, written once.
"""

from __future__ import annotations

import sqlite3
import time

#: Attempts at switching to WAL and creating the schema, 20 ms apart (one second).
ATTEMPTS = 50


def open_shared(path: str, schema: str) -> sqlite3.Connection:
    """An autocommit connection to ``path`` in WAL mode with ``schema`` (a script) applied.

    Workers starting together race to switch the file to WAL and create the tables;
    switching needs a moment alone with the file, which busy_timeout does not cover:
    retry briefly (bounded). An in-memory database has no WAL to switch to.
    """
    conn = sqlite3.connect(path, timeout=5.0, isolation_level=None, check_same_thread=False)
    for attempt in range(ATTEMPTS):
        try:
            if path != ":memory:":
                conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(schema)
            break
        except sqlite3.OperationalError:
            if attempt == ATTEMPTS - 1:
                conn.close()
                raise
            time.sleep(0.02)
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn
