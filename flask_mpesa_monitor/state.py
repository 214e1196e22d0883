"""The per-app state of the extension, and the one way to find it: :func:`get_state`.

As Flask-SQLAlchemy does, everything the extension keeps for an app lives in one public
object stored in ``app.extensions[EXTENSION_KEY]``: a :class:`MonitorState`, built by
``init_app`` from the app's validated settings. It only wires the parts together (the
exporter, the request hooks, the trackers, the health runner, the alert sender and the
summary); what each part does lives in its own module, and what the app registers on
:class:`~flask_mpesa_monitor.MPesaMonitor` (resolvers, checks, rules) is handed in by
the monitor. The views, the CLI and tests read it through :func:`get_state`::

    from flask_mpesa_monitor.state import get_state

    with app.app_context():
        report = get_state().health.run_once()
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flask import Flask, current_app, has_app_context

from .alerts import AlertSender
from .auth import Credentials
from .b2c import AsyncResultTracker
from .c2b import C2BTracker
from .collectors import StkPendingCollector
from .config import MonitorConfig
from .exposition import MetricsExporter
from .health import DatabaseCheck, HealthCheck, HealthRunner, MPesaAPICheck, SecurityCheck, SystemCheck
from .request_hooks import RequestMetrics
from .security import CallbackSource, SecurityTracker
from .stk_store import default_store
from .summary import PrometheusSummary, SummaryAccess, SummaryWindow, default_store_path
from .transactions import TransactionTracker

if TYPE_CHECKING:
    from .extension import MPesaMonitor

#: The key of the extension in ``app.extensions``.
EXTENSION_KEY = "mpesa_monitor"


class MonitorState:
    """Everything the extension keeps for one app (``app.extensions["mpesa_monitor"]``).

    :param monitor: the extension object that initialised the app.
    :param config: the app's validated settings.
    :param resolve_organization: the app's organization resolver (None: no answer).
    :param record_user: called after each counted request with its organization.
    """

    def __init__(
        self,
        monitor: MPesaMonitor,
        config: MonitorConfig,
        resolve_organization: Callable[[], Any],
        record_user: Callable[[str], None],
    ) -> None:
        self.monitor = monitor
        self.config = config
        self.health = HealthRunner(config.health_interval, config.health_background)
        self.alerts = AlertSender(
            config.alertmanager_url,
            queue_size=config.alert_queue_size,
            timeout=config.alert_timeout,
            dashboard_url=config.dashboard_url,
            runbook_url=config.runbook_url,
        )
        self.security = SecurityTracker(
            config.auth_failure_threshold, config.auth_failure_window, send_alert=self.alerts.send,
            callback_source=CallbackSource(config.callback_allowed_ips, config.callback_trusted_proxies))

        # /metrics, /metrics/summary, /health/detailed
        self.exporter = MetricsExporter()
        self.metrics_auth = Credentials(config.metrics_token, config.metrics_basic_auth)
        self.health_auth = Credentials(config.health_token)
        self.summary = SummaryWindow(default_store_path(config.summary_db))
        self.summary_source: SummaryWindow | PrometheusSummary = (
            PrometheusSummary(config.prometheus_url, self.summary) if config.prometheus_url else self.summary
        )
        self.summary_access = SummaryAccess(self.metrics_auth, self.security.verify_tenant_isolation)

        # the request path and the payment flows
        self.request_metrics = RequestMetrics(
            config.excluded_paths, config.organization_header, resolve_organization,
            on_request=self.health.ensure_started, on_recorded=record_user,
        )
        self.transactions = TransactionTracker(
            config.stk_callback_timeout,
            config.max_pending_stk,
            on_transaction=self.summary.record_transaction,
            on_invalid_callback=lambda org: self.security.record_security_event(
                "invalid_callback", "medium", org or None),
            store=default_store(config.max_pending_stk, url=config.stk_store_url),
            matching=config.stk_matching,
            grace=config.stk_callback_grace,
            max_amount=config.max_transaction_amount,
            max_body_bytes=config.max_callback_bytes,
            on_security_event=self.security.record_security_event,
        )
        self.exporter.register(StkPendingCollector(self.transactions))

        self.c2b = C2BTracker(self.transactions)
        self.async_results = AsyncResultTracker(self.transactions)

        # health checks
        self.health.add_tick_hook(self.transactions.expire)
        self.database_check: DatabaseCheck | None = None
        self.security_check = SecurityCheck(self.security, config.security_window, send_alert=self.alerts.send)
        self.health.add(HealthCheck("security", self.security_check, config.health_timeout))
        self.health.add(HealthCheck(
            "system",
            SystemCheck(config.cpu_warning, config.memory_warning, config.disk_warning, config.disk_path,
                        multiproc_warning=config.multiproc_disk_warning),
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

    def set_database(self, source: Any, timeout: float | None = None) -> None:
        """(Re)place the critical ``database`` check (see ``MPesaMonitor.set_database``)."""
        timeout = timeout or self.config.health_timeout
        self.database_check = DatabaseCheck(source, timeout)
        self.health.add(HealthCheck("database", self.database_check, timeout, critical=True,
                                    component_type="datastore"))


def get_state(app: Flask | None = None) -> MonitorState:
    """The :class:`MonitorState` of ``app`` (default: the current app).

    Raises ``RuntimeError`` with what to do for an app the extension never initialised,
    or when called outside an application context without an ``app``.
    """
    if app is None:
        if not has_app_context():
            raise RuntimeError(
                "flask-mpesa-monitor: no app given and no application context; pass the app "
                "or call this inside 'with app.app_context():'."
            )
        app = current_app
    state: MonitorState | None = app.extensions.get(EXTENSION_KEY)
    if state is None:
        raise RuntimeError(
            f"flask-mpesa-monitor was not initialised on this app ({app.name!r}); call "
            "MPesaMonitor(app) or monitor.init_app(app) in the app factory."
        )
    return state
