"""N organizations' worth of series, made two ways: through our extension, and with plain
prometheus_client (default buckets, same metric names and labels, no cardinality guard).

Used by the scrape and memory benchmarks in fresh child processes (series stay
registered for the life of a process, so every point needs its own process).

Per organization, ours goes through the real code paths:

- one GET to each of :data:`ENDPOINTS` (10 URL rules with ``<org_id>``) through the WSGI
  app, so the request hooks label them;
- three decorated Daraja operations (``token_refresh``, ``stk_push`` success,
  ``stk_query`` answering 1032 = customer_cancelled);
- two STK pushes with their callbacks (one success, one cancelled), one c2b
  transaction, a successful and a failed login, a rate-limit hit, the plan limit.

That is 38 series and about 230 exposition lines per organization with our buckets
(``mpesa_stk_pending`` is read from the STK table at scrape time and has a series only for
an organization with pushes pending: none here, once every callback came).
:func:`populate_plain` makes the same series directly. Past the guard's bound (500 by
default) ours folds new organizations into ``other``; plain prometheus_client keeps them all.
"""

from __future__ import annotations

import io
import random
import time
from typing import Any

ENDPOINTS = ("pay", "balance", "status", "refund", "invoices",
             "customers", "reports", "settings", "webhooks", "users")


def organizations(count: int, shuffle_seed: int | None = None) -> list[str]:
    """``org-0000`` ... in order, or shuffled (each gunicorn worker sees its own order)."""
    orgs = [f"org-{i:04d}" for i in range(count)]
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(orgs)
    return orgs


def _stk_callback(checkout: str, code: int, amount: float) -> dict[str, Any]:
    callback: dict[str, Any] = {"MerchantRequestID": "m-" + checkout, "CheckoutRequestID": checkout,
                                "ResultCode": code, "ResultDesc": "bench"}
    if code == 0:
        callback["CallbackMetadata"] = {"Item": [{"Name": "Amount", "Value": amount}]}
    return {"Body": {"stkCallback": callback}}


def _retrying(counter: list[int]) -> Any:
    """Call ``fn`` again when the shared SQLite tables say "database is locked".

    Under gunicorn the pending-STK and summary tables are SQLite files shared by the
    workers; when several processes open them at the same moment, one may get
    ``database is locked`` from its first statement (reported by the scrape benchmark,
    counted in ``counter``). A retry can count a push twice: harmless here, where only
    which series exist matters.
    """
    import sqlite3

    def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
        for attempt in range(20):
            try:
                return fn(*args, **kwargs)
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == 19:
                    raise
                counter[0] += 1
                time.sleep(0.05)
        return None

    return call


def populate_ours(orgs: list[str], worker: int = 0) -> dict[str, Any]:
    """Drive our extension with ``orgs``; returns what the render side needs
    (``lock_errors``: "database is locked" errors retried, see :func:`_retrying`)."""
    from flask import Flask

    from flask_mpesa_monitor import MPesaMonitor, monitor_mpesa_operation

    app = Flask("bench_population")

    def view(org_id: str) -> dict:
        return {"organization": org_id}

    for name in ENDPOINTS:
        app.add_url_rule(f"/orgs/<org_id>/{name}", name, view)
    app.config["MPESA_MONITOR_HEALTH_BACKGROUND"] = False
    monitor = MPesaMonitor(app)

    @monitor_mpesa_operation("token_refresh")
    def token_refresh(org_id: str) -> dict:
        return {"access_token": "placeholder", "expires_in": "3599"}

    @monitor_mpesa_operation("stk_push")
    def stk_push(org_id: str) -> dict:
        return {"ResponseCode": "0", "CheckoutRequestID": "ws-placeholder"}

    @monitor_mpesa_operation("stk_query")
    def stk_query(org_id: str) -> dict:
        return {"ResponseCode": "0", "ResultCode": "1032"}

    wsgi = app.wsgi_app
    lock_errors = [0]
    retry = _retrying(lock_errors)

    def start_response(status: str, headers: list, exc_info: Any = None) -> Any:
        if status[:3] != "200":
            raise RuntimeError(f"population request failed: {status}")
        return lambda data: None

    for i, org in enumerate(orgs):
        for name in ENDPOINTS:
            environ = {"REQUEST_METHOD": "GET", "PATH_INFO": f"/orgs/{org}/{name}", "SCRIPT_NAME": "",
                       "QUERY_STRING": "", "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80",
                       "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(),
                       "wsgi.errors": io.StringIO(), "wsgi.multithread": False, "wsgi.multiprocess": True,
                       "wsgi.run_once": False, "wsgi.version": (1, 0)}
            body = wsgi(environ, start_response)
            for _ in body:
                pass
            getattr(body, "close", lambda: None)()
        token_refresh(org_id=org)
        stk_push(org_id=org)
        stk_query(org_id=org)
        ok, cancelled = f"w{worker}-{i}-ok", f"w{worker}-{i}-cancel"
        retry(monitor.record_stk_push, org, ok, 100)
        retry(monitor.record_stk_callback, _stk_callback(ok, 0, 100), organization=org)
        retry(monitor.record_stk_push, org, cancelled, 50)
        retry(monitor.record_stk_callback, _stk_callback(cancelled, 1032, 50), organization=org)
        retry(monitor.record_transaction, org, "c2b", "success", amount=10)
        monitor.record_auth_attempt(org, True)
        monitor.record_auth_attempt(org, False)
        monitor.record_rate_limit_hit(org, "per_minute")
        monitor.set_api_limit(org, 600)
    return {"app": app, "lock_errors": lock_errors[0]}


def plain_metrics() -> dict[str, Any]:
    """The same metric names and labels with plain prometheus_client defaults.

    Default buckets; gauges take the multiprocess mode we use (a team would have to
    choose one too, and ``all`` would multiply every gauge by the number of workers).
    """
    from prometheus_client import Counter, Gauge, Histogram

    return {
        "requests_total": Counter("mpesa_mcp_requests_total", "h", ["method", "endpoint", "status", "organization"]),
        "request_duration": Histogram("mpesa_mcp_request_duration_seconds", "h",
                                      ["method", "endpoint", "organization"]),
        "in_progress": Gauge("mpesa_mcp_requests_in_progress", "h", multiprocess_mode="livesum"),
        "api_calls": Counter("mpesa_api_calls_total", "h", ["operation", "organization", "outcome"]),
        "api_duration": Histogram("mpesa_api_duration_seconds", "h", ["operation", "organization"]),
        "token_refreshes": Counter("mpesa_token_refreshes_total", "h", ["organization", "status"]),
        "token_expiry": Gauge("mpesa_token_expiry_timestamp_seconds", "h", ["organization"],
                              multiprocess_mode="livemax"),
        "quota": Gauge("mpesa_api_quota_limit", "h", ["organization"], multiprocess_mode="livemax"),
        "transactions": Counter("mpesa_transactions_total", "h", ["organization", "type", "outcome"]),
        "revenue": Counter("mpesa_revenue_total", "h", ["organization", "currency"]),
        "stk_pushes": Counter("mpesa_stk_pushes_total", "h", ["organization"]),
        "callback_delay": Histogram("mpesa_stk_callback_delay_seconds", "h", ["organization"]),
        "auth": Counter("mpesa_auth_attempts_total", "h", ["organization", "result"]),
        "rate_limit": Counter("mpesa_rate_limit_hits_total", "h", ["organization", "limit"]),
    }


def populate_plain(orgs: list[str], worker: int = 0) -> dict[str, Any]:
    """The series :func:`populate_ours` makes, set directly, every organization kept."""
    m = plain_metrics()
    now = time.time()
    for org in orgs:
        for name in ENDPOINTS:
            m["requests_total"].labels("GET", f"/orgs/<org_id>/{name}", "200", org).inc()
            m["request_duration"].labels("GET", f"/orgs/<org_id>/{name}", org).observe(0.0002)
        for operation, outcome in (("token_refresh", "success"), ("stk_push", "success"),
                                   ("stk_query", "customer_cancelled")):
            m["api_calls"].labels(operation, org, outcome).inc()
            m["api_duration"].labels(operation, org).observe(0.00001)
        m["token_refreshes"].labels(org, "success").inc()
        m["token_expiry"].labels(org).set(now + 3599)
        m["stk_pushes"].labels(org).inc(2)
        m["callback_delay"].labels(org).observe(0.001)
        m["callback_delay"].labels(org).observe(0.001)
        m["transactions"].labels(org, "stk_push", "success").inc()
        m["transactions"].labels(org, "stk_push", "customer_cancelled").inc()
        m["transactions"].labels(org, "c2b", "success").inc()
        m["revenue"].labels(org, "KES").inc(110)
        m["auth"].labels(org, "success").inc()
        m["auth"].labels(org, "failure").inc()
        m["rate_limit"].labels(org, "per_minute").inc()
        m["quota"].labels(org).set(600)
    return {"metrics": m, "lock_errors": 0}


def populate(impl: str, orgs: list[str], worker: int = 0) -> dict[str, Any]:
    if impl == "ours":
        return populate_ours(orgs, worker)
    if impl == "plain":
        return populate_plain(orgs, worker)
    raise ValueError(f"unknown implementation {impl!r}: use ours or plain")


#: The ``Accept`` header Prometheus 2.42 scrapes with (it prefers OpenMetrics).
PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
                     "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")

_exporters: dict[str | None, Any] = {}


def render(impl: str, multiprocess_dir: str | None, accept: str | None = PROMETHEUS_ACCEPT) -> tuple[bytes, str]:
    """The /metrics body of this process (or of every worker's files) and its content type,
    negotiated as for a scrape by Prometheus (``accept``).

    Ours renders through one ``MetricsExporter`` per process, as the app's ``/metrics``
    view does (whatever it keeps between scrapes is kept here too).
    """
    if impl == "ours":
        from flask_mpesa_monitor.exposition import MetricsExporter

        exporter = _exporters.get(multiprocess_dir)
        if exporter is None:
            from flask_mpesa_monitor.collectors import StkPendingCollector
            from flask_mpesa_monitor.transactions import TransactionTracker

            exporter = _exporters[multiprocess_dir] = MetricsExporter()
            # as the extension does: the pending table (the workers' shared one) read at each scrape
            exporter.register(StkPendingCollector(TransactionTracker()))
        if bool(exporter.multiprocess_dir) != bool(multiprocess_dir):
            raise RuntimeError("PROMETHEUS_MULTIPROC_DIR does not match the requested mode")
        return exporter.render(accept)
    from prometheus_client import REGISTRY, CollectorRegistry
    from prometheus_client.exposition import choose_encoder

    encoder, content_type = choose_encoder(accept or "")
    if multiprocess_dir:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=multiprocess_dir)
        return encoder(registry), content_type
    return encoder(REGISTRY), content_type


def series(body: bytes) -> set[tuple[str, str]]:
    """The series of an exposition (text or OpenMetrics): (name without suffixes, labels
    without ``le``)."""
    import re

    out = set()
    for line in body.decode().splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, rest = line.partition("{")
        labels = rest.rsplit("}", 1)[0] if rest else ""
        base = re.sub(r"_(bucket|sum|count|created|total)$", "", name.split(" ")[0])
        out.add((base, ",".join(sorted(p for p in re.findall(r'(\w+="[^"]*")', labels) if not p.startswith("le=")))))
    return out


def describe(body: bytes) -> dict[str, Any]:
    """Sample lines, series (a histogram counts once), distinct organizations, bytes."""
    import re

    all_series = series(body)
    orgs = {m.group(1) for _, labels in all_series for m in [re.search(r'organization="([^"]*)"', labels)] if m}
    lines = sum(1 for line in body.decode().splitlines() if line and not line.startswith("#"))
    return {"lines": lines, "series": len(all_series), "organizations": len(orgs - {"unknown", "other"}),
            "bytes": len(body)}
