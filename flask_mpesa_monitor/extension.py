"""The Flask extension object: ``MPesaMonitor(app)`` or ``monitor.init_app(app)``.

Example::

    monitor = MPesaMonitor()

    def create_app():
        app = Flask(__name__)
        app.config["MPESA_MONITOR_METRICS_TOKEN"] = "..."
        monitor.init_app(app)
        return app

State lives in ``app.extensions["mpesa_monitor"]``; the metric objects themselves are
per process (see :mod:`flask_mpesa_monitor.metrics`), so an app created many times, or
several apps in one process, never collide. Methods such as
:meth:`MPesaMonitor.record_stk_callback` act on the current app's state, or, outside an
app context, on the app this monitor was last initialised with.
"""

from __future__ import annotations

import hmac
import weakref
from typing import Any, Callable, TypeVar

from flask import Flask, current_app, has_app_context

from . import metrics, tenancy
from ._version import __version__
from .alerts import AlertLevel, AlertSender, SendResult
from .config import DEFAULT_RUNBOOK_URL, MonitorConfig
from .exposition import MetricsExporter
from .health import (
    DatabaseCheck, HealthCheck, HealthReport, HealthRunner, MPesaAPICheck, SecurityCheck, SystemCheck,
)
from .redact import get_logger
from .request_hooks import RequestMetrics
from .security import SecurityTracker
from .summary import PrometheusSummary, SummaryWindow, default_store_path
from .tenant_store import default_admission_store
from .transactions import CallbackResult, TransactionTracker

EXTENSION_KEY = "mpesa_monitor"
F = TypeVar("F", bound=Callable[..., Any])

log = get_logger(__name__)


class _State:
    """Everything the extension keeps for one app."""

    def __init__(self, monitor: "MPesaMonitor", app: Flask, config: MonitorConfig) -> None:
        self.monitor = monitor
        self.config = config
        self.exporter = MetricsExporter(config.metrics_token, config.metrics_basic_auth)
        self.request_metrics = RequestMetrics(
            config.excluded_paths, config.organization_header, monitor._resolve_organization,
            on_request=self.start_background, on_recorded=self.record_user,
        )
        self.security = SecurityTracker(
            config.auth_failure_threshold,
            config.auth_failure_window,
            on_cross_tenant=self.on_cross_tenant,
        )
        self.alerts = AlertSender(
            config.alertmanager_url,
            queue_size=config.alert_queue_size,
            timeout=config.alert_timeout,
            dashboard_url=config.dashboard_url,
            runbook_url=config.runbook_url or DEFAULT_RUNBOOK_URL,
        )
        self.summary = SummaryWindow(default_store_path(config.summary_db))
        self.summary_source: SummaryWindow | PrometheusSummary = (
            PrometheusSummary(config.prometheus_url, self.summary) if config.prometheus_url else self.summary
        )
        self.transactions = TransactionTracker(
            config.stk_callback_timeout,
            config.max_pending_stk,
            on_transaction=self.summary.record_transaction,
            on_invalid_callback=lambda org: self.security.record_security_event(
                "invalid_callback", "medium", org or None),
        )
        self._health_token = config.health_token.encode() if config.health_token else None
        self.health = HealthRunner(config.health_interval, config.health_background)
        self.health.add_tick_hook(self.transactions.expire)
        self.database_check: DatabaseCheck | None = None
        self.security_check = SecurityCheck(self.security, config.security_window, send_alert=self.send_alert)
        self.health.add(HealthCheck("security", self.security_check, config.health_timeout))
        self.health.add(HealthCheck(
            "system",
            SystemCheck(config.cpu_warning, config.memory_warning, config.disk_warning, config.disk_path),
            config.health_timeout, component_type="system"))
        if config.database_url:
            self.set_database(config.database_url)
        if config.daraja_base_url:
            self.health.add(HealthCheck(
                "mpesa_api",
                MPesaAPICheck(config.daraja_base_url, config.daraja_consumer_key,
                              config.daraja_consumer_secret, config.daraja_latency_threshold,
                              config.health_timeout),
                config.health_timeout))

    # --- health -------------------------------------------------------------------
    def set_database(self, source: Any, timeout: float | None = None) -> None:
        timeout = timeout or self.config.health_timeout
        self.database_check = DatabaseCheck(source, timeout)
        self.health.add(HealthCheck("database", self.database_check, timeout, critical=True,
                                    component_type="datastore"))

    def health_authorized(self, authorization: str | None) -> bool:
        """True for ``Authorization: Bearer <MPESA_MONITOR_HEALTH_TOKEN>`` (constant time)."""
        if self._health_token is None or not authorization:
            return False
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(credentials.strip().encode(), self._health_token)

    def start_background(self) -> None:
        """At every request: start this worker's health thread on its first one (after fork)."""
        self.health.ensure_started()

    # --- summary ------------------------------------------------------------------
    def record_user(self, organization: str) -> None:
        """After each counted request: feed ``active_users`` from the app's user resolver."""
        resolver = self.monitor._user_resolver
        if resolver is None:
            return
        try:
            user = resolver()
            if user is not None and user != "":
                self.summary.record_user(organization, user)
        except Exception:  # an app resolver failing must not fail the request
            log.exception("the user resolver failed")

    def summary_scope(self, organization: str | None, authorization: str | None) -> tuple[int | None, str | None]:
        """Who may see which summary: ``(error status or None, organization to show)``.

        Without an app rule, the ``/metrics`` credentials decide. With one, valid
        ``/metrics`` credentials (when set) still see everything; otherwise the rule
        answers True (anything), False/None (nothing) or the caller's organization (that
        one only; asking for another is a cross-tenant attempt).
        """
        rule = self.monitor._summary_access
        if rule is None:
            return (None, organization) if self.exporter.authorized(authorization) else (401, None)
        if self.exporter.protected and self.exporter.authorized(authorization):
            return None, organization
        answer = rule(organization)
        if answer is True:
            return None, organization
        if answer is None or answer is False:
            return 403, None
        caller = str(answer)
        if organization is None:
            return None, caller
        if not self.security.verify_tenant_isolation(caller, organization):
            return 403, None
        return None, organization

    # --- alerts -------------------------------------------------------------------
    def send_alert(self, level: AlertLevel | str, title: str, message: str, **kwargs: Any) -> SendResult:
        return self.alerts.send(level, title, message, **kwargs)

    def on_cross_tenant(self, caller: str, target: str) -> None:
        """The critical app-side CrossTenantAccessAttempt alert (labelled with the caller)."""
        self.alerts.send(
            AlertLevel.CRITICAL,
            "Cross-tenant access attempt",
            f"Organization {caller} tried to reach data of organization {target}.",
            organization=caller,
            alertname="CrossTenantAccessAttempt",
            annotations={"target_organization": target},
            dashboard="mpesa-security",
        )


class MPesaMonitor:
    """Monitoring for a multi-tenant M-Pesa Flask app.

    :param app: the app to initialise now (or call :meth:`init_app` later).
    :param organization_resolver: a callable returning the current request's organization
        (same as decorating it with :meth:`organization_resolver`).
    """

    def __init__(self, app: Flask | None = None, *, organization_resolver: Callable[[], Any] | None = None) -> None:
        self._organization_resolver = organization_resolver
        self._user_resolver: Callable[[], Any] | None = None
        self._summary_access: Callable[[str | None], Any] | None = None
        self._health_checks: dict[str, tuple[Callable[[], Any], bool, float | None]] = {}
        self._encryption_self_test: Callable[[], Any] | None = None
        self._audit_verifier: Callable[[], Any] | None = None
        self._states: weakref.WeakSet[_State] = weakref.WeakSet()
        self._last_state: _State | None = None
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
        tenancy.organizations.configure(config.max_organizations, default_admission_store(),
                                        config.known_organizations)
        metrics.build_info.labels(__version__).set(1)
        state = _State(self, app, config)
        app.extensions[EXTENSION_KEY] = state
        state.request_metrics.register(app)
        from .cli import monitor as monitor_commands
        from .views import bp

        app.register_blueprint(bp)
        app.cli.add_command(monitor_commands)
        self._states.add(state)
        self._last_state = state
        for name in self._health_checks:
            self._apply_health_check(state, name)
        self._apply_security_hooks(state)

    # --- state lookup -------------------------------------------------------------
    def _state(self) -> _State:
        if has_app_context():
            state = current_app.extensions.get(EXTENSION_KEY)
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
        """Count a Daraja STK callback (``Body.stkCallback``); see ``TransactionTracker``."""
        return self._state().transactions.record_stk_callback(payload, organization, initiated_at)

    def record_transaction(
        self,
        organization: Any,
        type: str,
        outcome: str | None = None,
        result_code: Any = None,
        amount: float = 0,
        currency: str = "KES",
    ) -> str:
        """Count a transaction of another flow (c2b, b2c, reversal, ...)."""
        return self._state().transactions.record_transaction(
            organization, type, outcome, result_code, amount, currency)

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

    def _apply_health_check(self, state: _State, name: str) -> None:
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

    def encryption_self_test(self, func: F) -> F:
        """Register the app's encryption self-test: False or an exception makes the
        ``security`` check unhealthy. Usable as a decorator."""
        self._encryption_self_test = func
        for state in list(self._states):
            self._apply_security_hooks(state)
        return func

    def audit_verifier(self, func: F) -> F:
        """Register the app's audit-log verifier, returning the number of tampered entries.

        The count is exported as ``mpesa_audit_tampered_entries``; above zero the
        ``security`` check is unhealthy and the critical ``AuditLogTampering`` alert is
        sent. Usable as a decorator.
        """
        self._audit_verifier = func
        for state in list(self._states):
            self._apply_security_hooks(state)
        return func

    def _apply_security_hooks(self, state: _State) -> None:
        state.security_check.encryption_self_test = self._encryption_self_test
        state.security_check.audit_verifier = self._audit_verifier

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
        result = self._state().send_alert(level, title, message, details=details, organization=organization,
                                          alertname=alertname)
        return result.action != "dropped"
