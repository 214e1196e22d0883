"""The metric catalogue: every metric this package exports, in one place.

Read it top to bottom: each metric is declared once, with its name, help, labels,
buckets and, for gauges, how worker processes combine under gunicorn
(``multiprocess_mode``), or that the value is read at scrape time from a source the
workers share. Each declaration adds a :class:`MetricSpec` to :data:`CATALOGUE` and builds
the prometheus_client object from it, so readers of the catalogue (the exporter, tests,
dashboard checks) read public fields, never prometheus_client's private attributes. The
names and label sets are the contract with the alert rules and dashboards in ``deploy/``
(see docs/DESIGN.md); change them only together.

The metrics live in prometheus_client's default registry, one per process, on purpose:
two Flask apps in one process (or one app created many times in tests) share these
objects instead of failing with "Duplicated timeseries". Every label value that can come
from a request passes through :mod:`flask_mpesa_monitor.tenancy` first, so the number of
series stays bounded.

Example::

    from flask_mpesa_monitor import metrics
    metrics.revenue_total.labels(organization="acme", currency="KES").inc(100)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, disable_created_metrics

registry = REGISTRY

# ``*_created`` series double the series count of every counter and histogram and no
# rule or dashboard reads them. Switched off for the process (prometheus_client has no
# per-metric switch); documented in the README.
disable_created_metrics()

MetricType = Literal["counter", "gauge", "histogram"]
#: How prometheus_client combines a gauge over the worker processes of a host.
MultiprocessMode = Literal["all", "liveall", "min", "livemin", "max", "livemax", "sum", "livesum",
                           "mostrecent", "livemostrecent"]


@dataclass(frozen=True)
class MetricSpec:
    """One row of the catalogue: what a metric is declared with, in public fields.

    ``name`` is the name PromQL uses (counters end in ``_total``). A gauge has either a
    ``multiprocess_mode`` (its value is kept per process) or ``scrape_time`` set: then
    no process keeps it; a collector registered with the exporter (see
    :mod:`flask_mpesa_monitor.collectors`) produces its samples at each scrape from a
    source every worker shares, so it stays exact when workers die (no per-worker
    increments to lose or to leave behind).
    """

    name: str
    type: MetricType
    documentation: str
    labelnames: tuple[str, ...] = ()
    buckets: tuple[float, ...] | None = None
    multiprocess_mode: MultiprocessMode | None = None
    scrape_time: bool = False


#: Every metric of the catalogue by the name PromQL uses, in the order declared below.
#: Used by the exporter, tests and dashboard checks.
CATALOGUE: dict[str, MetricSpec] = {}
_CLIENT_METRICS: list[Counter | Gauge | Histogram] = []


def _declare(spec: MetricSpec) -> MetricSpec:
    if spec.name in CATALOGUE:
        raise ValueError(f"{spec.name} is declared twice in the metric catalogue; give the second one its own name.")
    CATALOGUE[spec.name] = spec
    return spec


def _counter(name: str, documentation: str, labelnames: Sequence[str] = ()) -> Counter:
    if not name.endswith("_total"):
        raise ValueError(f"counter {name} must end in _total, as PromQL names it.")
    spec = _declare(MetricSpec(name, "counter", documentation, tuple(labelnames)))
    metric = Counter(spec.name, spec.documentation, spec.labelnames)
    _CLIENT_METRICS.append(metric)
    return metric


def _histogram(name: str, documentation: str, labelnames: Sequence[str], buckets: tuple[float, ...]) -> Histogram:
    spec = _declare(MetricSpec(name, "histogram", documentation, tuple(labelnames), buckets=buckets))
    metric = Histogram(spec.name, spec.documentation, spec.labelnames, buckets=buckets)
    _CLIENT_METRICS.append(metric)
    return metric


def _gauge(name: str, documentation: str, labelnames: Sequence[str] = (), *,
           multiprocess_mode: MultiprocessMode) -> Gauge:
    spec = _declare(MetricSpec(name, "gauge", documentation, tuple(labelnames), multiprocess_mode=multiprocess_mode))
    metric = Gauge(spec.name, spec.documentation, spec.labelnames, multiprocess_mode=multiprocess_mode)
    _CLIENT_METRICS.append(metric)
    return metric


def _scrape_time_gauge(name: str, documentation: str, labelnames: Sequence[str] = ()) -> MetricSpec:
    """A gauge no process keeps: its spec is what its collector needs (name, help, labels)."""
    return _declare(MetricSpec(name, "gauge", documentation, tuple(labelnames), scrape_time=True))


# Buckets. Few on purpose: scrape cost grows with buckets x series. The request and
# Daraja buckets have boundaries at 1 s and 5 s because alerts ask for p95 above them.
REQUEST_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
API_BUCKETS = REQUEST_BUCKETS
CALLBACK_DELAY_BUCKETS = (1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
DB_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

OUTCOMES = (
    "success",
    "customer_cancelled",
    "customer_error",
    "timeout",
    "provider_error",
    "system_error",
    "pending",
)

# --- HTTP requests -------------------------------------------------------------------
requests_total = _counter(
    "mpesa_mcp_requests_total",
    "HTTP requests served, by URL rule and organization.",
    ["method", "endpoint", "status", "organization"],
)
request_duration_seconds = _histogram(
    "mpesa_mcp_request_duration_seconds",
    "HTTP request latency, by URL rule and organization.",
    ["method", "endpoint", "organization"],
    buckets=REQUEST_BUCKETS,
)
requests_in_progress = _gauge(
    "mpesa_mcp_requests_in_progress",
    "HTTP requests being served right now.",
    multiprocess_mode="livesum",
)
active_connections = _gauge(
    "mpesa_mcp_active_connections",
    "Database pool connections, by state (in_use, idle).",
    ["state"],
    multiprocess_mode="livesum",
)

# --- Daraja (M-Pesa API) calls -------------------------------------------------------
api_calls_total = _counter(
    "mpesa_api_calls_total",
    "Daraja API calls, by operation, organization and outcome class.",
    ["operation", "organization", "outcome"],
)
api_duration_seconds = _histogram(
    "mpesa_api_duration_seconds",
    "Daraja API call latency.",
    ["operation", "organization"],
    buckets=API_BUCKETS,
)
token_refreshes_total = _counter(
    "mpesa_token_refreshes_total",
    "Daraja OAuth token refreshes, by result (success, failure).",
    ["organization", "status"],
)
token_expiry_timestamp_seconds = _gauge(
    "mpesa_token_expiry_timestamp_seconds",
    "Unix time at which the organization's current Daraja token expires.",
    ["organization"],
    multiprocess_mode="livemax",
)
api_quota_limit = _gauge(
    "mpesa_api_quota_limit",
    "The organization's plan limit, in requests per minute.",
    ["organization"],
    multiprocess_mode="livemax",
)

# --- Transactions and STK push -------------------------------------------------------
transactions_total = _counter(
    "mpesa_transactions_total",
    "Completed (or pending) M-Pesa transactions, by type and outcome class.",
    ["organization", "type", "outcome"],
)
revenue_total = _counter(
    "mpesa_revenue_total",
    "Money collected through successful stk_push and c2b transactions.",
    ["organization", "currency"],
)
stk_pushes_total = _counter(
    "mpesa_stk_pushes_total",
    "STK push requests accepted by Daraja.",
    ["organization"],
)
stk_callback_delay_seconds = _histogram(
    "mpesa_stk_callback_delay_seconds",
    "Seconds from an STK push to its callback.",
    ["organization"],
    buckets=CALLBACK_DELAY_BUCKETS,
)
stk_pending = _scrape_time_gauge(
    "mpesa_stk_pending",
    "STK pushes waiting for their callback, read from the shared STK table at scrape time.",
    ("organization",),
)
stk_callbacks_missing_total = _counter(
    "mpesa_stk_callbacks_missing_total",
    "STK pushes whose callback did not arrive within the callback timeout.",
    ["organization"],
)
rate_limit_hits_total = _counter(
    "mpesa_rate_limit_hits_total",
    "Requests refused by the app's rate limiter, by limit name.",
    ["organization", "limit"],
)

# --- Security ------------------------------------------------------------------------
auth_attempts_total = _counter(
    "mpesa_auth_attempts_total",
    "Authentication attempts, by result (success, failure).",
    ["organization", "result"],
)
cross_tenant_attempts_total = _counter(
    "mpesa_cross_tenant_attempts_total",
    "Attempts to reach another organization's data (labelled with the caller's).",
    ["organization"],
)
security_events_total = _counter(
    "mpesa_security_events_total",
    "Security events, by type and severity.",
    ["event_type", "severity", "organization"],
)
suspicious_ips = _gauge(
    "mpesa_suspicious_ips",
    "Failed authentications in the last 15 minutes from IPs past the threshold.",
    ["ip"],
    multiprocess_mode="livemax",
)
audit_tampered_entries = _gauge(
    "mpesa_audit_tampered_entries",
    "Audit log entries that failed verification (set by the app's verifier).",
    multiprocess_mode="livemax",
)

# --- Database and MCP tools ----------------------------------------------------------
db_query_duration_seconds = _histogram(
    "mpesa_db_query_duration_seconds",
    "Database operation latency, by operation name.",
    ["operation"],
    buckets=DB_BUCKETS,
)
mcp_tool_calls_total = _counter(
    "mpesa_mcp_tool_calls_total",
    "MCP tool invocations, by tool, organization and outcome.",
    ["tool", "organization", "outcome"],
)
mcp_tool_duration_seconds = _histogram(
    "mpesa_mcp_tool_duration_seconds",
    "MCP tool latency.",
    ["tool"],
    buckets=REQUEST_BUCKETS,
)

# --- Health, alerts, self-monitoring -------------------------------------------------
health_check_status = _gauge(
    "mpesa_health_check_status",
    "Health check result: 1 healthy, 0.5 degraded, 0 unhealthy.",
    ["check"],
    multiprocess_mode="livemin",
)
health_check_duration_seconds = _gauge(
    "mpesa_health_check_duration_seconds",
    "Duration of the last run of each health check.",
    ["check"],
    multiprocess_mode="livemax",
)
alerts_sent_total = _counter(
    "mpesa_alerts_sent_total",
    "App-side alerts, by severity and result (sent, failed, dropped, logged).",
    ["severity", "result"],
)
label_overflow_total = _counter(
    "mpesa_label_overflow_total",
    "Label values replaced by 'unknown' (invalid) or 'other' (past the bound).",
    ["label"],
)
system_cpu_usage_ratio = _gauge(
    "mpesa_system_cpu_usage_ratio",
    "Host CPU usage, 0 to 1.",
    multiprocess_mode="livemax",
)
system_memory_usage_ratio = _gauge(
    "mpesa_system_memory_usage_ratio",
    "Host memory usage, 0 to 1.",
    multiprocess_mode="livemax",
)
system_disk_usage_ratio = _gauge(
    "mpesa_system_disk_usage_ratio",
    "Disk usage of the monitored path, 0 to 1.",
    multiprocess_mode="livemax",
)
build_info = _gauge(
    "mpesa_mcp_build_info",
    "Always 1; the version label says which flask-mpesa-monitor runs.",
    ["version"],
    multiprocess_mode="livemax",
)

# --- Callback trust ------------------------------------------------------------------
# Success callbacks that did not match a recorded push of the same organization, for at
# most the pushed amount (see transactions.py): kept apart from mpesa_revenue_total.
revenue_unverified_total = _counter(
    "mpesa_revenue_unverified_total",
    "Money claimed by STK callbacks not matched to a push (reason: unmatched, wrong_organization, "
    "amount_mismatch, no_checkout_id, store_unavailable); never in mpesa_revenue_total.",
    ["organization", "currency", "reason"],
)
stk_callbacks_late_total = _counter(
    "mpesa_stk_callbacks_late_total",
    "STK callbacks that matched a push already counted in mpesa_stk_callbacks_missing_total.",
    ["organization"],
)

# --- M-Pesa flows beyond STK push: C2B, B2C and the other async APIs ------------------
# C2B validation must answer within about 8 s or Safaricom applies the shortcode's
# registered default (accept or reject): the buckets have boundaries at 6 s and 8 s.
C2B_VALIDATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 6.0, 8.0, 10.0)

c2b_validation_duration_seconds = _histogram(
    "mpesa_c2b_validation_duration_seconds",
    "Seconds the app took to answer a C2B validation request (Safaricom waits about 8 s).",
    ["organization"],
    buckets=C2B_VALIDATION_BUCKETS,
)
c2b_validations_total = _counter(
    "mpesa_c2b_validations_total",
    "C2B validation answers, by shortcode, result (accepted, rejected, error) and reason class.",
    ["organization", "shortcode", "result", "reason"],
)
c2b_confirmations_total = _counter(
    "mpesa_c2b_confirmations_total",
    "C2B confirmations received, by shortcode (Daraja's retries of a TransID counted once).",
    ["organization", "shortcode"],
)
async_queue_timeouts_total = _counter(
    "mpesa_async_queue_timeouts_total",
    "Async requests (B2C, reversal, status, balance) that timed out in Daraja's queue: not failures.",
    ["organization", "api"],
)
payouts_total = _counter(
    "mpesa_payouts_total",
    "Money paid out through successful B2C results; never in mpesa_revenue_total.",
    ["organization", "currency"],
)
b2c_float_balance = _gauge(
    "mpesa_b2c_float_balance",
    "The organization's B2C float (utility account available funds), from its latest balance or B2C result.",
    ["organization", "currency"],
    multiprocess_mode="mostrecent",
)
stk_reconciled_total = _counter(
    "mpesa_stk_reconciled_total",
    "Missing STK callbacks the app's STK Query or Transaction Status answered (result: recovered, unresolved).",
    ["organization", "result"],
)

# --- The seed's helpers: mobile app versions, caches, Daraja environment -------------
mobile_app_requests_total = _counter(
    "mpesa_mobile_app_requests_total",
    "Requests from the mobile app, by its version (a metric of its own: request series do not multiply).",
    ["app_version"],
)
cache_requests_total = _counter(
    "mpesa_cache_requests_total",
    "Cache lookups of the app, by cache name and result (hit, miss).",
    ["cache", "result"],
)
daraja_environment_info = _gauge(
    "mpesa_daraja_environment_info",
    "Always 1; the daraja_environment label says which Daraja (sandbox, production) the app calls.",
    ["daraja_environment"],
    multiprocess_mode="livemax",
)

def client_metrics() -> list[Counter | Gauge | Histogram]:
    """The catalogue's prometheus_client metrics (kept per process), without scrape-time gauges."""
    return list(_CLIENT_METRICS)
