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

from typing import Any, Callable, TypeVar

from flask import Flask, current_app, has_app_context

from . import metrics, tenancy
from ._version import __version__
from .config import MonitorConfig
from .exposition import MetricsExporter
from .request_hooks import RequestMetrics
from .security import SecurityTracker
from .transactions import CallbackResult, TransactionTracker

EXTENSION_KEY = "mpesa_monitor"
F = TypeVar("F", bound=Callable[..., Any])


class _State:
    """Everything the extension keeps for one app."""

    def __init__(self, monitor: "MPesaMonitor", app: Flask, config: MonitorConfig) -> None:
        self.monitor = monitor
        self.config = config
        self.exporter = MetricsExporter(config.metrics_token, config.metrics_basic_auth)
        self.request_metrics = RequestMetrics(
            config.excluded_paths, config.organization_header, monitor._resolve_organization
        )
        self.security = SecurityTracker(
            config.auth_failure_threshold,
            config.auth_failure_window,
            on_cross_tenant=self.on_cross_tenant,
        )
        self.transactions = TransactionTracker(
            config.stk_callback_timeout,
            config.max_pending_stk,
            on_invalid_callback=lambda org: self.security.record_security_event(
                "invalid_callback", "medium", org or None),
        )

    def on_cross_tenant(self, caller: str, target: str) -> None:
        """Hook for the app-side CrossTenantAccessAttempt alert (see alerts.py)."""


class MPesaMonitor:
    """Monitoring for a multi-tenant M-Pesa Flask app.

    :param app: the app to initialise now (or call :meth:`init_app` later).
    :param organization_resolver: a callable returning the current request's organization
        (same as decorating it with :meth:`organization_resolver`).
    """

    def __init__(self, app: Flask | None = None, *, organization_resolver: Callable[[], Any] | None = None) -> None:
        self._organization_resolver = organization_resolver
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
        tenancy.organizations.set_limit(config.max_organizations)
        metrics.build_info.labels(__version__).set(1)
        state = _State(self, app, config)
        app.extensions[EXTENSION_KEY] = state
        state.request_metrics.register(app)
        from .views import bp

        app.register_blueprint(bp)
        self._last_state = state

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
