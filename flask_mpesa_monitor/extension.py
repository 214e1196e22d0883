"""The Flask extension object: ``MPesaMonitor(app)`` or ``monitor.init_app(app)``.

Example::

    monitor = MPesaMonitor()

    def create_app():
        app = Flask(__name__)
        app.config["MPESA_MONITOR_METRICS_TOKEN"] = "..."
        monitor.init_app(app)
        return app

State lives in one :class:`~flask_mpesa_monitor.state.MonitorState` per app, in
``app.extensions["mpesa_monitor"]`` (find it with
:func:`~flask_mpesa_monitor.state.get_state`); the metric objects themselves are
per process (see :mod:`flask_mpesa_monitor.metrics`), so an app created many times, or
several apps in one process, never collide. Methods such as
:meth:`MPesaMonitor.record_stk_callback` act on the current app's state, or, outside an
app context, on the app this monitor was last initialised with.
"""

from __future__ import annotations

import functools
import time
import weakref
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from flask import Flask, current_app, has_app_context, has_request_context, request

from . import metrics, tenancy
from ._version import __version__
from .alerts import AlertLevel
from .b2c import AsyncResult
from .c2b import ConfirmationResult, InvalidConfirmation
from .cli import monitor as monitor_commands
from .config import MonitorConfig
from .health import HealthCheck, HealthReport
from .health.checks import EncryptionCheck
from .redact import get_logger
from .state import EXTENSION_KEY, MonitorState
from .summary import AccessRule
from .tenant_store import default_admission_store
from .transactions import CallbackResult
from .views import bp

F = TypeVar("F", bound=Callable[..., Any])

log = get_logger(__name__)


def daraja_environment(configured: str | None, base_url: str | None) -> str | None:
    """``sandbox`` or ``production``: the setting, else Daraja's host (sandbox.safaricom.co.ke
    is the sandbox, api.safaricom.co.ke production), else None (no series)."""
    if configured:
        return configured
    host = (urlsplit(base_url).hostname or "") if base_url else ""
    if host == "sandbox.safaricom.co.ke":
        return "sandbox"
    if host == "api.safaricom.co.ke":
        return "production"
    return None


class MPesaMonitor:
    """Monitoring for a multi-tenant M-Pesa Flask app.

    :param app: the app to initialise now (or call :meth:`init_app` later).
    :param organization_resolver: a callable returning the current request's organization
        (same as decorating it with :meth:`organization_resolver`).
    """

    def __init__(self, app: Flask | None = None, *, organization_resolver: Callable[[], Any] | None = None) -> None:
        self._organization_resolver = organization_resolver
        self._user_resolver: Callable[[], Any] | None = None
        self._summary_access: AccessRule | None = None
        self._health_checks: dict[str, tuple[Callable[[], Any], bool, float | None]] = {}
        self._encryption_self_test: Callable[[], Any] | None = None
        self._audit_verifier: Callable[[], Any] | None = None
        self._states: weakref.WeakSet[MonitorState] = weakref.WeakSet()
        self._last_state: MonitorState | None = None
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Read ``MPESA_MONITOR_*`` settings, register hooks and the monitoring endpoints."""
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError(
                "flask-mpesa-monitor is already initialised on this app. Create the "
                "MPesaMonitor once and call init_app once per app (in the app factory)."
            )
        config = MonitorConfig.from_mapping(app.config)
        # The label guards are process-wide, as the metric registry is; the organization
        # set is shared by the workers of a host (beside the multiprocess files).
        tenancy.organizations.configure(config.max_organizations, default_admission_store(),
                                        config.known_organizations)
        tenancy.ips.set_limit(config.max_suspicious_ips)
        metrics.build_info.labels(__version__).set(1)
        state = MonitorState(self, config, self._resolve_organization, self._record_user)
        app.extensions[EXTENSION_KEY] = state
        state.request_metrics.register(app)
        app.register_blueprint(bp)
        app.cli.add_command(monitor_commands)
        self._states.add(state)
        self._last_state = state
        for name in self._health_checks:
            self._apply_health_check(state, name)
        self._apply_app_hooks(state)
        self._init_flows(app, config)

    def _init_flows(self, app: Flask, config: MonitorConfig) -> None:
        """The C2B shortcode bound, the Daraja environment series and the app-version hook."""
        tenancy.shortcodes.set_limit(config.max_organizations)
        environment = daraja_environment(config.daraja_environment, config.daraja_base_url)
        if environment is not None:
            metrics.daraja_environment_info.labels(environment).set(1)
        header, allowed = config.app_version_header, config.app_versions

        def count_app_version(response: Any) -> Any:
            raw = request.headers.get(header)
            if raw:
                try:
                    version = raw.strip()
                    if allowed:
                        version = version if version in allowed else tenancy.OTHER
                    metrics.mobile_app_requests_total.labels(tenancy.app_versions(version)).inc()
                except Exception:  # monitoring never breaks the request it watches
                    log.exception("could not count the app version")
            return response

        app.after_request(count_app_version)

    # --- state lookup -------------------------------------------------------------
    def _state(self) -> MonitorState:
        """The current app's state if this monitor initialised it, else the last app's."""
        if has_app_context():
            state: MonitorState | None = current_app.extensions.get(EXTENSION_KEY)
            if state is not None and state.monitor is self:
                return state
        if self._last_state is None:
            raise RuntimeError("MPesaMonitor is not initialised: call init_app(app) first.")
        return self._last_state

    # --- tenancy ------------------------------------------------------------------
    def organization_resolver(self, func: F) -> F:
        """Register the callable that names the current request's organization.

        It runs inside the request (so it may read ``flask.g`` or the logged-in user)
        and returns an organization id or None to fall back to the view argument
        ``org_id``/``organization_id`` and then the organization header::

            @monitor.organization_resolver
            def current_org():
                return getattr(g, "org_id", None)
        """
        self._organization_resolver = func
        return func

    def _resolve_organization(self) -> Any:
        resolver = self._organization_resolver
        return resolver() if resolver is not None else None

    # --- transactions -------------------------------------------------------------
    def record_stk_push(self, organization: Any, checkout_request_id: str, amount: float = 0) -> None:
        """Count an accepted STK push and mark it pending until its callback."""
        self._state().transactions.record_stk_push(organization, checkout_request_id, amount)

    def record_stk_callback(
        self, payload: Any, organization: Any = None, initiated_at: float | None = None
    ) -> CallbackResult:
        """Count a Daraja STK callback (``Body.stkCallback``); see ``TransactionTracker``.

        In a request, the request's source address is checked against
        ``MPESA_MONITOR_CALLBACK_ALLOWED_IPS`` (counted, never refused) and its size
        against ``MPESA_MONITOR_MAX_CALLBACK_BYTES``."""
        state = self._state()
        body_size = None
        if has_request_context():
            self.check_callback_source(organization)
            body_size = request.content_length
        return state.transactions.record_stk_callback(payload, organization, initiated_at, body_size)

    def check_callback_source(self, organization: Any = None) -> bool:
        """True when the current request comes from an allowed callback address (through
        ``MPESA_MONITOR_CALLBACK_TRUSTED_PROXIES`` only); else counts a medium
        ``callback_unknown_source`` event and returns False. Never refuses anything."""
        return self._state().security.check_callback_source(
            request.remote_addr, request.headers.get("X-Forwarded-For"), organization)

    def record_transaction(
        self,
        organization: Any,
        type: str,
        outcome: str | None = None,
        result_code: Any = None,
        amount: float = 0,
        currency: str = "KES",
        checkout_request_id: str | None = None,
    ) -> str:
        """Count a transaction of another flow (c2b, b2c, reversal, ...) or an STK Query
        result (``checkout_request_id``); see ``TransactionTracker.record_transaction``."""
        return self._state().transactions.record_transaction(
            organization, type, outcome, result_code, amount, currency, checkout_request_id)

    # --- reconciliation, C2B, B2C and the other async APIs ----------------------
    def record_stk_query(
        self, organization: Any, checkout_request_id: str, response: Any, amount: float | None = None,
        api: str = "stk_query",
    ) -> CallbackResult:
        """Resolve a pending or missing push from the app's STK Query (or, ``api=
        "transaction_status"``, Transaction Status) answer; see
        ``TransactionTracker.record_stk_query``. Counted once with its callback."""
        return self._state().transactions.record_stk_query(organization, checkout_request_id, response, amount, api)

    def record_c2b_validation(
        self, organization: Any, shortcode: Any, result_code: Any, seconds: float | None = None
    ) -> str:
        """Count the app's answer to a C2B validation (``0`` accepts; ``C2B00011`` to
        ``C2B00016`` reject, by reason) and how long it took; returns accepted/rejected."""
        return self._state().c2b.record_validation(organization, shortcode, result_code, seconds)

    def c2b_validation(self, organization_arg: str | None = None) -> Callable[[F], F]:
        """Decorate the C2B validation view: times it and counts its answer (the
        ``ResultCode`` of the JSON it returns), with the request's ``BusinessShortCode``.
        The organization is the view argument ``organization_arg`` (default ``org_id``
        or ``organization_id``), else the request's resolved organization."""
        def decorate(func: F) -> F:
            @functools.wraps(func)
            def view(*args: Any, **kwargs: Any) -> Any:
                start = time.perf_counter()
                try:
                    response = func(*args, **kwargs)
                except Exception:
                    # Safaricom gets a 500 and applies the shortcode's default action.
                    self._count_validation(None, kwargs, organization_arg, time.perf_counter() - start)
                    raise
                self._count_validation(response, kwargs, organization_arg, time.perf_counter() - start)
                return response

            return view  # type: ignore[return-value]  # wraps() keeps the view's signature; mypy cannot see it

        return decorate

    def _count_validation(
        self, response: Any, kwargs: dict[str, Any], organization_arg: str | None, seconds: float
    ) -> None:
        """Count the view's answer (``None``: the view raised); never raises itself:
        monitoring never breaks the request it watches."""
        try:
            names = (organization_arg,) if organization_arg else ("org_id", "organization_id")
            organization = next((kwargs[n] for n in names if n in kwargs), None)
            if organization is None:
                organization = self._resolve_organization()
            body = request.get_json(silent=True) if has_request_context() else None
            shortcode = body.get("BusinessShortCode") if isinstance(body, dict) else None
            if response is None:
                self._state().c2b.record_failed_validation(organization, shortcode, seconds)
                return
            answer = response[0] if isinstance(response, tuple) else response
            if hasattr(answer, "get_json"):
                answer = answer.get_json(silent=True)
            code = answer.get("ResultCode") if isinstance(answer, dict) else "C2B00016"
            self.record_c2b_validation(organization, shortcode, code, seconds)
        except Exception:
            log.exception("could not count the C2B validation")

    def record_c2b_confirmation(self, payload: Any, organization: Any = None) -> ConfirmationResult:
        """Count a C2B confirmation, once per ``TransID`` across the host's workers. In a
        request, its source address is checked as callbacks' are: from an address not
        allowed, the money is not revenue (``reason="unknown_source"``). Raises
        ``InvalidConfirmation`` (and counts ``invalid_callback``) for a body without a
        TransID, with an amount outside (0, max], or over the byte bound."""
        state = self._state()
        allowed = True
        try:
            if has_request_context():
                size = request.content_length
                if size is not None and size > state.config.max_callback_bytes:
                    raise InvalidConfirmation(
                        f"C2B confirmation body is {size} bytes, more than {state.config.max_callback_bytes}.")
                allowed = self.check_callback_source(organization)
            return state.c2b.record_confirmation(payload, organization, allowed)
        except InvalidConfirmation:
            state.security.record_security_event("invalid_callback", "medium", organization)
            raise

    def record_mpesa_result(self, payload: Any, organization: Any, api: str = "b2c") -> AsyncResult:
        """Count Daraja's ``Result`` body of a B2C, reversal, transaction status or
        account balance request (the ResultURL), once per ConversationID; outcomes by the
        API's column of the outcome table; payouts never revenue; balances set the float."""
        return self._state().async_results.record_result(payload, organization, api)

    def record_queue_timeout(self, organization: Any, api: str = "b2c", payload: Any = None) -> bool:
        """Count a request that timed out in Daraja's queue (the QueueTimeOutURL): not a failure."""
        return self._state().async_results.record_queue_timeout(organization, api, payload)

    # --- the seed's helpers -----------------------------------------------------
    def record_cache(self, name: str, hit: bool) -> None:
        """Count one lookup of the app's cache ``name``: a hit or a miss."""
        metrics.cache_requests_total.labels(tenancy.caches(name), "hit" if hit else "miss").inc()

    def encryption_check(
        self, encrypt: Callable[[bytes], Any] | None = None, *, decrypt: Callable[[Any], Any] | None = None,
        critical: bool = False, timeout: float | None = None,
    ) -> Any:
        """Register the ``encryption`` health check: the app's round trip on a random
        sample (``encrypt`` alone returns decrypt(encrypt(sample)); with ``decrypt`` the
        ciphertext must also differ from the sample). Usable as a decorator::

            @monitor.encryption_check
            def round_trip(sample: bytes) -> bytes:
                return fernet.decrypt(fernet.encrypt(sample))
        """
        if encrypt is None:
            return lambda func: self.encryption_check(func, decrypt=decrypt, critical=critical, timeout=timeout)
        check = EncryptionCheck(encrypt, decrypt)
        self.health_check("encryption", critical=critical, timeout=timeout)(check)
        return encrypt

    # --- security -----------------------------------------------------------------
    def record_auth_attempt(self, organization: Any, success: bool, ip: str | None = None) -> None:
        """Count a login attempt (failures per IP feed ``mpesa_suspicious_ips``)."""
        self._state().security.record_auth_attempt(organization, success, ip)

    def verify_tenant_isolation(self, user_org: Any, requested_org: Any) -> bool:
        """True when the caller's organization may access ``requested_org``; counts and alerts otherwise."""
        return self._state().security.verify_tenant_isolation(user_org, requested_org)

    def record_security_event(self, event_type: str, severity: str, organization: Any = None) -> None:
        """Count a security event (severity: low, medium, high, critical)."""
        self._state().security.record_security_event(event_type, severity, organization)

    def record_rate_limit_hit(self, organization: Any, limit: str) -> None:
        """Count a request refused by the app's rate limiter."""
        self._state().security.record_rate_limit_hit(organization, limit)

    def set_api_limit(self, organization: Any, per_minute: float) -> None:
        """Publish the tenant's plan limit (``mpesa_api_quota_limit``) for usage dashboards."""
        if isinstance(per_minute, bool) or not isinstance(per_minute, (int, float)) or per_minute < 0:
            raise ValueError(f"per_minute must be a non-negative number, got {per_minute!r}.")
        metrics.api_quota_limit.labels(tenancy.organizations(organization)).set(per_minute)

    # --- health -------------------------------------------------------------------
    def health_check(
        self, name: str | Callable[[], Any] | None = None, *, critical: bool = False, timeout: float | None = None
    ) -> Any:
        """Register an app health check, run with the built-in ones::

            @monitor.health_check("redis", critical=False, timeout=2.0)
            def redis_ok():
                return redis_client.ping()

        The function returns None/True (healthy), False (unhealthy), ``"degraded"``, or a
        dict with ``status`` and details; raising means unhealthy. ``timeout`` defaults
        to ``MPESA_MONITOR_HEALTH_TIMEOUT``; a ``critical`` check failing makes
        ``/health/detailed`` answer 503. Applies to every app of this monitor.
        """
        if callable(name):  # used bare: @monitor.health_check
            return self.health_check(None, critical=critical, timeout=timeout)(name)

        def register(func: F) -> F:
            check_name = name or func.__name__
            self._health_checks[check_name] = (func, critical, timeout)
            for state in list(self._states):
                self._apply_health_check(state, check_name)
            return func

        return register

    def _apply_health_check(self, state: MonitorState, name: str) -> None:
        func, critical, timeout = self._health_checks[name]
        state.health.add(HealthCheck(name, func, timeout or state.config.health_timeout, critical))

    def set_database(self, source: Any, timeout: float | None = None) -> None:
        """Health-check the database through the app's own access path.

        ``source``: a DSN (``postgresql://...``, ``sqlite:///path``), a SQLAlchemy
        engine, a psycopg2 pool (which also feeds ``mpesa_mcp_active_connections``) or a
        callable returning a DB-API connection. Replaces ``MPESA_MONITOR_DATABASE_URL``
        for the current app (or the last one initialised).
        """
        self._state().set_database(source, timeout)

    def register_collector(self, collector: Any) -> None:
        """Add a collector (an object with ``collect()`` yielding prometheus_client metric
        families) to this app's ``/metrics``, for values read at scrape time from a source
        every worker shares (the extension's own ``mpesa_stk_pending`` is one); written by
        every renderer, text and OpenMetrics, one process or gunicorn workers."""
        self._state().exporter.register(collector)

    def encryption_self_test(self, func: F) -> F:
        """Register the app's encryption self-test: False or an exception makes the
        ``security`` check unhealthy. Usable as a decorator."""
        self._encryption_self_test = func
        for state in list(self._states):
            self._apply_app_hooks(state)
        return func

    def audit_verifier(self, func: F) -> F:
        """Register the app's audit-log verifier, returning the number of tampered entries.

        The count is exported as ``mpesa_audit_tampered_entries``; above zero the
        ``security`` check is unhealthy and the critical ``AuditLogTampering`` alert is
        sent. Usable as a decorator.
        """
        self._audit_verifier = func
        for state in list(self._states):
            self._apply_app_hooks(state)
        return func

    def _apply_app_hooks(self, state: MonitorState) -> None:
        """Hand what the app registered on this monitor to one app's state."""
        state.security_check.encryption_self_test = self._encryption_self_test
        state.security_check.audit_verifier = self._audit_verifier
        state.summary_access.rule = self._summary_access

    def run_health_checks(self) -> HealthReport:
        """Run every check of the current app now and return the report (CLI, tests)."""
        return self._state().health.run_once()

    # --- summary ------------------------------------------------------------------
    def user_resolver(self, func: F) -> F:
        """Register the callable naming the current request's user (for ``active_users``).

        Called after each request (not for the monitoring endpoints); None means
        anonymous. Only a keyed hash of the id is stored::

            @monitor.user_resolver
            def current_user_id():
                return getattr(g, "user_id", None)
        """
        self._user_resolver = func
        return func

    def _record_user(self, organization: str) -> None:
        """After each counted request: feed ``active_users`` from the app's user resolver."""
        resolver = self._user_resolver
        if resolver is None:
            return
        try:
            user = resolver()
            if user is not None and user != "":
                self._state().summary.record_user(organization, user)
        except Exception:  # an app resolver failing must not fail the request
            log.exception("the user resolver failed")

    def summary_access(self, func: F) -> F:
        """Register who may read ``/metrics/summary``; replaces the ``/metrics`` guard.

        Called with the requested organization (or None for all) inside the request;
        returns True (allowed), False/None (403), or the caller's organization: then
        the caller sees only that one, and asking for another organization is answered
        403 and counted as a cross-tenant attempt (with its critical alert)::

            @monitor.summary_access
            def summary_access(organization):
                return True if g.user.is_admin else g.user.org_id
        """
        self._summary_access = func
        for state in list(self._states):
            self._apply_app_hooks(state)
        return func

    # --- alerts -------------------------------------------------------------------
    def send_alert(
        self,
        level: AlertLevel | str,
        title: str,
        message: str,
        details: dict[str, Any] | None = None,
        organization: Any = None,
        alertname: str | None = None,
    ) -> bool:
        """Raise an app-side alert through Alertmanager (``MPESA_MONITOR_ALERTMANAGER_URL``).

        Never blocks and never raises for delivery problems: the alert is queued and
        sent by a background thread with retries. ``alertname`` defaults to the
        CamelCase of ``title``; ``details`` are masked (no phone numbers or secrets).
        ``INFO`` is logged, not sent; without a URL every alert is logged at ERROR.
        Returns False only when the queue was full and the alert was dropped::

            monitor.send_alert(AlertLevel.HIGH, "Float low", "B2C float below 10,000 KES",
                               organization="acme")
        """
        result = self._state().alerts.send(level, title, message, details=details, organization=organization,
                                           alertname=alertname)
        return result.action != "dropped"
