"""Request hooks: count and time every request by method, URL rule, status, organization.

This is the product's tax on every payment request, so the hot path is lean (measured in
``bench/``; a Flask hook costs about 1-2 µs to dispatch, a ``flask.request.x`` lookup
through the context-local proxy about 1 µs, a metric update in a request several µs):

- A small WSGI wrapper around ``app.wsgi_app`` notes the start time in the WSGI environ
  and keeps the in-progress gauge: no Flask hook, no proxy lookup.
- One ``after_request`` hook resolves the request proxy once and reads plain attributes
  of the real request from there; the organization header is read from the environ
  under its precomputed WSGI key.
- The metric values are cached per ``(method, rule, status, organization)`` key down to
  prometheus_client's value objects (counter value, histogram sum and buckets), so a
  request costs a clock read, a few dict lookups, a bisect and three value updates.
  These are prometheus_client internals, read on purpose: through its public
  ``inc``/``observe`` the monitoring's added cost per request measured 15-25 % higher
  (about 14 -> 17 µs in ``bench/bench_inprocess.py``). If a release renames them,
  :func:`_fast_path` notices at the first request of a key and the public
  ``inc``/``observe`` are used instead (tested against the lowest and newest release).

The key space is bounded: methods by a fixed set, rules by the app's routes, statuses by
HTTP, organizations by :mod:`flask_mpesa_monitor.tenancy`.

An unhandled exception: in production Flask turns it into a 500 response and runs
``after_request`` with it; when exceptions propagate (testing, debug) it does not, and
``teardown_request`` counts the request as a 500 instead. Whichever hook records a
request takes its start time out of the environ, so it is counted once.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask, Response, request

from . import metrics, tenancy
from .redact import get_logger

log = get_logger(__name__)

HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"
ORGANIZATION_VIEW_ARGS = ("org_id", "organization_id")

#: WSGI environ key holding the request's start time (removed when it is recorded).
START_KEY = "mpesa_monitor.start"
_perf_counter = time.perf_counter


class _Timer:
    """WSGI wrapper: note the start time and keep the in-progress gauge.

    Paths in ``excluded`` (compared with the raw ``PATH_INFO``) are neither timed nor
    counted as in progress.
    """

    def __init__(self, wsgi_app: Callable[..., Iterable[bytes]], excluded: frozenset[str], gauge: Any,
                 on_request: Callable[[], None]) -> None:
        self.wsgi_app = wsgi_app
        self.excluded = excluded
        self.inc = gauge.inc
        self.dec = gauge.dec
        self.on_request = on_request

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        self.on_request()  # e.g. start this worker's health thread (after fork, once)
        if environ.get("PATH_INFO") in self.excluded:
            return self.wsgi_app(environ, start_response)
        environ[START_KEY] = _perf_counter()
        self.inc()
        try:
            return self.wsgi_app(environ, start_response)
        finally:
            self.dec()


def _fast_path(counter: Any, histogram: Any) -> tuple[Any, Any, list[Any], list[float]] | None:
    """prometheus_client's value objects behind a counter and a histogram child, or None."""
    try:
        value, total = counter._value, histogram._sum
        buckets, bounds = list(histogram._buckets), list(histogram._upper_bounds)
    except AttributeError:
        return None
    if len(buckets) != len(bounds) or bounds[-1] != float("inf"):
        return None
    if not all(callable(getattr(v, "inc", None)) for v in (value, total, *buckets)):
        return None
    return value, total, buckets, bounds


class RequestMetrics:
    """The WSGI timer and after/teardown hooks of one app (registered by ``init_app``).

    ``on_request`` runs at the start of every request (monitoring endpoints included);
    ``on_recorded(organization)`` after a request was counted: the extension uses them to
    start the health thread in each worker and to feed ``active_users``, without Flask
    hooks of their own (each costs 1-2 µs per request).
    """

    def __init__(
        self,
        excluded_paths: frozenset[str],
        organization_header: str,
        resolver: Callable[[], Any] | None = None,
        on_request: Callable[[], None] = lambda: None,
        on_recorded: Callable[[str], None] | None = None,
    ) -> None:
        self.on_request = on_request
        self.on_recorded = on_recorded
        self.excluded_paths = excluded_paths
        self.organization_header = organization_header
        self._header_key = "HTTP_" + organization_header.upper().replace("-", "_")
        self.resolver = resolver
        self._children: dict[tuple[Any, ...], Callable[[float], None]] = {}
        self._in_progress = metrics.requests_in_progress

    def register(self, app: Flask) -> None:
        # Flask's documented middleware pattern; mypy sees wsgi_app as a method.
        app.wsgi_app = _Timer(  # type: ignore[method-assign]
            app.wsgi_app, self.excluded_paths, self._in_progress, self.on_request)
        app.after_request(self.after_request)
        app.teardown_request(self.teardown_request)

    # --- hooks --------------------------------------------------------------------
    def after_request(self, response: Response) -> Response:
        # flask types ``request`` as a Request, but it is a LocalProxy: unwrap it once per hook.
        req = request._get_current_object()  # type: ignore[attr-defined]
        start = req.environ.pop(START_KEY, None)
        if start is not None:
            self._observe(req, start, response.status_code)
        return response

    def teardown_request(self, exc: BaseException | None) -> None:
        # after_request did not run: an unhandled exception propagated. Count it as 500.
        if exc is None:
            return
        # flask types ``request`` as a Request, but it is a LocalProxy: unwrap it once per hook.
        req = request._get_current_object()  # type: ignore[attr-defined]
        start = req.environ.pop(START_KEY, None)
        if start is not None:
            self._observe(req, start, 500)

    # --- recording ----------------------------------------------------------------
    def _observe(self, req: Any, start: float, status: int) -> None:
        seconds = _perf_counter() - start
        try:
            rule = req.url_rule
            organization = self._organization(req)
            key = (req.method, rule.rule if rule is not None else UNMATCHED, status, organization)
            record = self._children.get(key)
            if record is None:
                record = self._recorder_for(key)
            record(seconds)
            if self.on_recorded is not None:
                self.on_recorded(organization)
        except Exception:  # monitoring must never break the request it watches
            log.exception("could not record request metrics")

    def _recorder_for(self, key: tuple[Any, ...]) -> Callable[[float], None]:
        """Build (and, for known methods, cache) the function that records one request."""
        method, endpoint, status, organization = key
        method = method if method in HTTP_METHODS else "other"
        counter = metrics.requests_total.labels(method, endpoint, str(status), organization)
        histogram = metrics.request_duration_seconds.labels(method, endpoint, organization)
        fast = _fast_path(counter, histogram)
        if fast is not None:
            value, total, buckets, bounds = fast

            def record(seconds: float) -> None:
                value.inc(1)
                total.inc(seconds)
                buckets[bisect_left(bounds, seconds)].inc(1)
        else:

            def record(seconds: float) -> None:
                counter.inc()
                histogram.observe(seconds)

        if method != "other":  # do not let junk methods grow the cache
            self._children[key] = record
        return record

    def organization(self) -> str:
        """The bounded organization label of the current request."""
        # flask types ``request`` as a Request, but it is a LocalProxy: pass the real object.
        return self._organization(request._get_current_object())  # type: ignore[attr-defined]

    def _organization(self, req: Any) -> str:
        raw: Any = None
        if self.resolver is not None:
            try:
                raw = self.resolver()
            except Exception:  # an app resolver failing must not fail the request
                raw = None
        if raw is None:
            view_args = req.view_args
            if view_args:
                raw = view_args.get("org_id") or view_args.get("organization_id")
            if raw is None:
                raw = req.environ.get(self._header_key)
        return tenancy.organizations(raw)
