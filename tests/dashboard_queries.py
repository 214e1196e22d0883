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

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD_DIR = ROOT / "deploy" / "grafana" / "dashboards"
RULES_DIR = ROOT / "deploy" / "prometheus" / "rules"


# The dashboards read as PromQL live with the dashboards view of the local stack, which
# shows a person the same queries these tests run.
from examples.demo.dashboards import (  # noqa: E402
    Query,
    dashboard_queries,
    iter_panels,
    load_dashboards,
    substitute,
    variable_queries,
)

__all__ = ["Query", "dashboard_queries", "iter_panels", "load_dashboards", "substitute", "variable_queries",
           "metric_names", "recording_rule_names", "catalogue_series", "known_series"]


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
        if metric.type == "histogram":
            names.update(f"{name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(name)
    return frozenset(names)


def known_series(rules_dir: Path = RULES_DIR) -> frozenset[str]:
    """Everything a dashboard may name: the catalogue, our recording rules and ``up``."""
    return catalogue_series() | recording_rule_names(rules_dir) | {"up"}
