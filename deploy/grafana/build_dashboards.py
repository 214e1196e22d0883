#!/usr/bin/env python3
"""Build the Grafana dashboards of deploy/grafana/dashboards/ with grafana-foundation-sdk.

Why a script: four dashboards of hand-edited JSON drift apart (units, datasource
references, layout) and hide their PromQL in escaped strings. Here every panel is one
call with its query in plain text, built with Grafana's own typed builders
(``grafana-foundation-sdk``, the build that matches the Grafana pinned in
docker-compose.monitoring.yml, pinned exactly in setup.cfg), so the JSON model, its
field names and its schema version are Grafana's, not ours. The JSON is generated,
committed, and tests/test_dashboards.py fails when the committed files differ from this
output or do not load back through the SDK's models unchanged.

Every panel and query names its datasource through the ``$datasource`` variable (type
``prometheus``): no datasource uid is fixed, so the dashboards work against whatever
Prometheus datasource a Grafana has. Likewise no query names the app's scrape job: that
is a setting (MPESA_APP_JOB, rendered into prometheus.yml and the rules), so a query that
selects it says ``job="$job"``, a variable listing the jobs the app's own
``mpesa_mcp_build_info`` is scraped under. It starts at the rules' default job; when that
job is absent (MPESA_APP_JOB renamed), Grafana picks the first job offered, which is the
app's: only the app exports that metric.

Rules the queries follow (checked by the tests):
- only metrics of flask_mpesa_monitor/metrics.py, our recording rules and ``up``;
- ``$__rate_interval`` for rates, ``$__range`` for totals over the picked time range;
- a panel that is empty by nature in a healthy system (5xx, cross-tenant attempts,
  rate-limit hits...) ends in ``or on() vector(0)`` so that it shows 0, not "No data".

Usage::

    python3 deploy/grafana/build_dashboards.py          # (re)write the JSON files
    python3 deploy/grafana/build_dashboards.py --check  # exit 1 if they are stale
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

try:
    from grafana_foundation_sdk.builders import bargauge, prometheus, table
    from grafana_foundation_sdk.builders import common as common_builders
    from grafana_foundation_sdk.builders import dashboard as dash
    from grafana_foundation_sdk.builders import stat as stat_panel
    from grafana_foundation_sdk.builders import timeseries as timeseries_panel
    from grafana_foundation_sdk.cog import variants
    from grafana_foundation_sdk.cog.builder import Builder
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models import common
    from grafana_foundation_sdk.models import dashboard as model
    from grafana_foundation_sdk.models import prometheus as prometheus_model
except ImportError as exc:  # a deploy host without the test extra
    raise SystemExit(f"{exc}: install the exact build setup.cfg pins "
                     "(pip install -e '.[test]', grafana-foundation-sdk==1769699379!11.6.0)") from exc

OUT_DIR = Path(__file__).resolve().parent / "dashboards"
#: The datasource variable every panel and query uses: Grafana offers each datasource of
#: this plugin type, the default one first.
DATASOURCE_VARIABLE = "datasource"
DATASOURCE_TYPE = "prometheus"
DATASOURCE = model.DataSourceRef(type_val=DATASOURCE_TYPE, uid=f"${{{DATASOURCE_VARIABLE}}}")
TAGS = ["mpesa", "mpesa-mcp"]
#: The variable naming the app's scrape job, and where it starts: deploy/render.py's
#: DEFAULT_JOB (the job of the committed prometheus.yml; tests/test_dashboards.py checks).
JOB_VARIABLE = "job"
DEFAULT_JOB = "mpesa-mcp"
JOB = f'job="${JOB_VARIABLE}"'

# Shared PromQL pieces. Failures that page are provider_error and system_error only:
# a customer who cancels or types a wrong PIN is not a failure of ours (docs/DESIGN.md,
# "Daraja outcome table").
NON_CUSTOMER_FAILURE = 'outcome=~"provider_error|system_error"'
ZERO = " or on() vector(0)"
ORG = 'organization="$organization"'

#: The panel builders the dashboards use (each one's methods return its own type).
PanelBuilder = timeseries_panel.Panel | stat_panel.Panel | bargauge.Panel | table.Panel


# --- small helpers over the SDK's builders --------------------------------------------
def target(expr: str, legend: str = "", ref: str = "A", instant: bool = False,
           fmt: str = "time_series") -> prometheus.Dataquery:
    """One Prometheus query of a panel."""
    query = (prometheus.Dataquery().datasource(DATASOURCE).ref_id(ref).expr(expr)
             .legend_format(legend or "__auto")
             .format(prometheus_model.PromQueryFormat(fmt)))
    return query.instant() if instant else query.range()


def thresholds(*steps: tuple[str, float | None]) -> dash.ThresholdsConfig:
    """Absolute thresholds, first step's value None (the base colour)."""
    return (dash.ThresholdsConfig().mode(model.ThresholdsMode.ABSOLUTE)
            .steps([model.Threshold(value=value, color=color) for color, value in steps]))


def _reduce_last() -> common_builders.ReduceDataOptions:
    return common_builders.ReduceDataOptions().calcs(["lastNotNull"]).fields("").values(False)


def _new_panel(kind: str) -> PanelBuilder:
    """A panel builder of ``kind`` with the options every panel of that kind shares."""
    if kind == "timeseries":
        return (timeseries_panel.Panel()
                .legend(common_builders.VizLegendOptions()
                        .display_mode(common.LegendDisplayMode.LIST)
                        .placement(common.LegendPlacement.BOTTOM).show_legend(True))
                .tooltip(common_builders.VizTooltipOptions()
                         .mode(common.TooltipDisplayMode.MULTI)
                         .sort(common.SortOrder.DESCENDING))
                .draw_style(common.GraphDrawStyle.LINE).line_width(1).fill_opacity(10)
                .show_points(common.VisibilityMode.NEVER).span_nulls(False))
    if kind == "stat":
        return (stat_panel.Panel().reduce_options(_reduce_last())
                .color_mode(common.BigValueColorMode.VALUE)
                .graph_mode(common.BigValueGraphMode.AREA)
                .justify_mode(common.BigValueJustifyMode.AUTO)
                .orientation(common.VizOrientation.AUTO)
                .text_mode(common.BigValueTextMode.AUTO))
    if kind == "bargauge":
        return (bargauge.Panel().reduce_options(_reduce_last())
                .display_mode(common.BarGaugeDisplayMode.GRADIENT)
                .orientation(common.VizOrientation.HORIZONTAL).show_unfilled(True))
    if kind == "table":
        return (table.Panel().show_header(True).cell_height(common.TableCellHeight.SM)
                .align(common.FieldTextAlignment.AUTO).inspect(False)
                .footer(common_builders.TableFooterOptions().show(False).reducer(["sum"])
                        .fields([])))
    raise ValueError(f"no panel builder for type {kind!r}")


def panel(kind: str, title: str, targets: list[Builder[variants.Dataquery]], *, unit: str,
          description: str, w: int = 12, h: int = 8,
          steps: dash.ThresholdsConfig | None = None, decimals: int | None = None,
          min_: float | None = None, max_: float | None = None) -> PanelBuilder:
    """A panel without id or position (the dashboard builder lays them out)."""
    built = (_new_panel(kind).title(title).description(description).datasource(DATASOURCE)
             .targets(targets).unit(unit).thresholds(steps or thresholds(("green", None)))
             .span(w).height(h))
    if decimals is not None:
        built = built.decimals(decimals)
    if min_ is not None:
        built = built.min(min_)
    if max_ is not None:
        built = built.max(max_)
    return built


def timeseries(title: str, *targets: prometheus.Dataquery, **kw: Any) -> PanelBuilder:
    return panel("timeseries", title, [*targets], **kw)


def stat(title: str, expr: str, legend: str = "", **kw: Any) -> PanelBuilder:
    return panel("stat", title, [target(expr, legend, instant=True)], w=kw.pop("w", 6),
                 h=kw.pop("h", 5), **kw)


def bar_gauge(title: str, expr: str, legend: str = "", **kw: Any) -> PanelBuilder:
    """Bars of an instant query, one per series."""
    return panel("bargauge", title, [target(expr, legend, instant=True)], **kw)


def table_panel(title: str, expr: str, **kw: Any) -> PanelBuilder:
    """A table of an instant query, one row per series."""
    return panel("table", title, [target(expr, instant=True, fmt="table")], **kw)


def none_row(label: str) -> str:
    """Appended to a table's query: one row whose ``label`` is "(none)" when it is empty."""
    return f' or on() label_replace(vector(0), "{label}", "(none)", "", "")'


def datasource_variable() -> dash.DatasourceVariable:
    """``$datasource``: which Prometheus the panels ask (no uid fixed in the JSON)."""
    return (dash.DatasourceVariable(DATASOURCE_VARIABLE).label("Datasource")
            .type(DATASOURCE_TYPE).hide(model.VariableHide.DONT_HIDE))


def query_variable(name: str, label: str, query: str) -> dash.QueryVariable:
    """A dashboard variable filled from Prometheus (refreshed when the time range changes)."""
    return (dash.QueryVariable(name).label(label).datasource(DATASOURCE)
            .query({"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"})
            .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(model.VariableSort.ALPHABETICAL_ASC)
            .multi(False).include_all(False))


def job_variable() -> dash.QueryVariable:
    """``$job``: the scrape job(s) of the app, found from a metric only the app exports."""
    return (query_variable(JOB_VARIABLE, "App job", f"label_values(mpesa_mcp_build_info, {JOB_VARIABLE})")
            .current(model.VariableOption(selected=True, text=DEFAULT_JOB, value=DEFAULT_JOB)))


def dashboard(uid: str, title: str, description: str, panels: list[PanelBuilder],
              variables: list[Any] | None = None,
              time_from: str = "now-6h") -> model.Dashboard:
    """One dashboard: panels numbered and laid out left to right by the SDK."""
    built = (dash.Dashboard(title).uid(uid).description(description).tags(TAGS)
             .timezone("browser").readonly().tooltip(model.DashboardCursorSync.CROSSHAIR)
             .version(1).refresh("30s").time(time_from, "now")
             .link(dash.DashboardLink("M-Pesa dashboards")
                   .type(model.DashboardLinkType.DASHBOARDS).tags(["mpesa"])
                   .as_dropdown(True).include_vars(False).keep_time(True))
             .with_variable(datasource_variable()))
    for variable in variables or []:
        built = built.with_variable(variable)
    for number, item in enumerate(panels, start=1):
        built = built.with_panel(item.id(number))
    return built.build()


def p95(metric: str, by: str = "", selector: str = "") -> str:
    """p95 of a histogram over $__rate_interval, optionally per label."""
    group = f"le, {by}" if by else "le"
    matchers = f"{{{selector}}}" if selector else ""
    return (f"histogram_quantile(0.95, sum by ({group}) "
            f"(rate({metric}_bucket{matchers}[$__rate_interval])))")


# --- dashboards ----------------------------------------------------------------------
def overview() -> model.Dashboard:
    requests = "mpesa_mcp_requests_total"
    panels = [
        stat("App targets up", f"sum(up{{{JOB}}})" + ZERO, unit="short",
             description="Scrape targets of the app's job ($job) that answered the last "
                         "scrape; 0 when none did or none is known.",
             steps=thresholds(("red", None), ("green", 1))),
        stat("Health checks", "min by (check) (mpesa_health_check_status)", "{{check}}",
             unit="short",
             description="Worst result per health check across workers: "
                         "1 healthy, 0.5 degraded, 0 unhealthy.",
             steps=thresholds(("red", None), ("orange", 0.5), ("green", 1)),
             w=12, decimals=1),
        stat("Requests in progress", "sum(mpesa_mcp_requests_in_progress)", unit="short",
             description="HTTP requests being served right now, all workers."),
        timeseries("Request rate by status",
                   target(f"sum by (status) (rate({requests}[$__rate_interval]))",
                          "{{status}}"),
                   unit="reqps", description="HTTP requests per second by status code."),
        timeseries("5xx error ratio",
                   target(f'(sum(rate({requests}{{status=~"5.."}}[$__rate_interval]))'
                          f" or vector(0)) / sum(rate({requests}[$__rate_interval]))",
                          "5xx share"),
                   unit="percentunit", min_=0,
                   steps=thresholds(("green", None), ("red", 0.05)),
                   description="Share of requests answered with 5xx. HighErrorRate fires "
                               "above 5% over 5m."),
        timeseries("Request latency",
                   target("histogram_quantile(0.5, sum by (le) "
                          "(rate(mpesa_mcp_request_duration_seconds_bucket"
                          "[$__rate_interval])))", "p50"),
                   target(p95("mpesa_mcp_request_duration_seconds"), "p95", ref="B"),
                   target("histogram_quantile(0.99, sum by (le) "
                          "(rate(mpesa_mcp_request_duration_seconds_bucket"
                          "[$__rate_interval])))", "p99", ref="C"),
                   unit="s", description="Request latency quantiles, all endpoints."),
        timeseries("M-Pesa API calls by outcome",
                   target("sum by (outcome) (rate(mpesa_api_calls_total"
                          "[$__rate_interval]))", "{{outcome}}"),
                   unit="ops", description="Daraja calls per second by outcome class; "
                   "only provider_error and system_error count as our failures."),
        timeseries("M-Pesa API latency p95 by operation",
                   target(p95("mpesa_api_duration_seconds", by="operation"),
                          "{{operation}}"),
                   unit="s", description="p95 latency of Daraja calls per operation."),
        timeseries("Token refreshes",
                   target("sum by (status) (increase(mpesa_token_refreshes_total"
                          "[$__rate_interval]))" + ZERO, "{{status}}"),
                   unit="short", description="Daraja OAuth token refreshes by result; "
                   "3 failures for one organization in 15m page (TokenRefreshFailures)."),
        timeseries("Database query latency p95",
                   target(p95("mpesa_db_query_duration_seconds", by="operation"),
                          "{{operation}}"),
                   unit="s", description="p95 per database operation. "
                   "SlowDatabaseQueries fires above 1 s for 10m."),
        timeseries("Security events",
                   target("sum by (severity) (increase(mpesa_security_events_total"
                          "[$__rate_interval]))" + ZERO, "{{severity}}"),
                   target("sum(increase(mpesa_cross_tenant_attempts_total"
                          "[$__rate_interval]))" + ZERO, "cross-tenant", ref="B"),
                   unit="short", description="Security events by severity and "
                   "cross-tenant attempts; details on the security dashboard."),
    ]
    return dashboard("mpesa-overview", "M-Pesa MCP: Overview",
                     "Application health, requests, Daraja, database and security at a "
                     "glance.", panels, [job_variable()])


def organization() -> model.Dashboard:
    tx = f"mpesa_transactions_total{{{ORG}}}"
    panels = [
        stat("Transaction success rate (1h)",
             f'organization:mpesa_transactions:success_ratio_rate1h{{{ORG}}}',
             unit="percentunit", decimals=1,
             steps=thresholds(("red", None), ("orange", 0.9), ("green", 0.97)),
             description="Successes over completed transactions (pending excluded), "
                         "last hour, from the recording rule."),
        stat("Revenue (time range)",
             f"sum(increase(mpesa_revenue_total{{{ORG},currency=\"KES\"}}[$__range]))",
             unit="currency:KES", decimals=0,
             description="Money collected (successful stk_push and c2b) in the picked "
                         "time range."),
        stat("Completed transactions (time range)",
             f'sum(increase(mpesa_transactions_total{{{ORG},outcome!="pending"}}'
             "[$__range]))",
             unit="short", decimals=0,
             description="Completed transactions in the picked time range."),
        stat("STK pushes pending", f"sum(mpesa_stk_pending{{{ORG}}})" + ZERO,
             unit="short",
             description="STK pushes waiting for their callback, summed over workers."),
        timeseries("Transactions by outcome",
                   target(f"sum by (outcome) (rate({tx}[$__rate_interval]))",
                          "{{outcome}}"),
                   unit="ops", description="Transactions per second by outcome class."),
        timeseries("Transactions by type",
                   target(f"sum by (type) (rate({tx}[$__rate_interval]))", "{{type}}"),
                   unit="ops", description="Transactions per second by type."),
        timeseries("M-Pesa API usage by operation",
                   target("sum by (operation) (rate(mpesa_api_calls_total"
                          f"{{{ORG}}}[$__rate_interval]))", "{{operation}}"),
                   unit="ops", description="Daraja calls per second made for this "
                   "organization."),
        timeseries("M-Pesa API error ratio",
                   target(f"(sum(rate(mpesa_api_calls_total{{{ORG},{NON_CUSTOMER_FAILURE}}}"
                          "[$__rate_interval])) or vector(0)) / "
                          f"sum(rate(mpesa_api_calls_total{{{ORG}}}[$__rate_interval]))",
                          "error ratio"),
                   unit="percentunit", min_=0,
                   steps=thresholds(("green", None), ("red", 0.1)),
                   description="provider_error + system_error over all Daraja calls; "
                               "MPesaAPIFailures fires above 10%."),
        timeseries("HTTP request rate",
                   target(f"sum(rate(mpesa_mcp_requests_total{{{ORG}}}[$__rate_interval]))",
                          "requests/s"),
                   unit="reqps", description="HTTP requests per second for this "
                   "organization."),
        timeseries("Rate-limit hits",
                   target("sum by (limit) (increase(mpesa_rate_limit_hits_total"
                          f"{{{ORG}}}[$__rate_interval]))" + ZERO, "{{limit}}"),
                   unit="short", description="Requests refused by the app's rate "
                   "limiter, by limit; RateLimitWarnings fires above 10 in 5m."),
        timeseries("STK callback delay p95",
                   target(p95("mpesa_stk_callback_delay_seconds", selector=ORG), "p95"),
                   unit="s", description="Seconds from STK push to callback."),
        *organization_flows(),
    ]
    variables = [query_variable("organization", "Organization",
                                "label_values(mpesa_transactions_total, organization)")]
    return dashboard("mpesa-organization", "M-Pesa MCP: Organization",
                     "One tenant: transactions, revenue, Daraja usage and rate limiting.",
                     panels, variables)


def organization_flows() -> list[PanelBuilder]:
    """One tenant's C2B, B2C and reconciliation panels."""
    return [
        timeseries("C2B validation p95",
                   target(f"organization:mpesa_c2b_validation_duration_seconds:p95_5m{{{ORG}}}" + ZERO, "p95"),
                   unit="s", min_=0, steps=thresholds(("green", None), ("orange", 6), ("red", 8)),
                   description="Time the app took to answer C2B validation; Safaricom waits "
                               "about 8 s, C2BValidationSlow fires above 6 s."),
        timeseries("C2B validation answers",
                   target("sum by (result, reason) (rate(mpesa_c2b_validations_total"
                          f"{{{ORG}}}[$__rate_interval])) * 60" + ZERO, "{{result}} {{reason}}"),
                   unit="cpm", description="Validation answers per minute: accepted, "
                   "rejected by reason class, or error (the app's view raised)."),
        timeseries("C2B confirmations by shortcode",
                   target("sum by (shortcode) (rate(mpesa_c2b_confirmations_total"
                          f"{{{ORG}}}[$__rate_interval])) * 60" + ZERO, "{{shortcode}}"),
                   unit="cpm", description="C2B confirmations per minute, each TransID once; "
                   "C2BConfirmationsStopped compares the last hour with the same hour "
                   "yesterday and a week ago."),
        timeseries("B2C and async results by outcome",
                   target('sum by (type, outcome) (rate(mpesa_transactions_total'
                          f'{{{ORG},type=~"b2c|reversal|transaction_status|account_balance"}}'
                          "[$__rate_interval])) * 60" + ZERO, "{{type}} {{outcome}}"),
                   target("sum by (api) (rate(mpesa_async_queue_timeouts_total"
                          f"{{{ORG}}}[$__rate_interval])) * 60" + ZERO, "{{api}} queue timeout", ref="B"),
                   unit="cpm", description="Results per minute by API and outcome class; "
                   "queue timeouts apart (not failures)."),
        stat("B2C float", f"max(mpesa_b2c_float_balance{{{ORG}}})" + ZERO, unit="currency:KES", decimals=0,
             description="Utility account funds from the latest balance or B2C result; "
                         "B2CFloatLow fires below a day of payouts."),
        stat("B2C payouts (time range)",
             f"sum(increase(mpesa_payouts_total{{{ORG}}}[$__range]))" + ZERO,
             unit="currency:KES", decimals=0, description="Money paid out (never revenue)."),
        timeseries("Missing STK callbacks and their reconciliation",
                   target(f"sum(increase(mpesa_stk_callbacks_missing_total{{{ORG}}}[$__rate_interval]))"
                          + ZERO, "missing"),
                   target(f"sum(increase(mpesa_stk_callbacks_late_total{{{ORG}}}[$__rate_interval]))"
                          + ZERO, "late callback", ref="B"),
                   target("sum by (result) (increase(mpesa_stk_reconciled_total"
                          f"{{{ORG}}}[$__rate_interval]))" + ZERO, "query {{result}}", ref="C"),
                   unit="short", description="Pushes counted missing, then recovered by a "
                   "late callback or the app's STK Query; the rest stayed unknown."),
    ]


def business_flows() -> list[PanelBuilder]:
    """C2B and B2C volumes and floats across organizations."""
    return [
        timeseries("C2B confirmations by organization",
                   target("sum by (organization) (rate(mpesa_c2b_confirmations_total"
                          "[$__rate_interval])) * 60" + ZERO, "{{organization}}"),
                   unit="cpm", description="C2B confirmations per minute (each TransID once)."),
        timeseries("B2C payouts by organization",
                   target("sum by (organization) (rate(mpesa_payouts_total[$__rate_interval])) * 3600" + ZERO,
                          "{{organization}}"),
                   unit="currency:KES", description="Money paid out per hour through B2C "
                   "(never revenue)."),
        bar_gauge("B2C float by organization",
                  "sort(max by (organization) (mpesa_b2c_float_balance))" + ZERO, "{{organization}}",
                  unit="currency:KES", decimals=0,
                  description="Each tenant's B2C float (utility account), lowest first."),
        bar_gauge("Days of payouts the float covers",
                  "sort(max by (organization) (mpesa_b2c_float_balance) / on (organization) "
                  "sum by (organization) (increase(mpesa_payouts_total[1d])))" + ZERO, "{{organization}}",
                  unit="short", decimals=1,
                  steps=thresholds(("red", None), ("orange", 1), ("green", 3)),
                  description="Float over the last 24 hours of payouts; below 1, B2CFloatLow."),
    ]


def security() -> model.Dashboard:
    panels = [
        stat("Cross-tenant attempts (time range)",
             "sum(increase(mpesa_cross_tenant_attempts_total[$__range]))" + ZERO,
             unit="short", decimals=0, steps=thresholds(("green", None), ("red", 1)),
             description="Attempts to reach another organization's data; any one pages "
                         "(CrossTenantAccessAttempt)."),
        stat("Failed authentications (time range)",
             'sum(increase(mpesa_auth_attempts_total{result="failure"}[$__range]))' + ZERO,
             unit="short", decimals=0,
             steps=thresholds(("green", None), ("orange", 10)),
             description="Failed authentication attempts, all organizations."),
        stat("Audit log tampered entries", "max(mpesa_audit_tampered_entries)" + ZERO,
             unit="short", decimals=0, steps=thresholds(("green", None), ("red", 1)),
             description="Audit entries that failed verification (AuditLogTampering)."),
        stat("Label values replaced (time range)",
             "sum(increase(mpesa_label_overflow_total[$__range]))" + ZERO,
             unit="short", decimals=0,
             description="Label values replaced by unknown/other by the cardinality "
                         "guard: invalid or phone-shaped organization values land here."),
        timeseries("Failed authentication by organization",
                   target('sum by (organization) (increase(mpesa_auth_attempts_total'
                          '{result="failure"}[$__rate_interval]))' + ZERO,
                          "{{organization}}"),
                   unit="short", description="AuthenticationFailures fires above 10 "
                   "for one organization in 5m."),
        timeseries("Cross-tenant attempts by organization",
                   target("sum by (organization) (increase("
                          "mpesa_cross_tenant_attempts_total[$__rate_interval]))" + ZERO,
                          "{{organization}}"),
                   unit="short", description="Labelled with the caller's organization."),
        timeseries("Security event trends",
                   target("sum by (event_type, severity) (increase("
                          "mpesa_security_events_total[$__rate_interval]))" + ZERO,
                          "{{event_type}} ({{severity}})"),
                   unit="short", description="Security events by type and severity; "
                   "high and critical ones page (SecurityEvents)."),
        timeseries("App-side alerts sent",
                   target("sum by (severity, result) (increase(mpesa_alerts_sent_total"
                          "[$__rate_interval]))" + ZERO, "{{severity}} {{result}}"),
                   unit="short", description="Alerts the app pushed to Alertmanager "
                   "itself, by result."),
        table_panel("Suspicious IPs",
                    "sort_desc(topk(20, max by (ip) (mpesa_suspicious_ips > 0)))" + none_row("ip"),
                    unit="short", w=24,
                    description="Top 20 IPs by failed authentications in the last 15 minutes "
                                "(per worker, highest). '(none)' when no IP is past the "
                                "threshold."),
    ]
    return dashboard("mpesa-security", "M-Pesa MCP: Security",
                     "Authentication, tenant isolation, security events and suspicious "
                     "IPs.", panels, time_from="now-24h")


def business() -> model.Dashboard:
    completed = 'mpesa_transactions_total{outcome!="pending"}'
    week = f"sum by (organization) (increase({completed}[7d]))"
    week_before = f"sum by (organization) (increase({completed}[7d] offset 7d))"
    churned = f"{week} < 0.5 * {week_before}"
    panels = [
        stat("Total revenue (time range)",
             'sum(increase(mpesa_revenue_total{currency="KES"}[$__range]))',
             unit="currency:KES", decimals=0,
             description="Money collected by all organizations in the picked range."),
        stat("Success rate (time range)",
             f'sum(increase(mpesa_transactions_total{{outcome="success"}}[$__range])) / '
             f"sum(increase({completed}[$__range]))",
             unit="percentunit", decimals=1,
             steps=thresholds(("red", None), ("orange", 0.9), ("green", 0.97)),
             description="Successes over completed transactions, all organizations."),
        stat("Peak request rate (time range)",
             "max_over_time(:mpesa_mcp_requests:rate5m[$__range])", unit="reqps",
             description="Highest 5-minute request rate in the picked range."),
        stat("Tenants at churn risk", f"count({churned})" + ZERO, unit="short",
             decimals=0, steps=thresholds(("green", None), ("orange", 1)),
             description="Organizations whose completed transactions over the last 7 "
                         "days fell below half of the 7 days before."),
        bar_gauge("Revenue by organization",
                  'sort_desc(sum by (organization) (increase(mpesa_revenue_total'
                  '{currency="KES"}[$__range])))', "{{organization}}",
                  unit="currency:KES", h=10, decimals=0,
                  description="Money collected per organization in the picked time range."),
        timeseries("Transaction volume by organization",
                   target(f"sum by (organization) (rate({completed}[$__rate_interval]))"
                          " * 60", "{{organization}}"),
                   unit="cpm", h=10, description="Completed transactions per minute."),
        timeseries("Success rate by organization (1h)",
                   target("organization:mpesa_transactions:success_ratio_rate1h",
                          "{{organization}}"),
                   unit="percentunit", max_=1,
                   description="Successes over completed transactions, last hour."),
        timeseries("Usage against plan quota",
                   target("sum by (organization) (rate(mpesa_mcp_requests_total"
                          "[$__rate_interval])) * 60 / on (organization) "
                          "max by (organization) (mpesa_api_quota_limit)",
                          "{{organization}}"),
                   unit="percentunit", min_=0,
                   steps=thresholds(("green", None), ("orange", 0.8), ("red", 1)),
                   description="Requests per minute over each tenant's plan limit "
                               "(mpesa_api_quota_limit)."),
        table_panel("Peak transactions per minute by organization",
                    "sort_desc(max_over_time((sum by (organization) "
                    f"(rate({completed}[5m])) * 60)[$__range:1m]))",
                    unit="cpm",
                    description="Highest 5-minute transaction rate of each tenant in the "
                                "picked range: capacity planning."),
        table_panel("Churn indicators",
                    f"sort({week} / {week_before} < 0.5)" + none_row("organization"),
                    unit="percentunit",
                    description="Tenants whose last-7-day volume is below half of the 7 days "
                                "before; the value is that ratio. '(none)' when no tenant "
                                "qualifies."),
        *business_flows(),
    ]
    return dashboard("mpesa-business", "M-Pesa MCP: Business",
                     "Revenue, volume, success rate, peak usage, quota use and churn "
                     "across organizations.", panels, time_from="now-24h")


DASHBOARDS = {"overview": overview, "organization": organization,
              "security": security, "business": business}


def to_json(board: model.Dashboard) -> str:
    """The JSON text of one dashboard, as committed (the SDK's own encoder)."""
    return json.dumps(board, cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def build() -> dict[str, str]:
    """File name -> JSON text of every dashboard."""
    return {f"{name}.json": to_json(make()) for name, make in DASHBOARDS.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 when a committed file differs")
    args = parser.parse_args(argv)
    stale = []
    for name, text in build().items():
        path = OUT_DIR / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print("stale dashboards (run deploy/grafana/build_dashboards.py): "
              + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
