"""Child processes and the small helpers every launcher of this package shares.

Why: starting a real server well means the same small things every time: a free port on
127.0.0.1, a bounded wait for readiness that fails fast (with the server's log) when the
program dies, HTTP calls that never go through a proxy, a stop that cannot hang, and a
stop at interpreter exit for anything a test run left behind. They live here once.

Only the standard library is imported here.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "HOST",
    "ServerError",
    "free_port",
    "wait_until",
    "wait_http",
    "http_json",
    "http_request",
    "log_tails",
    "ManagedProcess",
]

#: Every launcher binds here: tests only ever use loopback addresses.
HOST = "127.0.0.1"

T = TypeVar("T")
PathLike = str | os.PathLike


class ServerError(RuntimeError):
    """A server did not start, did not become ready, or answered an API call badly.

    The message ends with the tail of the server's log so that a failing test says why.
    """


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


def file_tail(path: Path | None, lines: int) -> str:
    """The last ``lines`` lines of a log file (its last 64 KiB read), for messages."""
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


def stop_at_exit(server: Any) -> None:
    """Have ``server.stop()`` called at interpreter exit unless it was stopped before."""
    _live.add(server)


def forget_at_exit(server: Any) -> None:
    """``server`` was stopped: nothing to do for it at exit."""
    _live.discard(server)


@atexit.register
def _stop_everything() -> None:
    for server in list(_live):
        with contextlib.suppress(Exception):
            server.stop()


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
        stop_at_exit(self)
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
        forget_at_exit(self)
        return self._popen.returncode

    def kill(self) -> int | None:
        """SIGKILL the group at once (a crash, not a shutdown); return the exit code."""
        if self._popen is None:
            return None
        self.send_signal(signal.SIGKILL)
        self._popen.wait(10)
        forget_at_exit(self)
        return self._popen.returncode

    def restart(self) -> ManagedProcess:
        self.stop()
        return self.start()

    def _reap(self) -> None:
        if self._popen is not None and self._popen.poll() is None:
            self.stop()

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the log, for assertion messages."""
        return file_tail(self.log_path, lines)

    def __enter__(self) -> ManagedProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
