"""Request hooks: count and time every request by method, URL rule, status, organization.

This is the product's tax on every payment request, so the hot path is lean: the pair of
metric children (counter, histogram) is cached per ``(method, rule, status,
organization)`` key, and a request costs a clock read, a few dict lookups and two
updates. The key space is bounded: methods by a fixed set, rules by the app's routes,
statuses by HTTP, organizations by :mod:`flask_mpesa_monitor.tenancy`.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from flask import Flask, Response, g, request

from . import metrics, tenancy
from .redact import get_logger

log = get_logger(__name__)

HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"
ORGANIZATION_VIEW_ARGS = ("org_id", "organization_id")

_G_KEY = "_mpesa_monitor_start"
_perf_counter = time.perf_counter


class RequestMetrics:
    """The before/after/teardown hooks of one app (registered by ``init_app``)."""

    def __init__(
        self,
        excluded_paths: frozenset[str],
        organization_header: str,
        resolver: Callable[[], Any] | None = None,
    ) -> None:
        self.excluded_paths = excluded_paths
        self.organization_header = organization_header
        self.resolver = resolver
        self._children: dict[tuple, tuple[Any, Any]] = {}
        self._in_progress = metrics.requests_in_progress

    def register(self, app: Flask) -> None:
        app.before_request(self.before_request)
        app.after_request(self.after_request)
        app.teardown_request(self.teardown_request)

    # --- hooks --------------------------------------------------------------------
    def before_request(self) -> None:
        if request.path in self.excluded_paths:
            return
        setattr(g, _G_KEY, _perf_counter())
        self._in_progress.inc()

    def after_request(self, response: Response) -> Response:
        start = g.pop(_G_KEY, None)
        if start is not None:
            self._observe(start, response.status_code)
        return response

    def teardown_request(self, exc: BaseException | None) -> None:
        # after_request did not run: an unhandled exception propagated. Count it as 500.
        start = g.pop(_G_KEY, None)
        if start is not None:
            self._observe(start, 500)

    # --- recording ----------------------------------------------------------------
    def _observe(self, start: float, status: int) -> None:
        seconds = _perf_counter() - start
        self._in_progress.dec()
        try:
            rule = request.url_rule
            key = (request.method, rule.rule if rule is not None else UNMATCHED, status,
                   self.organization())
            children = self._children.get(key)
            if children is None:
                children = self._children_for(key)
            children[0].inc()
            children[1].observe(seconds)
        except Exception:  # monitoring must never break the request it watches
            log.exception("could not record request metrics")

    def _children_for(self, key: tuple) -> tuple[Any, Any]:
        method, endpoint, status, organization = key
        method = method if method in HTTP_METHODS else "other"
        children = (
            metrics.requests_total.labels(method, endpoint, str(status), organization),
            metrics.request_duration_seconds.labels(method, endpoint, organization),
        )
        if method == "other":
            return children  # do not let junk methods grow the cache
        self._children[key] = children
        return children

    def organization(self) -> str:
        """The bounded organization label of the current request."""
        raw: Any = None
        if self.resolver is not None:
            try:
                raw = self.resolver()
            except Exception:  # an app resolver failing must not fail the request
                raw = None
        if raw is None:
            view_args = request.view_args
            if view_args:
                raw = view_args.get("org_id") or view_args.get("organization_id")
            if raw is None:
                raw = request.headers.get(self.organization_header)
        return tenancy.organizations(raw)
