"""A throw-away PostgreSQL cluster on 127.0.0.1, from Debian's server binaries.

Why not an HTTPService: PostgreSQL is started and stopped by ``pg_ctl`` (it
daemonizes), readiness is ``pg_ctl -w``, and it must run as the ``postgres`` user when
we are root. psycopg2 is imported by the methods that need it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import urllib.parse
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .process import HOST, PathLike, ServerError, file_tail, forget_at_exit, free_port, stop_at_exit

__all__ = ["PostgresServer", "find_pg_bin"]


def find_pg_bin() -> Path:
    """The directory of initdb and pg_ctl: $PG_BIN, else the newest /usr/lib/postgresql/*/bin."""
    candidates = [os.environ.get("PG_BIN", ""), "/usr/lib/postgresql/15/bin"]
    candidates += sorted((str(p) for p in Path("/usr/lib/postgresql").glob("*/bin")), reverse=True)
    for candidate in candidates:
        if candidate and (Path(candidate) / "initdb").exists():
            return Path(candidate)
    raise ServerError(
        "PostgreSQL server binaries not found (looked in $PG_BIN and /usr/lib/postgresql/*/bin); "
        "install Debian's postgresql package (scripts/test.sh does)"
    )


class PostgresServer:
    """A throw-away PostgreSQL cluster on 127.0.0.1, with a database and a password user.

    ``start()`` runs initdb the first time (about a second), then ``pg_ctl start``;
    later ``stop()``/``start()`` pairs reuse the same data directory and port, which is
    what tests that take the database away mid-test need. The server runs as the
    ``postgres`` user when we are root (initdb refuses root), so ``base_dir`` must be
    reachable by that user: leave it None for a fresh directory under /tmp.

    Durability is off (fsync, full_page_writes, synchronous_commit): this is for tests.
    With ``stat_statements=True`` (the default) pg_stat_statements is preloaded and
    created in every database made here, so tests can count queries:
    ``calls("SELECT $1")`` (the extension replaces constants with ``$n``).

    Example::

        with PostgresServer() as pg:
            conn = psycopg2.connect(pg.dsn)
    """

    name = "postgresql"

    def __init__(
        self,
        base_dir: PathLike | None = None,
        *,
        port: int | None = None,
        user: str = "mpesa",
        password: str | None = None,
        database: str = "mpesa",
        stat_statements: bool = True,
        settings: Mapping[str, str | int] | None = None,
        bin_dir: PathLike | None = None,
    ) -> None:
        self.bin_dir = Path(bin_dir) if bin_dir else find_pg_bin()
        self.port = port or free_port()
        self.user = user
        # A fresh random password per cluster: no secret is ever written in the repo.
        self.password = password or uuid.uuid4().hex
        self.database = database
        self.stat_statements = stat_statements
        self.settings = dict(settings or {})
        self._as_root = os.geteuid() == 0
        self._own_dir = base_dir is None
        self.base_dir = Path(base_dir or tempfile.mkdtemp(prefix="mpesa-pg-"))
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.base_dir / "data"
        self.socket_dir = self.base_dir / "sock"
        self.log_path = self.base_dir / "postgresql.log"
        self._initialized = (self.data_dir / "PG_VERSION").exists()
        self._created: set[str] = set()

    def __repr__(self) -> str:
        return f"<PostgresServer 127.0.0.1:{self.port} running={self.running}>"

    # -- addresses
    @property
    def dsn(self) -> str:
        """``postgresql://user:password@127.0.0.1:PORT/database`` (password auth over TCP)."""
        return self.dsn_for(self.database)

    def dsn_for(self, database: str) -> str:
        """The DSN of the password user for another database of this cluster."""
        quoted = urllib.parse.quote(self.password, safe="")
        return f"postgresql://{self.user}:{quoted}@{HOST}:{self.port}/{database}"

    @property
    def host(self) -> str:
        return HOST

    # -- process control
    def _run(self, argv: Sequence[PathLike], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        command = [os.fspath(arg) for arg in argv]
        if self._as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, cwd=self.base_dir, stdin=subprocess.DEVNULL
        )
        if result.returncode != 0:
            raise ServerError(
                f"{' '.join(command)} failed with code {result.returncode}:\n{result.stdout}{result.stderr}"
                f"\n{self.log_tail()}"
            )
        return result

    def _initdb(self) -> None:
        self.socket_dir.mkdir(exist_ok=True)
        if self._as_root:
            for path in (self.base_dir, self.socket_dir):
                shutil.chown(path, "postgres", "postgres")
            os.chmod(self.base_dir, 0o700)
            try:
                self._run(["test", "-w", self.base_dir])
            except ServerError:
                raise ServerError(
                    f"{self.base_dir} is not writable by the postgres user (a parent directory is "
                    "probably private to root); pass base_dir=None for a directory under /tmp"
                ) from None
        self._run(
            [
                self.bin_dir / "initdb",
                "-D", self.data_dir,
                "-U", "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E", "UTF8",
                "--locale=C",
                "--no-sync",
            ]
        )  # fmt: skip
        settings: dict[str, str | int] = {
            "listen_addresses": HOST,
            "port": self.port,
            "unix_socket_directories": str(self.socket_dir),
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": 200,
        }
        if self.stat_statements:
            settings["shared_preload_libraries"] = "pg_stat_statements"
            settings["pg_stat_statements.track"] = "all"
        settings.update(self.settings)
        lines = [f"{key} = '{value}'" for key, value in settings.items()]
        with open(self.data_dir / "postgresql.conf", "a") as conf:
            conf.write("\n# flask-mpesa-monitor test cluster\n" + "\n".join(lines) + "\n")
        self._initialized = True

    @property
    def running(self) -> bool:
        """True while the postmaster of this data directory is alive."""
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # not root, someone else's pid: not ours
            return False
        return True

    def start(self, timeout: float = 30.0) -> PostgresServer:
        """initdb (first time), start, create the user and database (first time)."""
        if self.running:
            return self
        first = not self._initialized
        if first:
            self._initdb()
        self._run(
            [self.bin_dir / "pg_ctl", "start", "-D", self.data_dir, "-l", self.log_path, "-w", "-t", str(int(timeout))],
            timeout=timeout + 10,
        )
        stop_at_exit(self)
        if first:
            self._bootstrap()
        return self

    def stop(self, mode: str = "fast", timeout: float = 30.0) -> None:
        """``pg_ctl stop -m fast`` (or ``immediate``, a crash); no-op when down."""
        if not self.running:
            forget_at_exit(self)
            return
        self._run(
            [self.bin_dir / "pg_ctl", "stop", "-D", self.data_dir, "-m", mode, "-w", "-t", str(int(timeout))],
            timeout=timeout + 10,
        )
        forget_at_exit(self)

    def restart(self) -> PostgresServer:
        self.stop()
        return self.start()

    def cleanup(self) -> None:
        """Stop, and remove the directory when this object created it."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        return file_tail(self.log_path, lines)

    # -- SQL as the superuser, over the unix socket (trust auth)
    def admin_connect(self, database: str = "postgres") -> Any:
        """A psycopg2 connection as the superuser (autocommit); the caller closes it."""
        import psycopg2

        conn = psycopg2.connect(
            host=str(self.socket_dir), port=self.port, user="postgres", dbname=database, connect_timeout=5
        )
        conn.autocommit = True
        return conn

    def admin_execute(self, sql: Any, params: Sequence[Any] | None = None, database: str = "postgres") -> list[tuple]:
        """Run one statement as the superuser; the rows it returned (empty when none)."""
        conn = self.admin_connect(database)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()

    def _bootstrap(self) -> None:
        from psycopg2 import sql

        conn = self.admin_connect()
        try:
            with conn.cursor() as cur:
                role = sql.Identifier(self.user)
                cur.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD %s").format(role), [self.password])
                # lets the app user read pg_stat_statements rows of every database
                cur.execute(sql.SQL("GRANT pg_read_all_stats TO {}").format(role))
        finally:
            conn.close()
        self.create_database(self.database)

    def create_database(self, name: str | None = None) -> str:
        """Create a database owned by the password user; return its DSN.

        ``name=None`` makes up a unique one. Cheap (tens of milliseconds).
        """
        from psycopg2 import sql

        name = name or f"t_{uuid.uuid4().hex[:12]}"
        conn = self.admin_connect()
        try:
            with conn.cursor() as cur:
                cur.execute(sql.SQL("CREATE DATABASE {} OWNER {}")
                            .format(sql.Identifier(name), sql.Identifier(self.user)))
        finally:
            conn.close()
        if self.stat_statements:
            self.admin_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements", database=name)
        self._created.add(name)
        return self.dsn_for(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, disconnecting its sessions first (no-op when absent)."""
        from psycopg2 import sql

        conn = self.admin_connect()
        try:
            with conn.cursor() as cur:
                cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        finally:
            conn.close()
        self._created.discard(name)

    def calls(self, query_like: str, database: str | None = None) -> int:
        """Sum of pg_stat_statements ``calls`` whose query text is LIKE ``query_like``.

        Constants are normalized: ``SELECT 1`` is recorded as ``SELECT $1``.
        """
        if not self.stat_statements:
            raise ServerError("pg_stat_statements is off for this server (stat_statements=False)")
        rows = self.admin_execute(
            "SELECT coalesce(sum(s.calls), 0) FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid"
            " WHERE s.query LIKE %s AND d.datname = %s",
            [query_like, database or self.database],
            database=database or self.database,
        )
        return int(rows[0][0])

    def reset_statements(self) -> None:
        """Forget every pg_stat_statements counter (all databases)."""
        self.admin_execute("SELECT pg_stat_statements_reset()", database=self.database)

    def __enter__(self) -> PostgresServer:
        try:
            return self.start()
        except BaseException:
            self.cleanup()
            raise

    def __exit__(self, *exc_info: object) -> None:
        self.cleanup()
