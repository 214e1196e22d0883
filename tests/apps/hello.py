"""A tiny WSGI app for the gunicorn launcher's smoke test (tests/test_servers.py).

Routes:
- ``/``: "hello".
- ``/count``: counts one request in a multiprocess counter.
- ``/metrics``: every worker's metrics added up (prometheus_client multiprocess mode).
- ``/rendezvous?token=T``: each request leaves its worker's pid under
  $HELLO_RENDEZVOUS_DIR/T and waits (at most 5 s) until two different pids are there;
  answers with the pids seen. Two concurrent requests get two pids only when two
  workers serve them, without relying on timing.

``hello_worker_up`` is a ``livesum`` gauge set to 1 in each worker: the sum equals the
number of live workers only when dead workers are marked dead (gunicorn_conf.child_exit).
"""

from __future__ import annotations

import json
import os
import urllib.parse
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest, multiprocess

from tests.apps.rendezvous import rendezvous

REQUESTS = Counter("hello_requests", "Requests to /count.")
WORKER_UP = Gauge("hello_worker_up", "1 per live worker.", multiprocess_mode="livesum")
WORKER_UP.set(1)

StartResponse = Callable[..., Any]


def _reply(start_response: StartResponse, status: str, body: bytes, content_type: str = "text/plain") -> list[bytes]:
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]


def _rendezvous(query: str) -> list[int]:
    token = urllib.parse.parse_qs(query).get("token", ["default"])[0]
    return rendezvous("HELLO_RENDEZVOUS_DIR", token)


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "/")
    if path == "/":
        return _reply(start_response, "200 OK", b"hello")
    if path == "/count":
        REQUESTS.inc()
        return _reply(start_response, "200 OK", str(os.getpid()).encode())
    if path == "/metrics":
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return _reply(start_response, "200 OK", generate_latest(registry))
    if path == "/rendezvous":
        pids = _rendezvous(environ.get("QUERY_STRING", ""))
        return _reply(start_response, "200 OK", json.dumps(pids).encode(), "application/json")
    return _reply(start_response, "404 Not Found", b"not found")
