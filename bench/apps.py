"""The same small app built three ways: bare Flask, prometheus-flask-exporter, ours.

Three routes, one with an ``org_id`` argument, so that every benchmark compares the
same work: ``/`` (a constant), ``/items/<int:item_id>`` (a converter), and
``/orgs/<org_id>/pay`` (the tenant route). The bodies are small JSON documents, as a
payment API would answer.

- ``create_bare()``: no monitoring at all, the baseline.
- ``create_pfe()``: prometheus-flask-exporter with its defaults except
  ``group_by="url_rule"`` (its default groups by raw path, which no multi-tenant app
  can afford). Under gunicorn (``PROMETHEUS_MULTIPROC_DIR`` set) it is
  ``GunicornInternalPrometheusMetrics``, the class its docs give for that case.
- ``create_ours()``: flask-mpesa-monitor with everything on: an organization resolver
  (falling back to the route argument and the ``X-Organization-ID`` header), all
  request metrics, the monitoring blueprint. Settings come from ``MPESA_MONITOR_*``
  environment variables too (the health benchmark passes the database URL that way).

Used as gunicorn app specs too: ``bench.apps:create_ours()``.
"""

from __future__ import annotations

import os

from flask import Flask, g

#: (URL rule, a path that matches it) for each of the three routes.
ROUTES = (
    ("/", "/"),
    ("/items/<int:item_id>", "/items/42"),
    ("/orgs/<org_id>/pay", "/orgs/acme-1/pay"),
)

VARIANTS = ("bare", "pfe", "ours")


def _add_routes(app: Flask) -> None:
    @app.get("/")
    def index() -> dict:
        return {"service": "payments", "ok": True}

    @app.get("/items/<int:item_id>")
    def item(item_id: int) -> dict:
        return {"id": item_id, "price": 100, "currency": "KES"}

    @app.get("/orgs/<org_id>/pay")
    def pay(org_id: str) -> dict:
        return {"organization": org_id, "status": "accepted"}


def create_bare() -> Flask:
    """No monitoring."""
    app = Flask("bench_bare")
    _add_routes(app)
    return app


def create_pfe() -> Flask:
    """prometheus-flask-exporter, defaults but ``group_by="url_rule"``."""
    app = Flask("bench_pfe")
    _add_routes(app)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_flask_exporter.multiprocess import GunicornInternalPrometheusMetrics

        GunicornInternalPrometheusMetrics(app, group_by="url_rule")
    else:
        from prometheus_client import CollectorRegistry
        from prometheus_flask_exporter import PrometheusMetrics

        # A registry of its own so that the app can be built more than once in a
        # process (benchmarks, smoke tests); the per-request work is the same.
        PrometheusMetrics(app, group_by="url_rule", registry=CollectorRegistry())
    return app


def create_ours(**config: object) -> Flask:
    """flask-mpesa-monitor with everything on; ``config`` overrides app.config keys."""
    from flask_mpesa_monitor import MPesaMonitor

    app = Flask("bench_ours")
    for key, value in os.environ.items():
        if key.startswith("MPESA_MONITOR_"):
            app.config[key] = value
    app.config.update(config)
    _add_routes(app)
    # The resolver a real app registers (reads what its auth layer put in ``g``); here
    # nothing sets it, so every request also takes the fallbacks: view argument, header.
    MPesaMonitor(app, organization_resolver=lambda: g.get("organization_id"))
    return app


def create(variant: str) -> Flask:
    """``create("bare" | "pfe" | "ours")``."""
    factories = {"bare": create_bare, "pfe": create_pfe, "ours": create_ours}
    try:
        return factories[variant]()
    except KeyError:
        raise ValueError(f"unknown variant {variant!r}: use one of {', '.join(VARIANTS)}") from None
