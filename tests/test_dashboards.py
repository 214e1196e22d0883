"""The Grafana dashboards and their provisioning ask valid questions of real metrics.

Offline checks: the JSON is what deploy/grafana/build_dashboards.py generates with
grafana-foundation-sdk, each file loads back through the SDK's typed models unchanged (the
wheel ships no JSON schema: its models are the schema), the schema version is the SDK's,
uids are the ones alerts and docs link to, every datasource reference goes through the
``$datasource`` variable of a provisioned datasource type, every query parses in
Prometheus' own parser (promtool, through a temporary rule file) and names only metrics
the extension exports, our recording rules or ``up``.
Whether each panel returns data is the end-to-end test's job (it reuses
tests/dashboard_queries.py).
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.dashboard_queries import (
    DASHBOARD_DIR,
    ROOT,
    dashboard_queries,
    iter_panels,
    known_series,
    load_dashboards,
    metric_names,
    substitute,
    variable_queries,
)

GRAFANA = ROOT / "deploy" / "grafana"
EXPECTED_UIDS = {
    "overview.json": "mpesa-overview",
    "organization.json": "mpesa-organization",
    "security.json": "mpesa-security",
    "business.json": "mpesa-business",
}
BUILTIN_VARIABLES = {"__rate_interval", "__range", "__interval"}
#: A ``job`` label matcher in PromQL, and the value it compares with.
JOB_MATCHER = re.compile(r"""\bjob\s*(?:=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)""")


def render_module() -> Any:
    """deploy/render.py (a script: loaded by path), whose DEFAULT_JOB the rules select."""
    spec = importlib.util.spec_from_file_location("deploy_render", ROOT / "deploy" / "render.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _build_module() -> Any:
    spec = importlib.util.spec_from_file_location("build_dashboards",
                                                  GRAFANA / "build_dashboards.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _datasource_refs(node: Any, path: str = "") -> list[tuple[str, Any]]:
    """Every value of a ``datasource`` key anywhere in a JSON document."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource":
                found.append((f"{path}.{key}", value))
            found.extend(_datasource_refs(value, f"{path}.{key}"))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found.extend(_datasource_refs(value, f"{path}[{index}]"))
    return found


def _sdk_round_trip(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` decoded into the SDK's models (panel options and queries included) and
    encoded again: what the SDK understands of it."""
    from grafana_foundation_sdk.cog import plugins
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models.dashboard import Dashboard

    plugins.register_default_plugins()  # typed options/fieldConfig per panel type
    decoded: dict[str, Any] = json.loads(json.dumps(Dashboard.from_json(document),
                                                    cls=JSONEncoder))
    return decoded


def _differences(a: Any, b: Any, path: str = "") -> list[str]:
    """Paths where two JSON documents differ (for a readable failure)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for key in sorted(set(a) | set(b), key=str)
                for d in _differences(a.get(key, "<absent>"), b.get(key, "<absent>"),
                                      f"{path}.{key}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def _provisioned_datasources() -> dict[str, str]:
    """uid -> type of every provisioned datasource."""
    out = {}
    for path in sorted((GRAFANA / "provisioning" / "datasources").glob("*.y*ml")):
        for ds in yaml.safe_load(path.read_text()).get("datasources", []):
            out[ds["uid"]] = ds["type"]
    return out


def promtool_rejects(exprs: list[str], tmp_path: Path) -> str:
    """Run ``promtool check rules`` on one recording rule per expression.

    Returns promtool's complaint, or "" when every expression parses.
    """
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is needed (scripts/test.sh installs Debian's prometheus)")
    rules = [{"record": f"dashboard_check:expr_{i}", "expr": e} for i, e in enumerate(exprs)]
    path = tmp_path / "dashboard_exprs.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True,
                            text=True, timeout=60)
    return "" if result.returncode == 0 else result.stdout + result.stderr


# --- the files -----------------------------------------------------------------------
def test_dashboards_load_with_expected_unique_uids() -> None:
    dashboards = load_dashboards()
    assert {p.name: d["uid"] for p, d in dashboards.items()} == EXPECTED_UIDS
    uids = [d["uid"] for d in dashboards.values()]
    assert len(uids) == len(set(uids))


def test_dashboards_committed_json_matches_build_script() -> None:
    built = _build_module().build()
    committed = {p.name: p.read_text() for p in sorted(DASHBOARD_DIR.glob("*.json"))}
    stale = sorted(name for name in built if committed.get(name) != built[name])
    assert not stale, f"run python3 deploy/grafana/build_dashboards.py; stale: {stale}"
    assert set(committed) == set(built), "a dashboard JSON file has no source in the script"


def test_dashboards_load_back_through_the_sdk_models_unchanged() -> None:
    for path, dashboard in load_dashboards().items():
        diff = _differences(dashboard, _sdk_round_trip(dashboard))
        assert not diff, f"{path.name} is not what the SDK's models read:\n" + "\n".join(diff[:20])


def test_dashboards_sdk_round_trip_catches_a_misspelt_field() -> None:
    """The round trip can fail: a field the model does not know is dropped on the way."""
    dashboard = json.loads((DASHBOARD_DIR / "overview.json").read_text())
    dashboard["panels"][0]["fieldConfig"]["defaults"]["untis"] = "s"
    dashboard["panels"][1]["options"]["colourMode"] = "value"
    diff = _differences(dashboard, _sdk_round_trip(dashboard))
    assert any("untis" in d for d in diff) and any("colourMode" in d for d in diff), diff


def test_dashboards_schema_version_is_the_sdks() -> None:
    from grafana_foundation_sdk.models.dashboard import Dashboard

    expected = Dashboard().schema_version
    for path, dashboard in load_dashboards().items():
        assert dashboard["schemaVersion"] == expected, path.name


def test_dashboards_sdk_pin_matches_the_grafana_compose_runs() -> None:
    """setup.cfg pins the SDK build generated for the Grafana minor version compose runs
    (plain installs resolve to an old 10.1 build: its versions carry epochs)."""
    import importlib.metadata

    compose = yaml.safe_load((ROOT / "docker-compose.monitoring.yml").read_text())
    image = compose["services"]["grafana"]["image"]
    grafana = re.fullmatch(r"grafana/grafana(?:-oss)?:(\d+)\.(\d+)\.\d+", image)
    assert grafana, image
    setup = (ROOT / "setup.cfg").read_text()
    pin = re.search(r"grafana-foundation-sdk==(\d+)!(\d+)\.(\d+)\.0", setup)
    assert pin, "setup.cfg must pin grafana-foundation-sdk to one exact build (epoch!version)"
    if int(grafana.group(1)) >= 12:
        # Grafana 12 and 13 have no SDK builds with an epoch (alpha builds only): the
        # newest stable build (11.6) writes the classic dashboard model, which they load
        # and migrate; the round-trip test below checks the JSON against those models.
        assert pin.group(2, 3) == ("11", "6"), (pin.group(0), image)
    else:
        assert pin.group(2, 3) == grafana.groups(), (pin.group(0), image)
    installed = importlib.metadata.version("grafana-foundation-sdk")
    assert installed == pin.group(0).split("==")[1], \
        f"installed {installed}, setup.cfg pins {pin.group(0)}: pip install -e .[test]"


def test_dashboards_panels_fit_the_grid_without_overlap() -> None:
    for path, dashboard in load_dashboards().items():
        cells: dict[tuple[int, int], str] = {}
        for panel in iter_panels(dashboard):
            pos = panel["gridPos"]
            assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24, f"{path.name}: {panel['title']}"
            for x in range(pos["x"], pos["x"] + pos["w"]):
                for y in range(pos["y"], pos["y"] + pos["h"]):
                    other = cells.setdefault((x, y), panel["title"])
                    assert other == panel["title"], \
                        f"{path.name}: {panel['title']!r} overlaps {other!r}"


def test_dashboards_have_reasonable_size_and_unique_panel_ids() -> None:
    for path, dashboard in load_dashboards().items():
        panels = list(iter_panels(dashboard))
        # The business and organization boards carry the C2B and B2C flows too.
        assert 5 <= len(panels) <= 20, f"{path.name}: {len(panels)} panels"
        ids = [p["id"] for p in panels]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
        titles = [p["title"] for p in panels]
        assert len(titles) == len(set(titles)), f"{path.name}: duplicate panel titles"


# --- datasources and provisioning ----------------------------------------------------
def test_dashboards_datasource_references_go_through_the_datasource_variable() -> None:
    """No datasource uid is fixed: every reference is ``${datasource}``, a variable that
    offers the datasources of a type Grafana has provisioned."""
    provisioned_types = set(_provisioned_datasources().values())
    # Prometheus, and VictoriaMetrics (the HA layout's long-term store) speaking its API.
    assert _provisioned_datasources() == {"prometheus": "prometheus", "victoriametrics": "prometheus"}
    bad = []
    for path, dashboard in load_dashboards().items():
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        variable = variables.get("datasource")
        assert variable and variable["type"] == "datasource", f"{path.name}: no $datasource"
        assert variable["query"] in provisioned_types, (path.name, variable["query"])
        refs = _datasource_refs(dashboard)
        assert refs, f"{path.name} references no datasource"
        for where, ref in refs:
            if ref != {"type": variable["query"], "uid": "${datasource}"}:
                bad.append(f"{path.name}{where}: {ref!r}")
    assert not bad, "datasource references not through $datasource:\n" + "\n".join(bad)


def test_dashboards_datasource_provisioning_uses_basic_auth_without_literal_secret() -> None:
    text = (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text()
    ds = yaml.safe_load(text)["datasources"][0]
    assert ds["url"] == "http://prometheus:9090"
    assert ds["basicAuth"] is True
    assert ds["basicAuthUser"].startswith("$")
    password = ds["secureJsonData"]["basicAuthPassword"]
    assert re.fullmatch(r"\$__file\{/run/secrets/\w+\}|\$\{?\w+\}?", password), password


def test_dashboards_provider_points_at_mounted_folder() -> None:
    provider = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "provider.yml").read_text())["providers"]
    assert len(provider) == 1
    assert provider[0]["folder"] == "M-Pesa MCP"
    assert provider[0]["type"] == "file"
    assert provider[0]["options"]["path"] == "/var/lib/grafana/dashboards"


# --- the queries ---------------------------------------------------------------------
def test_dashboards_expressions_are_valid_promql(tmp_path: Path) -> None:
    queries = list(dashboard_queries()) + list(variable_queries())
    assert len(queries) >= 20
    complaint = promtool_rejects([q.expr for q in queries], tmp_path)
    assert not complaint, complaint


def test_dashboards_promql_check_rejects_a_broken_expression(tmp_path: Path) -> None:
    """The syntax check above can fail: promtool refuses an unbalanced expression."""
    complaint = promtool_rejects(["sum(rate(mpesa_mcp_requests_total[5m])",
                                  "up"], tmp_path)
    assert '"dashboard_check:expr_0": could not parse expression' in complaint
    assert "dashboard_check:expr_1" not in complaint


def test_dashboards_name_only_catalogue_metrics_and_recording_rules() -> None:
    known = known_series()
    unknown = []
    for q in list(dashboard_queries()) + list(variable_queries()):
        names = metric_names(q.expr)
        assert names, f"{q.dashboard} / {q.panel}: no metric in {q.expr!r}"
        unknown += [f"{q.dashboard} / {q.panel}: {n}" for n in sorted(names - known)]
    assert not unknown, "metrics outside the catalogue:\n" + "\n".join(unknown)


def test_dashboards_metric_name_check_catches_unknown_and_seed_names() -> None:
    """The name check can fail: a seed-era name and a misspelt suffix are not known."""
    known = known_series()
    expr = ('sum(rate(mpesa_requests_total{organization="a"}[5m])) / '
            "sum by (le) (rate(mpesa_api_duration_seconds[5m])) or on() vector(0)")
    assert metric_names(expr) - known == {"mpesa_requests_total",
                                          "mpesa_api_duration_seconds"}
    assert "mpesa_api_duration_seconds_bucket" in known
    assert "mpesa_transactions_total" in known


def test_dashboards_variables_are_defined_where_used() -> None:
    for path, dashboard in load_dashboards().items():
        defined = {v["name"] for v in dashboard["templating"]["list"]}
        for panel in iter_panels(dashboard):
            for target in panel.get("targets", []):
                used = {m.group(1) or m.group(2) for m in
                        re.finditer(r"\$\{(\w+)[^}]*\}|\$(\w+)", target["expr"])}
                missing = used - defined - BUILTIN_VARIABLES
                assert not missing, f"{path.name} / {panel['title']}: {missing}"


def test_dashboards_substitute_refuses_unknown_variable() -> None:
    assert substitute('x{organization="$organization"}[$__rate_interval]', "acme") == \
        'x{organization="acme"}[1m]'
    assert substitute('up{job="$job"}') == f'up{{job="{render_module().DEFAULT_JOB}"}}'
    assert substitute('up{job="${job}"}', job="shop-api") == 'up{job="shop-api"}'
    with pytest.raises(KeyError):
        substitute('x{organization="$organisation"}')


def _raw_queries() -> list[tuple[str, str, str]]:
    """(file, panel or variable, PromQL as committed) of every target and query variable."""
    found = []
    for path, dashboard in load_dashboards().items():
        for panel in iter_panels(dashboard):
            found += [(path.name, panel["title"], t["expr"]) for t in panel.get("targets", []) if "expr" in t]
        for variable in dashboard["templating"]["list"]:
            query = variable.get("query")
            if variable["type"] == "query":
                found.append((path.name, f"${variable['name']}", query["query"] if isinstance(query, dict) else query))
    return found


def test_dashboards_no_query_hard_codes_the_job() -> None:
    """The app's scrape job is a setting (MPESA_APP_JOB, rendered into prometheus.yml and the
    rules): a dashboard selects it through its ``$job`` variable, never by a fixed name."""
    selecting = [(f, where, expr) for f, where, expr in _raw_queries() if JOB_MATCHER.search(expr)]
    assert selecting, "no dashboard query selects the app's job: the check below would prove nothing"
    fixed = [f"{f} / {where}: {expr}" for f, where, expr in selecting
             for value in JOB_MATCHER.findall(expr) if value[1:-1] not in ("$job", "${job}")]
    assert not fixed, "job selected by a fixed value, not $job:\n" + "\n".join(fixed)


def test_dashboards_job_check_catches_a_fixed_job() -> None:
    """The check above can fail: a literal job, in any quoting or matcher, is seen."""
    for expr in ('sum(up{job="mpesa-mcp"})', "up{instance='a', job =~ 'mpesa.*'}", "up{job!=`x`}"):
        assert [v[1:-1] for v in JOB_MATCHER.findall(expr)] not in ([], ["$job"]), expr
    assert [v[1:-1] for v in JOB_MATCHER.findall('up{job="$job"} or on() vector(0)')] == ["$job"]


def test_dashboards_job_variable_lists_the_apps_jobs_and_defaults_to_the_rules_job() -> None:
    """``$job`` offers the jobs the app's own metrics are scraped under (so a renamed
    MPESA_APP_JOB is the only choice, never another service's job) and starts at the
    rules' default job, deploy/render.py's DEFAULT_JOB."""
    users = 0
    for path, dashboard in load_dashboards().items():
        uses_job = any("$job" in expr or "${job}" in expr for f, _, expr in _raw_queries() if f == path.name)
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        if not uses_job:
            assert "job" not in variables, f"{path.name}: a $job variable no query uses"
            continue
        users += 1
        job = variables["job"]
        assert job["type"] == "query" and job["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert job["query"]["query"] == "label_values(mpesa_mcp_build_info, job)", job["query"]
        assert job["current"]["value"] == job["current"]["text"] == render_module().DEFAULT_JOB
        assert job.get("multi") is False and job.get("includeAll") is False
    assert users, "no dashboard has a $job variable"


def test_dashboards_timeseries_rates_use_rate_interval() -> None:
    for dashboard in load_dashboards().values():
        for panel in iter_panels(dashboard):
            if panel["type"] != "timeseries":
                continue
            for target in panel["targets"]:
                ranges = re.findall(r"\[([^\]]+)\]", target["expr"])
                assert set(ranges) <= {"$__rate_interval"}, \
                    f"{dashboard['uid']} / {panel['title']}: {ranges}"


def test_dashboards_every_panel_has_a_unit_and_description() -> None:
    for dashboard in load_dashboards().values():
        for panel in iter_panels(dashboard):
            assert panel["fieldConfig"]["defaults"].get("unit"), panel["title"]
            assert panel.get("description"), panel["title"]


def test_dashboards_organization_dashboard_filters_by_its_variable() -> None:
    dashboard = json.loads((DASHBOARD_DIR / "organization.json").read_text())
    datasource, variable = dashboard["templating"]["list"]
    assert datasource["name"] == "datasource"
    assert variable["name"] == "organization"
    assert variable["query"]["query"] == \
        "label_values(mpesa_transactions_total, organization)"
    for panel in iter_panels(dashboard):
        for target in panel["targets"]:
            assert 'organization="$organization"' in target["expr"], panel["title"]


def test_dashboards_business_revenue_is_kes_bar_gauge_over_increase() -> None:
    dashboard = json.loads((DASHBOARD_DIR / "business.json").read_text())
    panels = {p["title"]: p for p in iter_panels(dashboard)}
    revenue = panels["Revenue by organization"]
    assert revenue["type"] == "bargauge"
    assert revenue["fieldConfig"]["defaults"]["unit"] == "currency:KES"
    assert re.search(r"increase\(mpesa_revenue_total\{[^}]*\}\[\$__range\]\)",
                     revenue["targets"][0]["expr"])
    churn = panels["Tenants at churn risk"]["targets"][0]["expr"]
    assert "[7d]" in churn and "[7d] offset 7d" in churn and "0.5 *" in churn
