"""Read the committed Grafana dashboards and give back their queries as plain PromQL.

Shared by tests/test_dashboards.py (offline: syntax and metric names) and the end-to-end
test (online: every panel returns data from a real Prometheus fed by the demo). Grafana
variables are substituted the way Grafana would for one concrete choice, so that what is
checked is what Prometheus will be asked.

Example::

    for q in dashboard_queries(organization="acme"):
        print(q.dashboard, q.panel, q.expr)
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD_DIR = ROOT / "deploy" / "grafana" / "dashboards"
RULES_DIR = ROOT / "deploy" / "prometheus" / "rules"


_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(.+?)\s*,\s*(\w+)\s*\)\s*$")


class Query(NamedTuple):
    """One target of one panel, its Grafana variables substituted."""

    dashboard: str  # the dashboard's uid
    panel: str      # the panel's title
    expr: str


def substitute(expr: str, organization: str = "demo", rate_interval: str = "1m",
               range_: str = "1h") -> str:
    """Replace Grafana variables in ``expr``; an unknown variable is an error (a typo)."""
    values = {"organization": organization, "__rate_interval": rate_interval,
              "__range": range_, "__interval": rate_interval}

    def replace(match: re.Match[str]) -> str:
        name = next(g for g in match.groups() if g)
        if name not in values:
            raise KeyError(f"unknown Grafana variable ${name} in {expr!r}")
        return values[name]

    return _VARIABLE.sub(replace, expr)


def load_dashboards(directory: Path = DASHBOARD_DIR) -> dict[Path, dict[str, Any]]:
    """Every dashboard JSON file of ``directory``, parsed, by path."""
    return {path: json.loads(path.read_text()) for path in sorted(directory.glob("*.json"))}


def iter_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Panels of a dashboard, including those nested in collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def dashboard_queries(organization: str = "demo", rate_interval: str = "1m",
                      range_: str = "1h", directory: Path = DASHBOARD_DIR) -> Iterator[Query]:
    """Every panel target of every dashboard as (dashboard uid, panel title, PromQL)."""
    for dashboard in load_dashboards(directory).values():
        for panel in iter_panels(dashboard):
            for target in panel.get("targets", []):
                if target.get("hide"):
                    continue
                yield Query(dashboard["uid"], panel["title"],
                            substitute(target["expr"], organization, rate_interval, range_))


def variable_queries(directory: Path = DASHBOARD_DIR) -> Iterator[Query]:
    """Each ``label_values(metric, label)`` variable as the PromQL that answers it."""
    for dashboard in load_dashboards(directory).values():
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
            yield Query(dashboard["uid"], f"${variable['name']}",
                        f"group by ({label}) ({substitute(selector)})")


# --- metric names in PromQL ----------------------------------------------------------
_KEYWORDS = frozenset({
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
    "unless", "offset", "bool", "inf", "nan", "atan2", "start", "end",
})
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w:.])([a-zA-Z_:][\w:]*)(\s*\()?")


def metric_names(expr: str) -> set[str]:
    """Names of the series an expression selects (functions, keywords, labels removed).

    A small lexer is enough for our dashboards: strings, label matchers, ranges and
    grouping clauses are dropped, then every identifier not called as a function is a
    metric name. ``{__name__="x"}`` selectors are refused (they would hide a name).
    """
    if "__name__" in expr:
        raise ValueError(f"selecting by __name__ hides the metric name: {expr!r}")
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = _GROUPING.sub(" ", text)
    names = set()
    for name, call in _IDENT.findall(text):
        if call or name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return names


def recording_rule_names(rules_dir: Path = RULES_DIR) -> frozenset[str]:
    """``record:`` names of deploy/prometheus/rules/*.yml."""
    import yaml

    names = set()
    for path in sorted(rules_dir.glob("*.yml")) + sorted(rules_dir.glob("*.yaml")):
        document = yaml.safe_load(path.read_text()) or {}
        for group in document.get("groups", []):
            for rule in group.get("rules", []):
                if "record" in rule:
                    names.add(rule["record"])
    return frozenset(names)


def catalogue_series() -> frozenset[str]:
    """Series names the extension exports: counters as NAME_total, histograms' parts."""
    from flask_mpesa_monitor.metrics import CATALOGUE

    names = set()
    for name, metric in CATALOGUE.items():
        if getattr(metric, "_type", "") == "histogram":
            names.update(f"{name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(name)
    return frozenset(names)


def known_series(rules_dir: Path = RULES_DIR) -> frozenset[str]:
    """Everything a dashboard may name: the catalogue, our recording rules and ``up``."""
    return catalogue_series() | recording_rule_names(rules_dir) | {"up"}
