#!/usr/bin/env python3
"""Build the Grafana dashboards of deploy/grafana/dashboards/ from one readable source.

Why a script: four dashboards of hand-edited JSON drift apart (units, datasource
references, layout) and hide their PromQL in escaped strings. Here every panel is one
call with its query in plain text; the JSON is generated, committed, and a test
(tests/test_dashboards.py) fails when the committed files differ from this output.

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

OUT_DIR = Path(__file__).resolve().parent / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
TAGS = ["mpesa", "mpesa-mcp"]
SCHEMA_VERSION = 39
GRID_WIDTH = 24

# Shared PromQL pieces. Failures that page are provider_error and system_error only:
# a customer who cancels or types a wrong PIN is not a failure of ours (DESIGN.md).
NON_CUSTOMER_FAILURE = 'outcome=~"provider_error|system_error"'
ZERO = " or on() vector(0)"
ORG = 'organization="$organization"'


# --- small builders ------------------------------------------------------------------
def target(expr: str, legend: str = "", ref: str = "A", instant: bool = False,
           fmt: str = "time_series") -> dict[str, Any]:
    """One Prometheus query of a panel."""
    return {
        "datasource": DATASOURCE,
        "refId": ref,
        "expr": expr,
        "legendFormat": legend or "__auto",
        "instant": instant,
        "range": not instant,
        "format": fmt,
    }


def thresholds(*steps: tuple[str, float | None]) -> dict[str, Any]:
    """Absolute thresholds, first step's value None (the base colour)."""
    return {"mode": "absolute",
            "steps": [{"color": color, "value": value} for color, value in steps]}


GREEN = thresholds(("green", None))


def panel(kind: str, title: str, targets: list[dict[str, Any]], *, unit: str,
          description: str, w: int = 12, h: int = 8, steps: dict[str, Any] | None = None,
          options: dict[str, Any] | None = None, decimals: int | None = None,
          min_: float | None = None, max_: float | None = None) -> dict[str, Any]:
    """A panel without id or position (the dashboard builder lays them out)."""
    defaults: dict[str, Any] = {"unit": unit, "thresholds": steps or GREEN}
    if decimals is not None:
        defaults["decimals"] = decimals
    if min_ is not None:
        defaults["min"] = min_
    if max_ is not None:
        defaults["max"] = max_
    if kind == "timeseries":
        defaults["custom"] = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10,
                              "showPoints": "never", "spanNulls": False}
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": options or default_options(kind),
        "_size": (w, h),
    }


def default_options(kind: str) -> dict[str, Any]:
    """Sensible per-type options, so panels look alike across dashboards."""
    reduce = {"calcs": ["lastNotNull"], "fields": "", "values": False}
    if kind == "timeseries":
        return {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                "tooltip": {"mode": "multi", "sort": "desc"}}
    if kind == "stat":
        return {"reduceOptions": reduce, "colorMode": "value", "graphMode": "area",
                "justifyMode": "auto", "orientation": "auto", "textMode": "auto"}
    if kind == "bargauge":
        return {"reduceOptions": reduce, "displayMode": "gradient",
                "orientation": "horizontal", "showUnfilled": True}
    if kind == "table":
        return {"showHeader": True, "cellHeight": "sm",
                "footer": {"show": False, "reducer": ["sum"], "fields": ""}}
    raise ValueError(f"no default options for panel type {kind!r}")


def timeseries(title: str, *targets: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return panel("timeseries", title, list(targets), **kw)


def stat(title: str, expr: str, legend: str = "", **kw: Any) -> dict[str, Any]:
    return panel("stat", title, [target(expr, legend, instant=True)], w=kw.pop("w", 6),
                 h=kw.pop("h", 5), **kw)


def layout(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Give each panel an id and a gridPos, filling rows of 24 columns left to right."""
    x = y = row_h = 0
    out = []
    for number, p in enumerate(panels, start=1):
        w, h = p.pop("_size")
        if x + w > GRID_WIDTH:
            x, y, row_h = 0, y + row_h, 0
        out.append({"id": number, "gridPos": {"h": h, "w": w, "x": x, "y": y}, **p})
        x += w
        row_h = max(row_h, h)
    return out


def dashboard(uid: str, title: str, description: str, panels: list[dict[str, Any]],
              variables: list[dict[str, Any]] | None = None,
              time_from: str = "now-6h") -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": TAGS,
        "timezone": "browser",
        "editable": False,
        "graphTooltip": 1,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "refresh": "30s",
        "time": {"from": time_from, "to": "now"},
        "annotations": {"list": []},
        "links": [{"title": "M-Pesa dashboards", "type": "dashboards", "tags": ["mpesa"],
                   "asDropdown": True, "includeVars": False, "keepTime": True}],
        "templating": {"list": variables or []},
        "panels": layout(panels),
    }


def query_variable(name: str, label: str, query: str) -> dict[str, Any]:
    """A dashboard variable filled from Prometheus (refreshed when the time range changes)."""
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "definition": query,
        "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "refresh": 2,
        "sort": 1,
        "multi": False,
        "includeAll": False,
        "hide": 0,
        "regex": "",
        "current": {},
        "options": [],
    }


def p95(metric: str, by: str = "", selector: str = "") -> str:
    """p95 of a histogram over $__rate_interval, optionally per label."""
    group = f"le, {by}" if by else "le"
    matchers = f"{{{selector}}}" if selector else ""
    return (f"histogram_quantile(0.95, sum by ({group}) "
            f"(rate({metric}_bucket{matchers}[$__rate_interval])))")


# --- dashboards ----------------------------------------------------------------------
def overview() -> dict[str, Any]:
    requests = "mpesa_mcp_requests_total"
    panels = [
        stat("App targets up", 'sum(up{job="mpesa-mcp"})', unit="short",
             description="Scrape targets of job mpesa-mcp that answered the last scrape.",
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
                     "glance.", panels)


def organization() -> dict[str, Any]:
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
    ]
    variables = [query_variable("organization", "Organization",
                                "label_values(mpesa_transactions_total, organization)")]
    return dashboard("mpesa-organization", "M-Pesa MCP: Organization",
                     "One tenant: transactions, revenue, Daraja usage and rate limiting.",
                     panels, variables)


def security() -> dict[str, Any]:
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
        panel("table", "Suspicious IPs",
              [target("sort_desc(topk(20, max by (ip) (mpesa_suspicious_ips > 0)))"
                      ' or on() label_replace(vector(0), "ip", "(none)", "", "")',
                      instant=True, fmt="table")],
              unit="short", w=24, h=8,
              description="Top 20 IPs by failed authentications in the last 15 minutes "
                          "(per worker, highest). '(none)' when no IP is past the "
                          "threshold."),
    ]
    return dashboard("mpesa-security", "M-Pesa MCP: Security",
                     "Authentication, tenant isolation, security events and suspicious "
                     "IPs.", panels, time_from="now-24h")


def business() -> dict[str, Any]:
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
        panel("bargauge", "Revenue by organization",
              [target('sort_desc(sum by (organization) (increase(mpesa_revenue_total'
                      '{currency="KES"}[$__range])))', "{{organization}}", instant=True)],
              unit="currency:KES", w=12, h=10, decimals=0,
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
        panel("table", "Peak transactions per minute by organization",
              [target("sort_desc(max_over_time((sum by (organization) "
                      f"(rate({completed}[5m])) * 60)[$__range:1m]))",
                      instant=True, fmt="table")],
              unit="cpm", w=12, h=8,
              description="Highest 5-minute transaction rate of each tenant in the "
                          "picked range: capacity planning."),
        panel("table", "Churn indicators",
              [target(f"sort({week} / {week_before} < 0.5)"
                      ' or on() label_replace(vector(0), "organization", "(none)", "", "")',
                      instant=True, fmt="table")],
              unit="percentunit", w=12, h=8,
              description="Tenants whose last-7-day volume is below half of the 7 days "
                          "before; the value is that ratio. '(none)' when no tenant "
                          "qualifies."),
    ]
    return dashboard("mpesa-business", "M-Pesa MCP: Business",
                     "Revenue, volume, success rate, peak usage, quota use and churn "
                     "across organizations.", panels, time_from="now-24h")


DASHBOARDS = {"overview": overview, "organization": organization,
              "security": security, "business": business}


def build() -> dict[str, str]:
    """File name -> JSON text of every dashboard."""
    return {f"{name}.json": json.dumps(make(), indent=2) + "\n"
            for name, make in DASHBOARDS.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
