"""The committed Grafana dashboards, read as plain PromQL: for the inbox's dashboards view
and for the tests that run every panel's query.

Why: Grafana cannot run in the local stack, yet a newcomer should be able to look at every
panel. Each panel becomes its title, description and the Prometheus graph page with the
panel's query filled in, Grafana's variables substituted the way Grafana would for one
concrete choice (``$__rate_interval``, ``$__range``, ``$organization``, ``$job``...). The
tests use the same substitution, so what they check is what the links show.

Example::

    for q in dashboard_queries(organization="acme"):
        print(q.dashboard, q.panel, q.expr)
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlencode

REPO = Path(__file__).resolve().parents[2]
DASHBOARD_DIR = REPO / "deploy" / "grafana" / "dashboards"

_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(.+?)\s*,\s*(\w+)\s*\)\s*$")
#: Variables that never reach PromQL (a datasource picker).
_NOT_IN_QUERIES = frozenset({"datasource", "DS_PROMETHEUS"})
#: ``$job`` unless told otherwise: the app's scrape job in deploy/prometheus/prometheus.yml
#: as committed (deploy/render.py's DEFAULT_JOB), which the local stack keeps.
DEFAULT_JOB = "mpesa-mcp"


class Query(NamedTuple):
    """One target of one panel, its Grafana variables substituted."""

    dashboard: str  # the dashboard's uid
    panel: str      # the panel's title
    expr: str


class Panel(NamedTuple):
    """What the dashboards view shows of one panel."""

    title: str
    description: str
    kind: str
    exprs: tuple[str, ...]


class Dashboard(NamedTuple):
    uid: str
    title: str
    description: str
    variables: tuple[str, ...]
    panels: tuple[Panel, ...]


def substitute(expr: str, organization: str = "demo", rate_interval: str = "1m",
               range_: str = "1h", interval: str | None = None, job: str = DEFAULT_JOB) -> str:
    """Replace Grafana variables in ``expr``; an unknown variable is an error (a typo).
    ``job`` is the app's scrape job (the ``$job`` variable of the overview)."""
    values = {"organization": organization, "__rate_interval": rate_interval,
              "__range": range_, "__interval": interval or rate_interval, "job": job}

    def replace(match: re.Match[str]) -> str:
        name = next(g for g in match.groups() if g)
        if name not in values:
            raise KeyError(f"unknown Grafana variable ${name} in {expr!r}")
        return values[name]

    return _VARIABLE.sub(replace, expr)


def load_dashboards(directory: Path = DASHBOARD_DIR) -> dict[Path, dict[str, Any]]:
    """Every dashboard JSON file of ``directory``, parsed, by path."""
    return {path: json.loads(path.read_text()) for path in sorted(directory.glob("*.json"))}


def iter_panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Panels of a dashboard, including those nested in collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def dashboard_queries(organization: str = "demo", rate_interval: str = "1m",
                      range_: str = "1h", directory: Path = DASHBOARD_DIR,
                      job: str = DEFAULT_JOB) -> Iterator[Query]:
    """Every panel target of every dashboard as (dashboard uid, panel title, PromQL)."""
    for dashboard in load_dashboards(directory).values():
        for panel in iter_panels(dashboard):
            for target in panel.get("targets", []):
                if target.get("hide") or "expr" not in target:
                    continue
                yield Query(dashboard["uid"], panel["title"],
                            substitute(target["expr"], organization, rate_interval, range_, job=job))


def query_variables(dashboard: Mapping[str, Any]) -> Iterator[tuple[str, str, str]]:
    """``(name, selector, label)`` of each ``label_values(selector, label)`` variable."""
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable["query"]
        text = query["query"] if isinstance(query, dict) else query
        match = _LABEL_VALUES.match(text)
        if not match:
            raise ValueError(f"{dashboard['uid']}: variable {variable['name']} is not "
                             f"label_values(metric, label): {text!r}")
        selector, label = match.groups()
        yield variable["name"], selector, label


def variable_queries(directory: Path = DASHBOARD_DIR) -> Iterator[Query]:
    """Each ``label_values(metric, label)`` variable as the PromQL that answers it."""
    for dashboard in load_dashboards(directory).values():
        for name, selector, label in query_variables(dashboard):
            yield Query(dashboard["uid"], f"${name}", f"group by ({label}) ({substitute(selector)})")


def dashboards(directory: Path = DASHBOARD_DIR) -> list[Dashboard]:
    """The committed dashboards, panel by panel, with their raw (unsubstituted) queries."""
    found = []
    for dashboard in load_dashboards(directory).values():
        panels = []
        for panel in iter_panels(dashboard):
            exprs = tuple(t["expr"] for t in panel.get("targets", []) if "expr" in t and not t.get("hide"))
            if not exprs and panel.get("type") == "row":
                continue
            panels.append(Panel(panel.get("title", ""), panel.get("description", ""), panel.get("type", ""), exprs))
        variables = tuple(name for name, _, _ in query_variables(dashboard))
        found.append(Dashboard(dashboard["uid"], dashboard.get("title", dashboard["uid"]),
                               dashboard.get("description", ""), variables, tuple(panels)))
    return found


def graph_url(prometheus_url: str, graph_path: str, expr: str, range_: str = "1h", table: bool = False) -> str:
    """The Prometheus graph page for ``expr``: ``graph_path`` is what this Prometheus
    serves (``/graph`` on 2.x with the new UI, ``/classic/graph`` on Debian's 2.42,
    ``/query`` on 3.x); the ``g0.*`` parameters are understood by all three."""
    params = {"g0.expr": expr, "g0.tab": "1" if table else "0", "g0.range_input": range_}
    return f"{prometheus_url.rstrip('/')}{graph_path}?{urlencode(params)}"


#: Graph pages to try, newest UI first; the first that answers 200 is the one to link.
GRAPH_PATHS = ("/query", "/graph", "/classic/graph")
#: Alerts pages, same order.
ALERTS_PATHS = ("/alerts", "/classic/alerts")
#: Targets pages, same order.
TARGETS_PATHS = ("/targets", "/classic/targets")
