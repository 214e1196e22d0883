"""Small in-process fakes on 127.0.0.1, for what the tests may fake: HTTP services
(Slack, SMS providers, Daraja), an SMTP server, and a TCP server that never answers;
and :func:`serving`, which serves one of our own WSGI apps (the inbox, the relay, an
app under test) in a thread.

Each records what it received and offers a bounded ``wait_for``; each is a context
manager. aiosmtpd is imported by :class:`SMTPSink` when it starts.
"""

from __future__ import annotations

import email
import email.policy
import http.server
import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from .process import HOST, free_port

__all__ = ["HangingTCPServer", "RecordedRequest", "RecordingHTTPServer", "Mail", "SMTPSink", "serving"]


@contextmanager
def serving(app: Any, port: int = 0) -> Iterator[str]:
    """Serve the WSGI ``app`` on 127.0.0.1 (a free port unless ``port``) in a thread;
    yields its base URL and always stops the server."""
    from werkzeug.serving import make_server

    server = make_server(HOST, port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://{HOST}:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(5)
        server.server_close()


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
