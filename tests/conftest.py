"""Shared fixtures: real servers on 127.0.0.1, started by the tests and always stopped.

The launchers live in the package examples/demo/servers/ (the benchmarks and the local demo
stack use them too).
Server fixtures:

- ``postgres`` (session): one PostgreSQL cluster for the whole run, with database and
  password user ``mpesa`` (``postgres.dsn``). A test may stop it mid-test; it is
  started again after that test whatever happened (see ``_postgres_back_up``).
- ``fresh_database`` (function): the DSN of a new, empty database on that cluster,
  dropped afterwards.
- ``prometheus_factory`` / ``alertmanager_factory`` / ``gunicorn_factory`` (function):
  call with a config (or app) to get a started server; all are stopped at teardown.
- ``http_recorder`` (function): factory of RecordingHTTPServer (fake Slack, SMS, Daraja).
- ``smtp_sink``, ``hanging_tcp`` (function): an SMTP sink and a TCP server that never
  answers.
- ``soak_in_background`` (session): the soak of tests/test_soak.py on a local stack of
  its own, in a thread; ``soak_alongside`` starts it at once when the session runs
  that test, so that the end-to-end stack (tests/test_e2e.py) runs beside it instead
  of before it.

This module does not import flask_mpesa_monitor: fixtures for the extension live with
the tests that need them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from examples.demo.servers import (
    AlertmanagerServer,
    GunicornServer,
    HangingTCPServer,
    PostgresServer,
    PrometheusServer,
    RecordingHTTPServer,
    SMTPSink,
)

REPO_ROOT = Path(__file__).resolve().parent.parent

_postgres: PostgresServer | None = None


def _cleanup_all(servers: list[Any]) -> None:
    """Stop every server, newest first; raise the first failure after trying them all."""
    errors: list[BaseException] = []
    for server in reversed(servers):
        try:
            server.cleanup() if hasattr(server, "cleanup") else server.stop()
        except Exception as exc:  # keep stopping the others
            errors.append(exc)
    servers.clear()
    if errors:
        raise errors[0]


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL 15 cluster for the whole session (initdb about 1 s, once)."""
    global _postgres
    server = PostgresServer()
    try:
        server.start()
        _postgres = server
        yield server
    finally:
        _postgres = None
        server.cleanup()


@pytest.fixture(autouse=True)
def _postgres_back_up() -> Iterator[None]:
    """After each test, start the session PostgreSQL again if the test left it stopped,
    so that one failing stop/start test does not fail every test after it."""
    yield
    if _postgres is not None and not _postgres.running:
        _postgres.start()


@pytest.fixture
def fresh_database(postgres: PostgresServer) -> Iterator[str]:
    """DSN of a new empty database owned by the password user; dropped after the test."""
    postgres.start()  # no-op when running
    dsn = postgres.create_database()
    name = dsn.rsplit("/", 1)[1]
    try:
        yield dsn
    finally:
        postgres.start()
        postgres.drop_database(name)


def _server_factory(cls: type, tmp_path_factory: pytest.TempPathFactory,
                    **defaults: Any) -> Iterator[Callable[..., Any]]:
    """Yield ``make(first_arg, **kwargs)`` -> a started ``cls``; stop them all at teardown.
    Each server gets its own directory in pytest's tmp dir (its logs stay there)."""
    started: list[Any] = []

    def make(first: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("base_dir", tmp_path_factory.mktemp(cls.__name__.lower()))
        for key, value in defaults.items():
            kwargs.setdefault(key, value)
        server = cls(first, **kwargs)
        started.append(server)
        server.start()
        return server

    try:
        yield make
    finally:
        _cleanup_all(started)


@pytest.fixture
def prometheus_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., PrometheusServer]]:
    """``prometheus_factory(config, rule_files=..., port=..., extra_args=...)`` -> started
    PrometheusServer; every one is stopped at teardown."""
    yield from _server_factory(PrometheusServer, tmp_path_factory)


@pytest.fixture
def alertmanager_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., AlertmanagerServer]]:
    """``alertmanager_factory(config, port=..., extra_args=...)`` -> started
    AlertmanagerServer; every one is stopped at teardown."""
    yield from _server_factory(AlertmanagerServer, tmp_path_factory)


@pytest.fixture
def gunicorn_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., GunicornServer]]:
    """``gunicorn_factory("module:app", workers=2, env=..., multiproc_dir=...)`` ->
    started GunicornServer (cwd: the repository root); stopped at teardown."""
    yield from _server_factory(GunicornServer, tmp_path_factory, cwd=REPO_ROOT)


@pytest.fixture
def http_recorder() -> Iterator[Callable[..., RecordingHTTPServer]]:
    """``http_recorder(default_status=200, default_body="ok")`` -> started
    RecordingHTTPServer; call it once per fake service; all stopped at teardown."""
    started: list[RecordingHTTPServer] = []

    def make(**kwargs: Any) -> RecordingHTTPServer:
        server = RecordingHTTPServer(**kwargs)
        started.append(server)
        return server.start()

    try:
        yield make
    finally:
        _cleanup_all(started)


@pytest.fixture
def smtp_sink() -> Iterator[SMTPSink]:
    """A started SMTPSink (``.host``, ``.port``, ``.wait_for(n)``, ``.messages``)."""
    with SMTPSink() as sink:
        yield sink


@pytest.fixture
def hanging_tcp() -> Iterator[HangingTCPServer]:
    """A started HangingTCPServer (``.port``, ``.dsn``): accepts, never answers."""
    with HangingTCPServer() as server:
        yield server


#: Seconds of normal traffic in the soak (MPESA_SOAK_SECONDS to change): at --fast,
#: 120 s stand for 30 minutes of the production clock.
SOAK_SECONDS = float(os.environ.get("MPESA_SOAK_SECONDS", "120"))


@pytest.fixture(scope="session")
def soak_in_background(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """bench.bench_soak.soak (``--fast``, 5 actions/s, no fault) started in a thread on
    its own local stack; ``.result(timeout)`` gives the report. Stopped, with its stack,
    at the end of the session whatever happened."""
    from bench.bench_soak import SoakThread

    soak = SoakThread(SOAK_SECONDS, tmp_path_factory.mktemp("soak-stack"), fast=True, rps=5.0).start()
    try:
        yield soak
    finally:
        soak.stop()


@pytest.fixture(scope="session")
def soak_alongside(request: pytest.FixtureRequest) -> None:
    """Start the soak now if this session runs a test that needs it: a fixture that
    takes this one (the end-to-end stack) then runs beside the soak, not before it."""
    if any("soak_in_background" in getattr(item, "fixturenames", ()) for item in request.session.items):
        request.getfixturevalue("soak_in_background")
