"""Launchers for the real servers the tests and the local demo stack run on 127.0.0.1.

Why this module exists: the integration and end-to-end tests must talk to a real
PostgreSQL, Prometheus, Alertmanager and gunicorn (fakes only for Slack, SMS providers and Daraja), and the
``deploy-monitoring.sh --local`` stack starts the same programs. Doing that well means
the same small things every time: a free port, a bounded wait for readiness that fails
fast (with the server's log) when the program dies, a stop that cannot hang, and a
restart on the same port and data. They live here once.

Also here are the small in-process fakes the tests use where the issues allow fakes
(Slack, SMS providers, Daraja, an SMTP server) and a TCP server that never answers.

Everything binds to 127.0.0.1 only. Every wait is bounded. Every class is a context
manager; ``stop()`` never raises because the server is already down.

Example::

    with PrometheusServer(config_text) as prom:
        prom.wait_for(lambda: prom.query("up"))
        print(prom.url)

Only the standard library is imported at module level; psycopg2, PyYAML, psutil and
aiosmtpd are imported by the classes that need them.
"""

from __future__ import annotations

import atexit
import contextlib
import email
import email.policy
import http.client
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "ServerError",
    "free_port",
    "wait_until",
    "wait_http",
    "http_json",
    "http_request",
    "log_tails",
    "ManagedProcess",
    "PostgresServer",
    "PrometheusServer",
    "AlertmanagerServer",
    "GunicornServer",
    "HangingTCPServer",
    "RecordedRequest",
    "RecordingHTTPServer",
    "Mail",
    "SMTPSink",
    "GUNICORN_CONF",
]

HOST = "127.0.0.1"
#: The gunicorn config that wipes the multiprocess directory and marks dead workers.
GUNICORN_CONF = Path(__file__).with_name("gunicorn_conf.py")

T = TypeVar("T")
PathLike = str | os.PathLike


class ServerError(RuntimeError):
    """A server did not start, did not become ready, or answered an API call badly.

    The message ends with the tail of the server's log so that a failing test says why.
    """


# --------------------------------------------------------------------------- helpers

_handed_out_ports: set[int] = set()
_port_lock = threading.Lock()


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free now and not handed out before.

    The kernel picks the port; remembering what we returned avoids giving the same
    port to two servers of one test run. (Another program may still take it before
    our server binds: that race is accepted, and shows up as a clear start error.)
    """
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((HOST, 0))
            port = sock.getsockname()[1]
        with _port_lock:
            if port not in _handed_out_ports:
                _handed_out_ports.add(port)
                return port
    raise ServerError("could not find a free TCP port on 127.0.0.1 in 50 tries")


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    interval: float = 0.05,
    *,
    description: str | None = None,
) -> T:
    """Call ``predicate`` until it returns something truthy and return that value.

    Raises ``TimeoutError`` after ``timeout`` seconds (the predicate is called at least
    once, and once more at the deadline). Exceptions from the predicate propagate: poll
    with a predicate that returns False for "not yet" and raises for "never".
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            what = description or getattr(predicate, "__name__", "condition")
            raise TimeoutError(f"{what} was not true within {timeout:g} s (last value: {result!r})")
        time.sleep(min(interval, remaining))


# Requests to our own 127.0.0.1 servers must never go through an HTTP(S)_PROXY from the
# environment (a CI runner's proxy cannot reach them).
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_request(
    method: str,
    url: str,
    body: bytes | str | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request, no proxy; ``(status, headers with lower-case names, body)``
    whatever the status. Connection errors raise OSError as usual."""
    data = body.encode() if isinstance(body, str) else body
    request = urllib.request.Request(url, data=data, method=method.upper(), headers=dict(headers or {}))
    try:
        with _opener.open(request, timeout=timeout) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def _http_status(url: str, timeout: float) -> int | None:
    """GET ``url`` once; the HTTP status, or None when nothing answered."""
    try:
        with _opener.open(url, timeout=timeout) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code
    except (OSError, ValueError, http.client.HTTPException):  # refused, reset, timed out, garbled
        return None


def wait_http(
    url: str,
    timeout: float = 15.0,
    *,
    statuses: Iterable[int] | None = (200,),
    process: ManagedProcess | None = None,
    interval: float = 0.05,
) -> int:
    """Poll ``url`` with GET until it answers with one of ``statuses``; return the status.

    ``statuses=None`` accepts any HTTP answer (the server is up, whatever the route says).
    With ``process`` given, a process that exits while we wait fails at once, with its
    log, instead of after the whole timeout.
    """
    wanted = None if statuses is None else set(statuses)

    def ready() -> int | None:
        if process is not None and not process.running:
            raise ServerError(
                f"{process.name} exited with code {process.returncode} before {url} was ready"
                f"\n{process.log_tail()}"
            )
        status = _http_status(url, timeout=min(2.0, max(timeout, 0.1)))
        if status is not None and (wanted is None or status in wanted):
            return status
        return None

    try:
        return wait_until(ready, timeout, interval, description=f"GET {url} ready")
    except TimeoutError as exc:
        tail = f"\n{process.log_tail()}" if process is not None else ""
        raise ServerError(f"{exc}{tail}") from None


def http_json(
    method: str,
    url: str,
    body: Any = None,
    *,
    timeout: float = 10.0,
    headers: Mapping[str, str] | None = None,
) -> Any:
    """Send one HTTP request with an optional JSON body and return the decoded JSON reply.

    Returns None for an empty body. Raises ``ServerError`` with the reply's text for any
    status >= 400, so a failing API call names what the server said.
    """
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method.upper())
    if data is not None:
        request.add_header("Content-Type", "application/json")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with _opener.open(request, timeout=timeout) as response:
            raw = response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            text = exc.read().decode(errors="replace")
        raise ServerError(f"{method.upper()} {url} -> HTTP {exc.code}: {text[:2000]}") from None
    if not raw.strip():
        return None
    return json.loads(raw)


def log_tails(*servers: Any, lines: int = 30) -> str:
    """The log tails of several servers in one string, for ``assert ..., log_tails(a, b)``."""
    parts = []
    for server in servers:
        name = getattr(server, "name", type(server).__name__)
        tail = server.log_tail(lines) if hasattr(server, "log_tail") else "(no log)"
        parts.append(f"----- {name} -----\n{tail}")
    return "\n".join(parts)


def _tail(path: Path | None, lines: int) -> str:
    if path is None or not path.exists():
        return "(no log yet)"
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - 64 * 1024))
        text = handle.read().decode(errors="replace")
    return "\n".join(text.splitlines()[-lines:])


# Everything started here and not stopped yet is stopped at interpreter exit too, in
# case a test run is interrupted before its fixtures' finalizers ran (PostgreSQL
# daemonizes: it would otherwise outlive us). Strong references on purpose: a running
# server must not vanish with the last variable that named it.
_live: set[Any] = set()


@atexit.register
def _stop_everything() -> None:
    for server in list(_live):
        with contextlib.suppress(Exception):
            server.stop()


# --------------------------------------------------------------------------- processes


class ManagedProcess:
    """One child process: started in its own process group, output to a log file.

    ``stop()`` sends SIGTERM to the whole group (so gunicorn's workers go too), waits
    up to ``stop_timeout`` seconds, then SIGKILLs the group. The process can be started
    again after a stop; the log file is appended to, so it tells the whole story.

    ``env`` is added to the current environment (a value of None removes a variable),
    unless ``inherit_env=False``.
    """

    def __init__(
        self,
        argv: Sequence[PathLike],
        *,
        env: Mapping[str, str | None] | None = None,
        cwd: PathLike | None = None,
        log_path: PathLike | None = None,
        name: str | None = None,
        stop_timeout: float = 10.0,
        inherit_env: bool = True,
    ) -> None:
        self.argv = [os.fspath(arg) for arg in argv]
        self.env = dict(env or {})
        self.cwd = None if cwd is None else os.fspath(cwd)
        self.name = name or Path(self.argv[0]).name
        self.stop_timeout = stop_timeout
        self.inherit_env = inherit_env
        if log_path is None:
            fd, log_file = tempfile.mkstemp(prefix=f"{self.name}-", suffix=".log")
            os.close(fd)
            log_path = log_file
        self.log_path = Path(log_path)
        self._popen: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"<ManagedProcess {self.name} pid={self.pid} running={self.running}>"

    @property
    def pid(self) -> int | None:
        return None if self._popen is None else self._popen.pid

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self._popen is None else self._popen.poll()

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ) if self.inherit_env else {}
        for key, value in self.env.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env

    def start(self) -> ManagedProcess:
        """Start the process (no-op when it is running); returns self."""
        if self.running:
            return self
        self._reap()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== {time.strftime('%H:%M:%S')} start: {' '.join(self.argv)}\n".encode())
            log.flush()
            try:
                self._popen = subprocess.Popen(
                    self.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.cwd,
                    env=self._environment(),
                    start_new_session=True,
                )
            except OSError as exc:
                raise ServerError(f"cannot start {self.name} ({self.argv[0]}): {exc}") from exc
        _live.add(self)
        return self

    def send_signal(self, sig: int, *, group: bool = True) -> None:
        """Send ``sig`` to the process (and its group); nothing if it is not running."""
        if self._popen is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if group:
                os.killpg(self._popen.pid, sig)
            elif self._popen.poll() is None:
                self._popen.send_signal(sig)

    def stop(self, timeout: float | None = None) -> int | None:
        """SIGTERM the group, SIGKILL it after ``timeout`` s; return the exit code."""
        if self._popen is None:
            return None
        timeout = self.stop_timeout if timeout is None else timeout
        if self._popen.poll() is None:
            self.send_signal(signal.SIGTERM)
            try:
                self._popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.send_signal(signal.SIGKILL)
                self._popen.wait(10)
        # The leader is gone; anything left in its group (a worker that ignored the
        # master) is ours and goes too. The kernel does not reuse a group id in use.
        self.send_signal(signal.SIGKILL)
        _live.discard(self)
        return self._popen.returncode

    def kill(self) -> int | None:
        """SIGKILL the group at once (a crash, not a shutdown); return the exit code."""
        if self._popen is None:
            return None
        self.send_signal(signal.SIGKILL)
        self._popen.wait(10)
        _live.discard(self)
        return self._popen.returncode

    def restart(self) -> ManagedProcess:
        self.stop()
        return self.start()

    def _reap(self) -> None:
        if self._popen is not None and self._popen.poll() is None:
            self.stop()

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the log, for assertion messages."""
        return _tail(self.log_path, lines)

    def __enter__(self) -> ManagedProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class _Service:
    """Shared plumbing of the HTTP servers we launch: dir, port, process, readiness."""

    name = "service"
    ready_path = "/-/ready"
    ready_statuses: Iterable[int] | None = (200,)

    def __init__(self, *, port: int | None, base_dir: PathLike | None, start_timeout: float) -> None:
        self.port = port or free_port()
        self._own_dir = base_dir is None
        self.base_dir = Path(base_dir or tempfile.mkdtemp(prefix=f"mpesa-{self.name}-"))
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.start_timeout = start_timeout
        self.process: ManagedProcess | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url} running={self.running}>"

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash)."""
        return f"http://{HOST}:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.running

    def _argv(self) -> list[str]:
        raise NotImplementedError

    def _env(self) -> dict[str, str | None]:
        return {}

    def _before_start(self) -> None:
        """Hook: prepare files before each start."""

    def start(self) -> _Service:
        """Start and wait until ready; raises ServerError with the log when it is not."""
        if self.running:
            return self
        self._before_start()
        self.process = ManagedProcess(
            self._argv(),
            env=self._env(),
            cwd=self._cwd(),
            log_path=self.base_dir / f"{self.name}.log",
            name=self.name,
            stop_timeout=10.0,
        )
        self.process.start()
        try:
            wait_http(
                self.url + self.ready_path,
                self.start_timeout,
                statuses=self.ready_statuses,
                process=self.process,
            )
        except BaseException:
            self.process.stop()
            raise
        return self

    def _cwd(self) -> PathLike | None:
        return self.base_dir

    def stop(self) -> None:
        """Stop the server (graceful, then killed after a bound); no-op when down."""
        if self.process is not None:
            self.process.stop()

    def kill(self) -> None:
        """SIGKILL the server (a crash); no-op when down."""
        if self.process is not None:
            self.process.kill()

    def restart(self) -> _Service:
        """Stop and start again on the same port with the same files."""
        self.stop()
        return self.start()

    def cleanup(self) -> None:
        """Stop, and remove the base directory when this object created it."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        return _tail(self.base_dir / f"{self.name}.log", lines)

    def wait_for(
        self, predicate: Callable[[], T], timeout: float = 15.0, interval: float = 0.2, description: str | None = None
    ) -> T:
        """``wait_until`` whose timeout message carries this server's log tail."""
        try:
            return wait_until(predicate, timeout, interval, description=description)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n{self.log_tail()}") from None

    def __enter__(self) -> Any:
        try:
            return self.start()
        except BaseException:
            self.cleanup()
            raise

    def __exit__(self, *exc_info: object) -> None:
        self.cleanup()


def _write_config(config: str | Mapping[str, Any] | os.PathLike, target: Path) -> None:
    """Write a YAML config given as text, as a mapping, or as a file path, to ``target``."""
    if isinstance(config, Mapping):
        import yaml

        target.write_text(yaml.safe_dump(dict(config), sort_keys=False))
    elif isinstance(config, os.PathLike):
        target.write_text(Path(config).read_text())
    elif isinstance(config, str):
        if "\n" not in config and ":" not in config and Path(config).exists():
            raise ValueError(
                f"config {config!r} looks like a file path; pass pathlib.Path({config!r}) "
                "for a file, or the YAML text itself"
            )
        target.write_text(config)
    else:
        raise TypeError(f"config must be YAML text, a mapping or a path, not {type(config).__name__}")


# --------------------------------------------------------------------------- PostgreSQL


def _find_pg_bin() -> Path:
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
        self.bin_dir = Path(bin_dir) if bin_dir else _find_pg_bin()
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
        _live.add(self)
        if first:
            self._bootstrap()
        return self

    def stop(self, mode: str = "fast", timeout: float = 30.0) -> None:
        """``pg_ctl stop -m fast`` (or ``immediate``, a crash); no-op when down."""
        if not self.running:
            _live.discard(self)
            return
        self._run(
            [self.bin_dir / "pg_ctl", "stop", "-D", self.data_dir, "-m", mode, "-w", "-t", str(int(timeout))],
            timeout=timeout + 10,
        )
        _live.discard(self)

    def restart(self) -> PostgresServer:
        self.stop()
        return self.start()

    def cleanup(self) -> None:
        """Stop, and remove the directory when this object created it."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        return _tail(self.log_path, lines)

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
                cur.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(self.user)))
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


# --------------------------------------------------------------------------- Prometheus


class PrometheusServer(_Service):
    """Debian's ``prometheus`` on 127.0.0.1 with a config written into ``base_dir``.

    ``config`` is the YAML text, a mapping, or a ``pathlib.Path`` to copy. Relative
    ``rule_files`` entries in it resolve against ``base_dir``; ``rule_files`` given here
    are appended to the config as absolute paths (PyYAML needed for that). The
    lifecycle API is on, so ``reload()`` works; ``extra_args`` go last on the command
    line (e.g. ``["--rules.alert.resend-delay=1s"]``).

    Example::

        port = free_port()
        text = f"scrape_configs: [{{job_name: self, static_configs: [{{targets: ['127.0.0.1:{port}']}}]}}]"
        with PrometheusServer(text, port=port) as prom:
            prom.wait_for(lambda: prom.query("up"))
    """

    name = "prometheus"

    def __init__(
        self,
        config: str | Mapping[str, Any] | os.PathLike,
        *,
        rule_files: Iterable[PathLike] = (),
        port: int | None = None,
        extra_args: Sequence[str] = (),
        base_dir: PathLike | None = None,
        binary: PathLike = "prometheus",
        start_timeout: float = 30.0,
    ) -> None:
        super().__init__(port=port, base_dir=base_dir, start_timeout=start_timeout)
        self.binary = os.fspath(binary)
        self.extra_args = list(extra_args)
        self.rule_files = [Path(p).resolve() for p in rule_files]
        self.config_path = self.base_dir / "prometheus.yml"
        self.storage_path = self.base_dir / "data"
        self._config = config
        self._write()

    def _write(self) -> None:
        _write_config(self._config, self.config_path)
        if self.rule_files:
            import yaml

            loaded = yaml.safe_load(self.config_path.read_text()) or {}
            loaded["rule_files"] = list(loaded.get("rule_files") or []) + [str(p) for p in self.rule_files]
            self.config_path.write_text(yaml.safe_dump(loaded, sort_keys=False))

    def _argv(self) -> list[str]:
        if shutil.which(self.binary) is None:
            raise ServerError(f"{self.binary} not found: install Debian's prometheus package (scripts/test.sh does)")
        return [
            self.binary,
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.storage_path}",
            f"--web.listen-address={HOST}:{self.port}",
            "--web.enable-lifecycle",
            "--log.level=info",
            *self.extra_args,
        ]

    # -- API
    def api(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        """GET ``/api/v1/<path>`` and return its ``data`` (raises ServerError on an error)."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        reply = http_json("GET", f"{self.url}/api/v1/{path.lstrip('/')}{query}")
        if reply.get("status") != "success":
            raise ServerError(f"Prometheus /api/v1/{path} failed: {reply}")
        return reply["data"]

    def query(self, expr: str, time: float | None = None) -> list[dict[str, Any]]:
        """An instant query; the ``result`` list (``[{"metric": {...}, "value": [ts, "v"]}]``)."""
        params: dict[str, Any] = {"query": expr}
        if time is not None:
            params["time"] = time
        return self.api("query", params)["result"]

    def value(self, expr: str) -> float | None:
        """The single value of an instant vector query, or None when it is empty."""
        result = self.query(expr)
        if not result:
            return None
        if len(result) > 1:
            raise ServerError(f"{expr!r} returned {len(result)} series, expected at most one: {result}")
        return float(result[0]["value"][1])

    def alerts(self) -> list[dict[str, Any]]:
        """``/api/v1/alerts``: every pending and firing alert."""
        return self.api("alerts")["alerts"]

    def firing(self, alertname: str | None = None) -> list[dict[str, Any]]:
        """Firing alerts, optionally of one name."""
        return [
            a
            for a in self.alerts()
            if a.get("state") == "firing" and (alertname is None or a["labels"].get("alertname") == alertname)
        ]

    def rules(self) -> list[dict[str, Any]]:
        """``/api/v1/rules`` groups."""
        return self.api("rules")["groups"]

    def targets(self) -> list[dict[str, Any]]:
        """``/api/v1/targets`` active targets (each with ``health``, ``labels``, ``lastError``)."""
        return self.api("targets")["activeTargets"]

    def reload(
        self,
        config: str | Mapping[str, Any] | os.PathLike | None = None,
        *,
        rule_files: Iterable[PathLike] | None = None,
    ) -> None:
        """Rewrite the config (new text and/or rule files, when given) and POST
        ``/-/reload``; raises ServerError when Prometheus rejects it. Rule files are
        re-read on every reload, so editing them and calling ``reload()`` is enough."""
        if config is not None:
            self._config = config
        if rule_files is not None:
            self.rule_files = [Path(p).resolve() for p in rule_files]
        self._write()
        http_json("POST", f"{self.url}/-/reload")


# --------------------------------------------------------------------------- Alertmanager


def _default_alertmanager_binary() -> str:
    if Path("/usr/bin/prometheus-alertmanager").exists():
        return "/usr/bin/prometheus-alertmanager"
    return "alertmanager"


class AlertmanagerServer(_Service):
    """Alertmanager on 127.0.0.1, clustering off, state kept under ``base_dir``.

    ``restart()`` keeps the storage directory, so silences and the notification log
    (what was already sent) survive; alerts themselves live in memory and must be sent
    again (Prometheus does so every resend delay).

    Example::

        with AlertmanagerServer(config) as am:
            am.post_alerts([{"labels": {"alertname": "Test", "severity": "critical"}}])
            am.wait_for(lambda: am.alerts(labels={"alertname": "Test"}))
    """

    name = "alertmanager"

    def __init__(
        self,
        config: str | Mapping[str, Any] | os.PathLike,
        *,
        port: int | None = None,
        extra_args: Sequence[str] = (),
        base_dir: PathLike | None = None,
        binary: PathLike | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        super().__init__(port=port, base_dir=base_dir, start_timeout=start_timeout)
        self.binary = os.fspath(binary or _default_alertmanager_binary())
        self.extra_args = list(extra_args)
        self.config_path = self.base_dir / "alertmanager.yml"
        self.storage_path = self.base_dir / "data"
        _write_config(config, self.config_path)

    def _argv(self) -> list[str]:
        if shutil.which(self.binary) is None:
            raise ServerError(
                f"{self.binary} not found: install Debian's prometheus-alertmanager package (scripts/test.sh does)"
            )
        return [
            self.binary,
            f"--config.file={self.config_path}",
            f"--storage.path={self.storage_path}",
            f"--web.listen-address={HOST}:{self.port}",
            f"--web.external-url={self.url}",
            "--cluster.listen-address=",
            *self.extra_args,
        ]

    def post_alerts(self, alerts: Sequence[Mapping[str, Any]]) -> None:
        """POST alerts to ``/api/v2/alerts`` (each ``{"labels": ..., "annotations": ...}``)."""
        http_json("POST", f"{self.url}/api/v2/alerts", list(alerts))

    def alerts(
        self,
        *matchers: str,
        labels: Mapping[str, str] | None = None,
        receiver: str | None = None,
        active: bool = True,
        silenced: bool = True,
        inhibited: bool = True,
        unprocessed: bool = True,
    ) -> list[dict[str, Any]]:
        """``GET /api/v2/alerts`` filtered by matchers (``'severity=~"high|critical"'``)
        and/or exact ``labels``; each alert has ``labels``, ``annotations``, ``status``."""
        filters = list(matchers) + [f"{key}={json.dumps(value)}" for key, value in (labels or {}).items()]
        params: list[tuple[str, str]] = [("filter", f) for f in filters]
        params += [
            ("active", str(active).lower()),
            ("silenced", str(silenced).lower()),
            ("inhibited", str(inhibited).lower()),
            ("unprocessed", str(unprocessed).lower()),
        ]
        if receiver is not None:
            params.append(("receiver", receiver))
        return http_json("GET", f"{self.url}/api/v2/alerts?{urllib.parse.urlencode(params)}") or []

    def groups(self) -> list[dict[str, Any]]:
        """``GET /api/v2/alerts/groups``: alerts as routed, with their receiver."""
        return http_json("GET", f"{self.url}/api/v2/alerts/groups") or []

    def status(self) -> dict[str, Any]:
        """``GET /api/v2/status`` (config as loaded, uptime, cluster)."""
        return http_json("GET", f"{self.url}/api/v2/status")

    def reload(self, config: str | Mapping[str, Any] | os.PathLike | None = None) -> None:
        """Write a new config (when given) and POST ``/-/reload``; raises when rejected."""
        if config is not None:
            _write_config(config, self.config_path)
        http_json("POST", f"{self.url}/-/reload")


# --------------------------------------------------------------------------- gunicorn


class GunicornServer(_Service):
    """``python -m gunicorn`` serving ``app_spec`` (``"package.module:app"``) on 127.0.0.1.

    Uses ``gunicorn_conf.py`` beside this module unless ``config_path`` says otherwise:
    it marks dead workers for prometheus_client's multiprocess mode. With
    ``multiproc_dir`` (or PROMETHEUS_MULTIPROC_DIR in ``env``) the directory is emptied
    before every start and exported to the master and workers. ``cwd`` defaults to the
    current directory, so app modules import as they do for pytest.
    Readiness: any HTTP answer on ``ready_path``.
    """

    name = "gunicorn"
    ready_statuses = None

    def __init__(
        self,
        app_spec: str,
        *,
        workers: int = 2,
        env: Mapping[str, str | None] | None = None,
        port: int | None = None,
        config_path: PathLike | None = GUNICORN_CONF,
        multiproc_dir: PathLike | None = None,
        cwd: PathLike | None = None,
        extra_args: Sequence[str] = (),
        ready_path: str = "/",
        base_dir: PathLike | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        super().__init__(port=port, base_dir=base_dir, start_timeout=start_timeout)
        self.app_spec = app_spec
        self.workers = workers
        self.env = dict(env or {})
        self.config_path = None if config_path is None else Path(config_path)
        if multiproc_dir is None and self.env.get("PROMETHEUS_MULTIPROC_DIR"):
            multiproc_dir = self.env["PROMETHEUS_MULTIPROC_DIR"]
        self.multiproc_dir = None if multiproc_dir is None else Path(multiproc_dir)
        self.app_cwd = Path(cwd) if cwd is not None else Path.cwd()
        self.extra_args = list(extra_args)
        self.ready_path = ready_path

    def _before_start(self) -> None:
        if self.multiproc_dir is not None:
            shutil.rmtree(self.multiproc_dir, ignore_errors=True)
            self.multiproc_dir.mkdir(parents=True)

    def _cwd(self) -> PathLike | None:
        return self.app_cwd

    def _env(self) -> dict[str, str | None]:
        env = dict(self.env)
        if self.multiproc_dir is not None:
            env["PROMETHEUS_MULTIPROC_DIR"] = str(self.multiproc_dir)
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def _argv(self) -> list[str]:
        argv = [sys.executable, "-m", "gunicorn"]
        if self.config_path is not None:
            argv += ["--config", str(self.config_path)]
        argv += [
            "--bind", f"{HOST}:{self.port}",
            "--workers", str(self.workers),
            "--graceful-timeout", "5",
            "--pid", str(self.base_dir / "gunicorn.pid"),
            *self.extra_args,
            self.app_spec,
        ]  # fmt: skip
        return argv

    def worker_pids(self) -> list[int]:
        """The pids of the live worker processes (children of the master)."""
        import psutil

        if not self.running or self.process is None or self.process.pid is None:
            return []
        try:
            children = psutil.Process(self.process.pid).children()
        except psutil.NoSuchProcess:
            return []
        return sorted(child.pid for child in children if child.status() != psutil.STATUS_ZOMBIE)

    def get(self, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
        """GET a path; (status, body), whatever the status."""
        status, _, body = http_request("GET", self.url + path, timeout=timeout)
        return status, body


# --------------------------------------------------------------------------- fakes in process


class HangingTCPServer:
    """Accepts TCP connections on 127.0.0.1 and never sends or reads a byte.

    The database "that accepts the TCP connection and never answers": a client's
    connect succeeds, its first read blocks until its own timeout. Connections are held
    open until ``stop()``. ``accepted`` counts them.
    """

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.accepted = 0
        self._listener: socket.socket | None = None
        self._connections: list[socket.socket] = []
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()

    @property
    def address(self) -> tuple[str, int]:
        return HOST, self.port

    @property
    def dsn(self) -> str:
        """A PostgreSQL DSN pointing here (placeholder credentials)."""
        return f"postgresql://user:placeholder@{HOST}:{self.port}/hang"

    def start(self) -> HangingTCPServer:
        if self._listener is not None:
            return self
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((HOST, self.port))
        listener.listen(1024)
        listener.settimeout(0.1)
        self._listener = listener
        self._stopping.clear()
        self._thread = threading.Thread(target=self._accept_loop, name="hanging-tcp", daemon=True)
        self._thread.start()
        return self

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._connections.append(conn)
                self.accepted += 1

    def stop(self) -> None:
        """Stop accepting and close every held connection."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()

    def __enter__(self) -> HangingTCPServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@dataclass
class RecordedRequest:
    """One request seen by RecordingHTTPServer. Header names are lower-cased."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    time: float = field(default_factory=time.time)

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        """The body as an ``application/x-www-form-urlencoded`` form (last value wins)."""
        return dict(urllib.parse.parse_qsl(self.text, keep_blank_values=True))


Responder = Callable[[RecordedRequest], tuple[int, Any] | tuple[int, Any, Mapping[str, str]]]


class _RecordingHandler(http.server.BaseHTTPRequestHandler):
    server: _RecordingHTTPServerImpl

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base class name
        """Quiet: the recorder's list is the log."""

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0] or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        parsed = urllib.parse.urlsplit(self.path)
        request = RecordedRequest(
            method=self.command,
            path=parsed.path,
            query=urllib.parse.parse_qs(parsed.query, keep_blank_values=True),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=self._read_body(),
        )
        owner = self.server.owner
        owner._record(request)
        status, body, headers, delay = owner._respond(request)
        if delay and owner._stopping.wait(delay):
            return
        if isinstance(body, (dict, list)):
            payload = json.dumps(body).encode()
            headers = {"Content-Type": "application/json", **headers}
        elif isinstance(body, str):
            payload = body.encode()
            headers = {"Content-Type": "text/plain; charset=utf-8", **headers}
        else:
            payload = bytes(body or b"")
        try:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (its own timeout): nothing to answer

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle


class _RecordingHTTPServerImpl(http.server.ThreadingHTTPServer):
    daemon_threads = True
    owner: RecordingHTTPServer


@dataclass
class _Route:
    status: int = 200
    body: Any = "ok"
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    handler: Responder | None = None


def _wait_for_items(condition: threading.Condition, items: Callable[[], list[Any]],
                    matches: Callable[[Any], bool], count: int, timeout: float) -> tuple[list[Any], list[Any]]:
    """Wait (bounded) on ``condition`` until ``count`` items match; return (matching, all)."""
    deadline = time.monotonic() + timeout
    with condition:
        while True:
            everything = list(items())
            matching = [item for item in everything if matches(item)]
            remaining = deadline - time.monotonic()
            if len(matching) >= count or remaining <= 0:
                return matching, everything
            condition.wait(remaining)


class RecordingHTTPServer:
    """A threaded HTTP server on 127.0.0.1 that records every request and answers from
    a table: the fake Slack webhook, SMS provider and Daraja of the tests.

    Routes match the path (no query string) exactly, or by prefix when registered with
    a trailing ``*``; a method may be given; the longest match wins; otherwise the
    default answer (200 ``ok``). A body that is a dict or list is sent as JSON.

    Example::

        with RecordingHTTPServer() as slack:
            slack.set_response("/hook", 500, {"error": "down"})
            ...  # code under test posts to slack.url + "/hook"
            [request] = slack.wait_for(1, path="/hook")
            assert request.json()["text"]
    """

    def __init__(self, port: int | None = None, *, default_status: int = 200, default_body: Any = "ok") -> None:
        self.port = port or free_port()
        self.name = f"recorder:{self.port}"
        self._default = _Route(default_status, default_body)
        self._routes: dict[tuple[str | None, str], _Route] = {}
        self._received: list[RecordedRequest] = []
        self._condition = threading.Condition()
        self._stopping = threading.Event()
        self._server: _RecordingHTTPServerImpl | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    # -- configuration
    def set_response(
        self,
        path: str,
        status: int = 200,
        body: Any = "ok",
        *,
        headers: Mapping[str, str] | None = None,
        delay: float = 0.0,
        method: str | None = None,
    ) -> None:
        """Answer requests to ``path`` (``/prefix*`` for a prefix) with this, after ``delay`` s."""
        self._routes[(method.upper() if method else None, path)] = _Route(status, body, dict(headers or {}), delay)

    def set_handler(self, path: str, handler: Responder, *, method: str | None = None) -> None:
        """Answer ``path`` with ``handler(request) -> (status, body[, headers])``."""
        self._routes[(method.upper() if method else None, path)] = _Route(handler=handler)

    def _match(self, request: RecordedRequest) -> _Route:
        best: tuple[int, _Route] | None = None
        for (method, pattern), route in list(self._routes.items()):
            if method is not None and method != request.method:
                continue
            if pattern.endswith("*"):
                hit = request.path.startswith(pattern[:-1])
            else:
                hit = request.path == pattern
            if hit:
                score = len(pattern) * 2 + (1 if method else 0)
                if best is None or score > best[0]:
                    best = (score, route)
        return best[1] if best else self._default

    def _respond(self, request: RecordedRequest) -> tuple[int, Any, dict[str, str], float]:
        route = self._match(request)
        if route.handler is None:
            return route.status, route.body, dict(route.headers), route.delay
        try:
            answer = route.handler(request)
        except Exception as exc:  # a broken test handler should show up as a 500, not a hang
            return 500, f"handler raised {exc!r}", {}, 0.0
        status, body, *rest = answer
        return status, body, dict(rest[0]) if rest else {}, 0.0

    # -- records
    def _record(self, request: RecordedRequest) -> None:
        with self._condition:
            self._received.append(request)
            self._condition.notify_all()

    def received(self, path: str | None = None, method: str | None = None) -> list[RecordedRequest]:
        """Requests so far, oldest first, optionally for one path (``*`` prefix ok) / method."""
        with self._condition:
            requests = list(self._received)
        return [r for r in requests if _request_matches(r, path, method)]

    def wait_for(
        self, count: int = 1, *, path: str | None = None, method: str | None = None, timeout: float = 10.0
    ) -> list[RecordedRequest]:
        """Block until at least ``count`` matching requests arrived; return them all.

        Raises TimeoutError naming what did arrive.
        """
        matching, everything = _wait_for_items(
            self._condition, lambda: self._received, lambda r: _request_matches(r, path, method), count, timeout)
        seen = [f"{r.method} {r.path}" for r in everything]
        if len(matching) < count:
            raise TimeoutError(
                f"{count} request(s) to {method or '*'} {path or '*'} expected within {timeout:g} s, "
                f"got {len(matching)}; all received: {seen}"
            )
        return matching

    def clear(self) -> None:
        with self._condition:
            self._received.clear()

    # -- lifecycle
    def start(self) -> RecordingHTTPServer:
        if self._server is not None:
            return self
        self._stopping.clear()
        server = _RecordingHTTPServerImpl((HOST, self.port), _RecordingHandler)
        server.owner = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=self.name, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes handlers sleeping in a configured delay
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(f"{r.method} {r.path} {r.text[:200]}" for r in self.received()[-lines:])

    def __enter__(self) -> RecordingHTTPServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _request_matches(request: RecordedRequest, path: str | None, method: str | None) -> bool:
    if method is not None and request.method != method.upper():
        return False
    if path is None:
        return True
    if path.endswith("*"):
        return request.path.startswith(path[:-1])
    return request.path == path


@dataclass
class Mail:
    """One message received by SMTPSink. Header names are lower-cased."""

    mail_from: str
    rcpt_tos: list[str]
    subject: str
    body: str
    headers: dict[str, str]
    raw: bytes


class _SinkHandler:
    def __init__(self, sink: SMTPSink) -> None:
        self.sink = sink

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd hook name
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode()
        message = email.message_from_bytes(raw, policy=email.policy.default)
        part = message.get_body(preferencelist=("plain", "html"))
        body = part.get_content() if part is not None else ""
        self.sink._record(
            Mail(
                mail_from=envelope.mail_from,
                rcpt_tos=list(envelope.rcpt_tos),
                subject=str(message.get("subject", "")),
                body=body,
                headers={k.lower(): str(v) for k, v in message.items()},
                raw=raw,
            )
        )
        return "250 Message accepted for delivery"


def _accept_any_login(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> Any:
    from aiosmtpd.smtp import AuthResult

    return AuthResult(success=True)


class SMTPSink:
    """An SMTP server (aiosmtpd) on 127.0.0.1 that keeps every message it receives.

    No TLS. AUTH is offered and any login accepted, so a client configured with
    placeholder credentials (Alertmanager's ``smtp_auth_username``) works too.

    Example::

        with SMTPSink() as sink:
            ...  # code under test sends to sink.host:sink.port
            [mail] = sink.wait_for(1)
    """

    def __init__(self, port: int | None = None, *, accept_auth: bool = True) -> None:
        self.host = HOST
        self.port = port or free_port()
        self.name = f"smtp:{self.port}"
        self.accept_auth = accept_auth
        self._messages: list[Mail] = []
        self._condition = threading.Condition()
        self._controller: Any = None

    def _record(self, mail: Mail) -> None:
        with self._condition:
            self._messages.append(mail)
            self._condition.notify_all()

    @property
    def messages(self) -> list[Mail]:
        with self._condition:
            return list(self._messages)

    def wait_for(self, count: int = 1, *, timeout: float = 10.0, to: str | None = None) -> list[Mail]:
        """Block until ``count`` messages (to ``to``, when given) arrived; return them."""
        matching, everything = _wait_for_items(
            self._condition, lambda: self._messages, lambda m: to is None or to in m.rcpt_tos, count, timeout)
        subjects = [m.subject for m in everything]
        if len(matching) < count:
            raise TimeoutError(
                f"{count} mail(s){' to ' + to if to else ''} expected within {timeout:g} s, "
                f"got {len(matching)}; subjects received: {subjects}"
            )
        return matching

    def clear(self) -> None:
        with self._condition:
            self._messages.clear()

    def start(self) -> SMTPSink:
        if self._controller is not None:
            return self
        from aiosmtpd.controller import Controller

        kwargs: dict[str, Any] = {}
        if self.accept_auth:
            # PLAIN only: Alertmanager's Go SMTP client aborts on aiosmtpd's LOGIN prompt.
            kwargs.update(authenticator=_accept_any_login, auth_require_tls=False,
                          auth_exclude_mechanism=["LOGIN"])
        controller = Controller(
            _SinkHandler(self),
            hostname=HOST,
            port=self.port,
            server_hostname="smtp-sink.local",
            ready_timeout=10.0,
            **kwargs,
        )
        controller.start()
        self._controller = controller
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(f"{m.mail_from} -> {m.rcpt_tos}: {m.subject}" for m in self.messages[-lines:])

    def __enter__(self) -> SMTPSink:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
