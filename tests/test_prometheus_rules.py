"""The Prometheus config and rules keep the alert contract, and their unit tests pass.

Runs Debian's promtool (2.42, installed by scripts/test.sh) on the committed files:
`check rules --lint-fatal`, every rule unit test file in deploy/prometheus/tests/, and
deploy/prometheus/check-config.sh. Then reads the YAML to check what promtool cannot:
every alert of the contract (docs/DESIGN.md, "Alert contract") exists with its severity,
labels and annotations, has a runbook section, and has unit tests that see it fire and
see it stay silent (one evaluation before its `for:` elapses, where it has one).
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
PROM_DIR = ROOT / "deploy" / "prometheus"
RULES_DIR = PROM_DIR / "rules"
TESTS_DIR = PROM_DIR / "tests"
RUNBOOKS = ROOT / "docs" / "runbooks.md"

#: The alert contract: name -> (severity, per organization?, `for:` the contract fixes).
#: per organization: True = must carry `organization`, False = must not, None = free.
CONTRACT: dict[str, tuple[str, bool | None, str | None]] = {
    "MPesaMCPDown": ("critical", False, "1m"),
    "DatabaseDown": ("critical", False, "1m"),
    "HighErrorRate": ("critical", False, "2m"),
    "MPesaAPIFailures": ("critical", True, "2m"),
    "CrossTenantAccessAttempt": ("critical", True, None),
    "TokenRefreshFailures": ("critical", True, None),
    "HighResponseTime": ("high", False, "5m"),
    "TransactionFailureSpike": ("high", True, None),
    "SecurityEvents": ("high", None, None),
    "AuthenticationFailures": ("high", True, None),
    "AuthenticationBruteForce": ("high", False, "0m"),
    "STKCallbacksMissing": ("high", True, "2m"),
    "STKTimeoutSurge": ("high", False, None),
    "AuditLogTampering": ("critical", False, None),
    "HighResourceUsage": ("medium", False, "10m"),
    "RateLimitWarnings": ("medium", True, None),
    "SlowDatabaseQueries": ("medium", False, "10m"),
    "STKSuccessSLOBurnFast": ("critical", False, None),
    "STKSuccessSLOBurnSlow": ("high", False, None),
    "LowDailyRevenue": ("medium", True, None),
    "UnusualTransactionPattern": ("high", True, None),
    "C2BValidationSlow": ("high", True, "5m"),
    "C2BConfirmationsStopped": ("high", True, None),
    "B2CFloatLow": ("high", True, None),
    "Watchdog": ("none", False, None),
}

#: Alerts whose value says nothing (a state, not a measure): no `$value` required.
NO_VALUE_IN_DESCRIPTION = {"MPesaMCPDown", "Watchdog"}
#: Always firing by design: no case where it stays silent.
ALWAYS_FIRING = {"Watchdog"}

#: Recording rules that dashboards and alerts name (docs/DESIGN.md, "Recording rules").
RECORDING_RULES = {
    ":mpesa_mcp_requests:rate5m",
    ":mpesa_mcp_requests:error_ratio_rate5m",
    ":mpesa_mcp_request_duration_seconds:p95_5m",
    "organization:mpesa_mcp_requests:rate5m",
    "organization:mpesa_api_calls:rate5m",
    "organization:mpesa_api_calls:error_ratio_rate5m",
    "organization:mpesa_transactions:failure_ratio_rate10m",
    "organization:mpesa_transactions:success_ratio_rate1h",
    ":mpesa_stk_slo:objective",
    *(f":mpesa_stk_errors:ratio_rate{w}" for w in ("5m", "30m", "1h", "2h", "6h", "1d", "3d")),
    *(f":mpesa_stk_attempts:rate{w}" for w in ("5m", "30m", "1h", "2h", "6h", "1d", "3d")),
    ":mpesa_db_query_duration_seconds:p95_5m",
}

SCRAPE_JOBS = {"mpesa-mcp", "prometheus", "alertmanager", "node-exporter",
               "postgres-exporter", "sms-relay"}

_DURATION = re.compile(r"^(?:\d+[wdhms])+$")
_DURATION_PART = re.compile(r"(\d+)([wdhms])")
_SECONDS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}


# --- helpers -------------------------------------------------------------------------
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: scripts/test.sh installs Debian's prometheus package")
    return path


def run(args: list[str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300)


def seconds(duration: str) -> int:
    """Prometheus duration ("1d2h30m") in seconds."""
    assert _DURATION.match(duration), f"not a plain duration: {duration!r}"
    return sum(int(n) * _SECONDS[unit] for n, unit in _DURATION_PART.findall(duration))


def rule_files() -> list[Path]:
    return sorted(RULES_DIR.glob("*.yml"))


def unit_test_files() -> list[Path]:
    return sorted(TESTS_DIR.glob("*.yml"))


@functools.cache
def load(path: Path) -> Any:
    """A committed YAML file, parsed once per run (callers only read it)."""
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def all_rules() -> list[tuple[Path, str, dict[str, Any]]]:
    """(file, group name, rule) for every rule of every rule file."""
    return [(path, group["name"], rule)
            for path in rule_files()
            for group in load(path)["groups"]
            for rule in group["rules"]]


def alerts() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for _path, _group, rule in all_rules():
        if "alert" in rule:
            assert rule["alert"] not in found, f"{rule['alert']} is defined twice"
            found[rule["alert"]] = rule
    return found


def alert_cases() -> dict[str, list[tuple[Path, str, int, int, list[dict[str, Any]]]]]:
    """alertname -> (test file, group name, eval interval s, eval time s, exp_alerts)."""
    cases: dict[str, list[tuple[Path, str, int, int, list[dict[str, Any]]]]] = defaultdict(list)
    for path in unit_test_files():
        doc = load(path)
        interval = seconds(doc.get("evaluation_interval", "1m"))
        for number, group in enumerate(doc["tests"]):
            name = group.get("name", f"group {number}")
            for case in group.get("alert_rule_test") or []:
                cases[case["alertname"]].append(
                    (path, name, interval, seconds(case["eval_time"]), case.get("exp_alerts") or []))
    return cases


def catalogue_series() -> set[str]:
    """Every series name the extension exports (histograms with their suffixes)."""
    from flask_mpesa_monitor import metrics

    names: set[str] = set()
    for name, metric in metrics.CATALOGUE.items():
        names.add(name)
        if metric.type == "histogram":
            names |= {f"{name}_bucket", f"{name}_count", f"{name}_sum"}
    return names


# --- promtool --------------------------------------------------------------------------
def test_prometheus_rules_pass_promtool_lint() -> None:
    result = run([promtool(), "check", "rules", "--lint=all", "--lint-fatal",
                  *map(str, rule_files())])
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(rule_files())


@pytest.mark.parametrize("test_file", unit_test_files(), ids=lambda p: p.name)
def test_prometheus_rule_unit_tests_pass(test_file: Path) -> None:
    result = run([promtool(), "test", "rules", str(test_file)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_prometheus_config_check_script_passes() -> None:
    promtool()
    result = run(["bash", str(PROM_DIR / "check-config.sh")])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is valid prometheus config file syntax" in result.stdout
    # Every rule file went through the check, not just the config.
    for path in rule_files():
        assert f"rules/{path.name}" in result.stdout


def _copy_prometheus_dir(tmp_path: Path) -> Path:
    copy = tmp_path / "prometheus"
    shutil.copytree(PROM_DIR, copy)
    return copy


def test_prometheus_config_check_script_fails_on_a_broken_rule(tmp_path: Path) -> None:
    promtool()
    copy = _copy_prometheus_dir(tmp_path)
    app = copy / "rules" / "app.yml"
    text = app.read_text()
    broken = text.replace(":mpesa_mcp_requests:error_ratio_rate5m > 0.05",
                          "sum(rate(mpesa_mcp_requests_total[5m]) > 0.05")
    assert broken != text
    app.write_text(broken)
    result = run(["bash", str(copy / "check-config.sh")])
    assert result.returncode != 0
    assert "app.yml" in result.stdout + result.stderr


def test_prometheus_config_check_script_fails_on_an_unknown_field(tmp_path: Path) -> None:
    promtool()
    copy = _copy_prometheus_dir(tmp_path)
    config = copy / "prometheus.yml"
    config.write_text(config.read_text().replace("  scrape_timeout: 10s\n",
                                                 "  scrape_timeout: 10s\n  scrape_timout: 10s\n"))
    result = run(["bash", str(copy / "check-config.sh")])
    assert result.returncode != 0
    assert "scrape_timout" in result.stdout + result.stderr


def test_prometheus_rule_unit_tests_fail_when_a_threshold_moves(tmp_path: Path) -> None:
    """The unit tests bite: HighErrorRate at 7% no longer fires on 6% of errors."""
    copy = _copy_prometheus_dir(tmp_path)
    app = copy / "rules" / "app.yml"
    app.write_text(app.read_text().replace("error_ratio_rate5m > 0.05", "error_ratio_rate5m > 0.07"))
    result = run([promtool(), "test", "rules", str(copy / "tests" / "app_test.yml")])
    assert result.returncode != 0
    assert "HighErrorRate fires when 6% of requests fail" in result.stdout + result.stderr


# --- the alert contract ----------------------------------------------------------------
def test_prometheus_alerts_are_exactly_the_contract() -> None:
    assert set(alerts()) == set(CONTRACT)


@pytest.mark.parametrize("name", sorted(CONTRACT))
def test_prometheus_alert_has_contract_labels_and_annotations(name: str) -> None:
    rule = alerts()[name]
    severity, per_organization, contract_for = CONTRACT[name]
    assert rule["labels"] == {"severity": severity, "service": "mpesa-mcp"}
    annotations = rule["annotations"]
    # Links are added by deploy/render.py from the settings (tests/test_render.py).
    assert set(annotations) == {"summary", "description"}
    assert annotations["summary"].strip() and annotations["description"].strip()
    if name not in NO_VALUE_IN_DESCRIPTION:
        assert "$value" in annotations["description"]
    if per_organization:
        assert "$labels.organization" in annotations["description"]
    # `for:` is a plain duration (the local stack rewrites it), the contract's where given.
    assert isinstance(rule.get("for"), str) and _DURATION.match(rule["for"]), rule.get("for")
    if contract_for is not None:
        assert seconds(rule["for"]) == seconds(contract_for)


def test_prometheus_alert_for_durations_sit_on_their_own_lines() -> None:
    """The local stack shortens `for:` by rewriting `for: <duration>` lines."""
    for path in rule_files():
        text = path.read_text(encoding="utf-8")
        count = sum(1 for rule in (r for g in load(path)["groups"] for r in g["rules"])
                    if "alert" in rule)
        lines = re.findall(r"(?m)^ +for: (?:\d+[wdhms])+$", text)
        assert len(lines) == count, path.name


@pytest.mark.parametrize("name", sorted(CONTRACT))
def test_prometheus_alert_is_unit_tested_both_ways(name: str) -> None:
    cases = alert_cases()[name]
    firing = [c for c in cases if c[4]]
    silent = [c for c in cases if not c[4]]
    assert firing, f"no unit test sees {name} fire"
    if name not in ALWAYS_FIRING:
        assert silent, f"no unit test sees {name} stay silent"
    severity, per_organization, _for = CONTRACT[name]
    for path, group, _interval, _time, expected in firing:
        for alert in expected:
            labels = alert.get("exp_labels") or {}
            assert labels.get("severity") == severity and labels.get("service") == "mpesa-mcp", \
                f"{path.name}: {group}"
            if per_organization is True:
                assert labels.get("organization"), f"{path.name}: {group}: per organization"
            if per_organization is False:
                assert "organization" not in labels, f"{path.name}: {group}: not per organization"
    assert any(alert.get("exp_annotations") for c in firing for alert in c[4]), \
        f"no unit test checks the annotations of {name}"


@pytest.mark.parametrize("name", sorted(n for n, rule in alerts().items() if seconds(rule["for"]) > 0))
def test_prometheus_alert_for_boundary_is_tested(name: str) -> None:
    """Silent one evaluation before a firing case of the same test group."""
    cases = alert_cases()[name]
    silent = {(c[0], c[1], c[3]) for c in cases if not c[4]}
    assert any((path, group, at - interval) in silent
               for path, group, interval, at, expected in cases if expected), \
        f"no test group of {name} checks one evaluation before `for:` elapses"


def test_prometheus_runbook_has_a_section_per_alert() -> None:
    headings = set(re.findall(r"(?m)^## (\S+)\s*$", RUNBOOKS.read_text(encoding="utf-8")))
    missing = set(CONTRACT) - headings
    assert not missing, f"docs/runbooks.md lacks sections: {sorted(missing)}"


# --- recording rules and metric names --------------------------------------------------
def test_prometheus_recording_rules_of_the_contract_exist() -> None:
    records = [rule["record"] for _path, _group, rule in all_rules() if "record" in rule]
    assert len(records) == len(set(records)), "a recording rule is defined twice"
    assert RECORDING_RULES <= set(records)


def test_prometheus_slo_objective_is_one_rendered_setting() -> None:
    doc = load(RULES_DIR / "slo-objective.yml")
    rules = [rule for group in doc["groups"] for rule in group["rules"]]
    assert rules == [{"record": ":mpesa_stk_slo:objective", "expr": "vector(0.995)"}]
    # The deploy script renders a copy with this line replaced; the burn-rate alerts read the record only.
    assert re.search(r"(?m)^ +expr: vector\(0\.995\)$",
                     (RULES_DIR / "slo-objective.yml").read_text())
    for name in ("STKSuccessSLOBurnFast", "STKSuccessSLOBurnSlow"):
        expr = alerts()[name]["expr"]
        assert ":mpesa_stk_slo:objective" in expr
        assert "0.995" not in expr and "0.005" not in expr


def test_prometheus_rules_name_only_exported_metrics_and_records() -> None:
    known = catalogue_series() | {rule["record"] for _p, _g, rule in all_rules() if "record" in rule}
    known.add("up")
    unknown = set()
    for path, _group, rule in all_rules():
        # Series names: mpesa_* and level:metric:operation names, outside strings.
        expr = re.sub(r'"[^"]*"', '""', rule["expr"])
        for name in re.findall(r"(?<![\w:])((?:mpesa_|[a-z]*:)[a-zA-Z0-9_:]+|up(?=[{\s]))", expr):
            if name not in known:
                unknown.add((path.name, name))
    assert not unknown, sorted(unknown)


def test_prometheus_group_names_are_unique_and_test_files_fix_their_order() -> None:
    """promtool evaluates groups in no fixed order unless group_eval_order lists them."""
    groups_by_file = {path.name: [g["name"] for g in load(path)["groups"]] for path in rule_files()}
    names = [name for groups in groups_by_file.values() for name in groups]
    assert len(names) == len(set(names)), "group names must be unique across rule files"
    for path in unit_test_files():
        doc = load(path)
        loaded = [name for rule_file in doc["rule_files"]
                  for name in groups_by_file[Path(rule_file).name]]
        assert sorted(doc.get("group_eval_order") or []) == sorted(loaded), path.name


# --- prometheus.yml --------------------------------------------------------------------
def _secret_keys(node: Any, path: str = "") -> list[str]:
    """Keys that would hold a secret inline (password, credentials, bearer_token)."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in {"password", "credentials", "bearer_token"}:
                found.append(f"{path}.{key}")
            found += _secret_keys(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _secret_keys(value, f"{path}[{i}]")
    return found


def test_prometheus_config_scrapes_the_stack_with_secrets_from_files() -> None:
    config = load(PROM_DIR / "prometheus.yml")
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == SCRAPE_JOBS
    app = jobs["mpesa-mcp"]
    assert app["file_sd_configs"][0]["files"] == ["/etc/prometheus/targets/mpesa-mcp.json"]
    assert app["authorization"]["type"] == "Bearer"
    assert app["authorization"]["credentials_file"].startswith("/run/secrets/")
    assert jobs["prometheus"]["basic_auth"]["password_file"].startswith("/run/secrets/")
    assert jobs["sms-relay"]["static_configs"][0]["targets"] == ["sms-relay:9099"]
    assert jobs["sms-relay"].get("metrics_path", "/metrics") == "/metrics"
    assert _secret_keys(config) == []
    assert set(config["global"]["external_labels"]) == {"cluster", "replica", "environment"}
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yml"]
    alerting = config["alerting"]
    assert {"action": "labeldrop", "regex": "replica"} in alerting["alert_relabel_configs"]
    targets = [t for am in alerting["alertmanagers"] for sc in am["static_configs"] for t in sc["targets"]]
    assert targets == ["alertmanager:9093"]
    # Long-term storage is off in the single-server layout: deploy-monitoring.sh --ha adds
    # it (tests/test_ha.py checks that rendering).
    assert "remote_write" not in config


def test_prometheus_targets_placeholder_is_a_file_sd_list() -> None:
    groups = json.loads((PROM_DIR / "targets" / "mpesa-mcp.json").read_text())
    assert isinstance(groups, list) and groups
    for group in groups:
        assert group["targets"] and all(isinstance(t, str) and ":" in t for t in group["targets"])
