"""The inbox's pages beyond the notifications: the dashboards view, the runbooks and
Alertmanager's state.

Why: the local stack has no Grafana and Debian's Alertmanager has no web UI, so a
newcomer would otherwise see no dashboard and no silence at all. The dashboards view is
built from the committed dashboard JSON (deploy/grafana/dashboards): each panel's title,
description and a link to the real Prometheus graph page with the panel's query filled in.
The Alertmanager page lists the current alerts and silences from Alertmanager's API v2.
``/runbooks`` serves docs/runbooks.md with an anchor per section, so the ``runbook_url``
of the local stack's alerts (``<inbox>/runbooks#<alertname in lower case>``) opens in any
browser: a ``file://`` link to the checkout opens only on this machine, and only some
browsers follow it from a page served over HTTP. The HTML comes from deploy/render.py's
``markdown_html``, the converter that renders the compose stack's runbooks page too (a
console template its Prometheus serves), so both show the same sections and anchors.

Which graph page a Prometheus serves depends on its build (Debian's 2.42 has only the
classic UI under ``/classic/``; 3.x serves ``/query``): :class:`PrometheusPages` asks the
server once and remembers the answer.
"""

from __future__ import annotations

import html
import threading
from typing import Any

import requests
from flask import Blueprint, Response, current_app, request

from deploy.render import markdown_html
from examples.demo import dashboards as dashboard_files

_STYLE = """body{font-family:sans-serif;margin:1em;max-width:1200px}
table{border-collapse:collapse;width:100%;table-layout:fixed}
td,th{border:1px solid #ccc;padding:4px;vertical-align:top;font-size:13px;overflow-wrap:anywhere}
pre,code{white-space:pre-wrap;overflow-wrap:anywhere;margin:0}
nav a{margin-right:1em}.panel{border:1px solid #ddd;padding:.5em;margin:.5em 0}
.muted{color:#666}"""

NAV = ('<nav><a href="/">notifications</a><a href="/dashboards">dashboards</a>'
       '<a href="/runbooks">runbooks</a><a href="/alertmanager">alerts and silences</a></nav>')
#: The runbooks every alert links a section of.
RUNBOOKS = dashboard_files.REPO / "docs" / "runbooks.md"


def page(title: str, body: str, refresh: int | None = None) -> str:
    meta = f'<meta http-equiv="refresh" content="{refresh}">' if refresh else ""
    return (f'<!doctype html><html><head><meta charset="utf-8">{meta}<title>{html.escape(title)}</title>'
            f"<style>{_STYLE}</style></head><body>{NAV}<h1>{html.escape(title)}</h1>{body}</body></html>")


def first_page(base_url: str, paths: tuple[str, ...], timeout: float = 2.0) -> str | None:
    """The first of ``paths`` that answers 200 itself on ``base_url``, or None. Redirects
    do not count: Debian's 2.42 redirects ``/graph`` to a page that drops the query."""
    for path in paths:
        try:
            answer = requests.get(base_url.rstrip("/") + path, timeout=timeout, allow_redirects=False)
            if answer.status_code == 200:
                return path
        except requests.RequestException:
            continue
    return None


class PrometheusPages:
    """Which graph/alerts/targets pages one Prometheus serves; probed once, when reachable."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self._lock = threading.Lock()
        self._found: dict[str, str] = {}

    def path(self, kind: str) -> str:
        candidates = {"graph": dashboard_files.GRAPH_PATHS, "alerts": dashboard_files.ALERTS_PATHS,
                      "targets": dashboard_files.TARGETS_PATHS}[kind]
        with self._lock:
            if kind not in self._found:
                found = first_page(self.url, candidates)
                if found is None:
                    return candidates[-1]  # not reachable yet: guess, ask again next time
                self._found[kind] = found
            return self._found[kind]

    def graph_url(self, expr: str, range_: str = "1h", table: bool = False) -> str:
        return dashboard_files.graph_url(self.url, self.path("graph"), expr, range_, table)

    def organizations(self, selector: str, label: str) -> list[str]:
        """Values of ``label`` on ``selector`` now (the dashboard variable's choices)."""
        try:
            answer = requests.get(f"{self.url}/api/v1/query",
                                  params={"query": f"group by ({label}) ({selector})"}, timeout=3).json()
        except (requests.RequestException, ValueError):
            return []
        values = {s["metric"].get(label) for s in answer.get("data", {}).get("result", [])}
        return sorted(v for v in values if v)


blueprint = Blueprint("inbox_views", __name__)


def _settings() -> dict[str, Any]:
    return current_app.extensions["demo_inbox_views"]


@blueprint.get("/dashboards")
def dashboards_view() -> Response:
    settings = _settings()
    prometheus: PrometheusPages | None = settings["prometheus"]
    if prometheus is None:
        body = "<p>No Prometheus configured: start the inbox with <code>--prometheus-url</code>.</p>"
        return Response(page("dashboards", body), mimetype="text/html")
    boards = dashboard_files.dashboards()
    choices: list[str] = []
    for board in boards:
        for name, selector, label in dashboard_files.query_variables(_raw(board.uid)):
            if name == "organization":
                choices = prometheus.organizations(dashboard_files.substitute(selector), label) or choices
    choices = choices or list(settings["organizations"])
    organization = request.args.get("organization") or (choices[0] if choices else "demo")
    range_ = settings["range"]
    options = "".join(f'<option{" selected" if c == organization else ""}>{html.escape(c)}</option>' for c in choices)
    parts = [f'<form method="get">organization (<code>$organization</code>): <select name="organization" '
             f'onchange="this.form.submit()">{options}</select> <noscript><button>show</button></noscript></form>',
             f'<p class="muted">Grafana variables substituted: <code>$__rate_interval</code> = '
             f'{html.escape(settings["rate_interval"])}, <code>$__range</code> = {html.escape(range_)}, '
             f'<code>$job</code> = {html.escape(settings["job"])}. '
             f'Links open Prometheus at {html.escape(prometheus.url)}.</p>']
    for board in boards:
        parts.append(f'<h2 id="{html.escape(board.uid)}">{html.escape(board.title)}</h2>')
        for panel in board.panels:
            links = []
            for expr in panel.exprs:
                query = dashboard_files.substitute(expr, organization, settings["rate_interval"], range_,
                                                   job=settings["job"])
                links.append(
                    f'<li><a class="graph" href="{html.escape(prometheus.graph_url(query, range_))}">graph</a> '
                    f'<a class="table" href="{html.escape(prometheus.graph_url(query, range_, table=True))}">'
                    f"table</a> <code>{html.escape(query)}</code></li>")
            parts.append(f'<div class="panel"><h3>{html.escape(panel.title)}</h3>'
                         f'<p class="muted">{html.escape(panel.description)}</p><ul>{"".join(links)}</ul></div>')
    return Response(page("dashboards", "".join(parts)), mimetype="text/html")


@blueprint.get("/runbooks")
def runbooks_view() -> Response:
    """docs/runbooks.md, read at each request (an edited runbook shows at once)."""
    return Response(page("runbooks", markdown_html(RUNBOOKS.read_text(encoding="utf-8"))), mimetype="text/html")


def _raw(uid: str) -> dict[str, Any]:
    for dashboard in dashboard_files.load_dashboards().values():
        if dashboard.get("uid") == uid:
            return dashboard
    raise KeyError(uid)


@blueprint.get("/alertmanager")
def alertmanager_view() -> Response:
    url = _settings()["alertmanager_url"]
    if not url:
        body = "<p>No Alertmanager configured: start the inbox with <code>--alertmanager-url</code>.</p>"
        return Response(page("alerts and silences", body), mimetype="text/html")
    try:
        alerts = requests.get(f"{url}/api/v2/alerts", timeout=3).json()
        silences = requests.get(f"{url}/api/v2/silences", timeout=3).json()
    except (requests.RequestException, ValueError) as exc:
        body = f"<p>Alertmanager at {html.escape(url)} did not answer: {html.escape(type(exc).__name__)}</p>"
        return Response(page("alerts and silences", body, refresh=5), mimetype="text/html")
    rows = []
    for alert in sorted(alerts, key=lambda a: (a["labels"].get("alertname", ""), a.get("startsAt", ""))):
        labels = alert["labels"]
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in (
            labels.get("alertname", ""), labels.get("severity", ""), labels.get("organization", ""),
            alert.get("status", {}).get("state", ""), alert.get("startsAt", ""),
            alert.get("annotations", {}).get("summary", ""))) + "</tr>")
    alert_table = ("<table><tr><th>alert</th><th>severity</th><th>organization</th><th>state</th><th>since</th>"
                   "<th>summary</th></tr>" + ("".join(rows) or '<tr><td colspan="6">no alert</td></tr>') + "</table>")
    silence_rows = []
    for silence in silences:
        matchers = ", ".join(f'{m["name"]}{"=~" if m.get("isRegex") else "="}"{m["value"]}"'
                             for m in silence["matchers"])
        silence_rows.append("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in (
            silence["status"]["state"], matchers, silence.get("createdBy", ""), silence.get("comment", ""),
            silence.get("endsAt", ""))) + "</tr>")
    silence_table = ("<table><tr><th>state</th><th>matchers</th><th>by</th><th>comment</th><th>ends</th></tr>"
                     + ("".join(silence_rows) or '<tr><td colspan="5">no silence</td></tr>') + "</table>")
    amtool = (f'<p class="muted">With amtool: <code>amtool --alertmanager.url={html.escape(url)} alert query</code>, '
              f'<code>amtool --alertmanager.url={html.escape(url)} silence add alertname=X --comment=why '
              f"--duration=1h</code></p>")
    body = f"<h2>alerts ({len(alerts)})</h2>{alert_table}<h2>silences ({len(silences)})</h2>{silence_table}{amtool}"
    return Response(page("alerts and silences", body, refresh=5), mimetype="text/html")


def init_views(app: Any, *, prometheus_url: str | None = None, alertmanager_url: str | None = None,
               organizations: tuple[str, ...] = (), rate_interval: str = "1m", range_: str = "1h",
               job: str = dashboard_files.DEFAULT_JOB) -> None:
    """Register the dashboards and Alertmanager pages on the inbox app; ``job`` is the
    app's scrape job in the Prometheus the links open (the dashboards' ``$job``)."""
    app.extensions["demo_inbox_views"] = {
        "prometheus": PrometheusPages(prometheus_url) if prometheus_url else None,
        "alertmanager_url": alertmanager_url.rstrip("/") if alertmanager_url else None,
        "organizations": tuple(organizations), "rate_interval": rate_interval, "range": range_,
        "job": job,
    }
    app.register_blueprint(blueprint)
