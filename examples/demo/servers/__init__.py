"""Launchers for the real servers the tests, the benchmarks and the local stack run on 127.0.0.1.

Why a package outside ``tests/``: the integration and end-to-end tests must talk to a
real PostgreSQL, Prometheus, Alertmanager and gunicorn, the benchmarks measure against
the same servers, and ``deploy-monitoring.sh --local`` (examples/demo/localstack.py)
starts the same programs for a demo. All three import from here, the same way::

    from examples.demo.servers import PrometheusServer, free_port

Everything binds to 127.0.0.1 only. Every wait is bounded. Every launcher is a context
manager; ``stop()`` never raises because the server is already down; anything still
running at interpreter exit is stopped then.

One module a job:

====================  ========================================================================
process.py            ``ManagedProcess`` (a child in its own process group), ``free_port``,
                      ``wait_until``, HTTP helpers without proxies, ``ServerError``
service.py            ``HTTPService``: the base of every launcher of an HTTP server
postgres.py           ``PostgresServer``: a throw-away cluster from Debian's binaries
prometheus.py         ``PrometheusServer`` and ``AlertmanagerServer``; ``PrometheusAPI``, their
                      query helpers (VictoriaMetrics speaks the same API)
victoriametrics.py    ``VictoriaMetricsServer``: the HA layout's long-term store
gunicorn.py           ``GunicornServer`` with prometheus_client's multiprocess mode
fakes.py              in-process fakes: ``RecordingHTTPServer`` (Slack, SMS providers, Daraja),
                      ``SMTPSink``, ``HangingTCPServer``; ``serving`` (a WSGI app in a thread)
====================  ========================================================================

Adding a launcher: a new module here with one class, built on ``HTTPService`` for an HTTP
server (override ``name``, ``ready_path``, ``_argv()``) or on ``ManagedProcess``
otherwise, and its names added to the imports and ``__all__`` below
(tests/test_servers.py checks that every module's ``__all__`` is re-exported here).

Example::

    with PrometheusServer(config_text) as prom:
        prom.wait_for(lambda: prom.query("up"))
        print(prom.url)

Only the standard library is imported at import time; psycopg2, PyYAML, psutil and
aiosmtpd are imported by the classes that need them.
"""

from .fakes import HangingTCPServer, Mail, RecordedRequest, RecordingHTTPServer, SMTPSink, serving
from .gunicorn import GUNICORN_CONF, GunicornServer
from .postgres import PostgresServer, find_pg_bin
from .process import (
                      HOST,
                      ManagedProcess,
                      ServerError,
                      free_port,
                      http_json,
                      http_request,
                      log_tails,
                      wait_http,
                      wait_until,
)
from .prometheus import AlertmanagerServer, PrometheusAPI, PrometheusServer
from .service import HTTPService, write_config
from .victoriametrics import VictoriaMetricsServer

__all__ = [
    # process
    "HOST",
    "ServerError",
    "free_port",
    "wait_until",
    "wait_http",
    "http_json",
    "http_request",
    "log_tails",
    "ManagedProcess",
    # service
    "HTTPService",
    "write_config",
    # postgres
    "PostgresServer",
    "find_pg_bin",
    # prometheus
    "PrometheusAPI",
    "PrometheusServer",
    "AlertmanagerServer",
    # gunicorn
    "GunicornServer",
    "GUNICORN_CONF",
    # fakes
    "HangingTCPServer",
    "RecordedRequest",
    "RecordingHTTPServer",
    "Mail",
    "SMTPSink",
    "serving",
    # victoriametrics
    "VictoriaMetricsServer",
]
