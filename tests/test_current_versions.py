"""The rules and configs checked with the pinned versions' own tools as well as bookworm's.

Bookworm's promtool (2.42) and amtool (0.25) run in tests/test_prometheus_rules.py and
tests/test_alertmanager_config.py. The compose file pins Prometheus 3.5 LTS and a
current Alertmanager, whose semantics differ (Prometheus 3's range selectors are
left-open): the same checks run here with promtool 3.5.x and amtool 0.33.x from
Debian's unstable suite (scripts/current_prometheus.py fetches them into a cache,
installing nothing). unstable keeps only its newest version: the versions used are
printed in the test report.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from scripts import current_prometheus

ROOT = Path(__file__).resolve().parent.parent
RULE_TESTS = sorted((ROOT / "deploy/prometheus/tests").glob("*.yml"))

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tools() -> current_prometheus.Tools:
    try:
        found = current_prometheus.fetch()
    except (OSError, subprocess.SubprocessError, RuntimeError) as exc:
        pytest.fail(f"cannot fetch promtool/amtool from Debian unstable: {exc}")
    print(f"\n[current versions] promtool {found.promtool_version}, amtool {found.amtool_version}")
    return found


def run(argv: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={**os.environ, **env})


def test_tools_are_the_pinned_lines(tools: current_prometheus.Tools) -> None:
    assert tools.promtool_version.startswith("3."), tools.promtool_version
    major, minor = (int(part) for part in tools.amtool_version.split(".")[:2])
    assert (major, minor) >= (0, 28), tools.amtool_version


@pytest.mark.parametrize("test_file", RULE_TESTS, ids=lambda path: path.name)
def test_rule_unit_tests_pass_promtool_3(tools: current_prometheus.Tools, test_file: Path) -> None:
    result = subprocess.run([str(tools.promtool), "test", "rules", test_file.name],
                            capture_output=True, text=True, timeout=300, cwd=test_file.parent)
    assert result.returncode == 0, f"promtool {tools.promtool_version}:\n{result.stdout}{result.stderr}"


def test_rules_pass_promtool_3_lint(tools: current_prometheus.Tools) -> None:
    rules = sorted(str(path) for path in (ROOT / "deploy/prometheus/rules").glob("*.yml"))
    result = run([str(tools.promtool), "check", "rules", "--lint=all", "--lint-fatal", *rules])
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_config_passes_promtool_3(tools: current_prometheus.Tools) -> None:
    result = run(["bash", "deploy/prometheus/check-config.sh"], PROMTOOL=str(tools.promtool))
    assert result.returncode == 0, result.stdout + result.stderr


def test_web_config_passes_promtool_3(tools: current_prometheus.Tools) -> None:
    result = run([str(tools.promtool), "check", "web-config", "deploy/prometheus/web.yml"])
    assert result.returncode == 0, result.stdout + result.stderr


def test_alertmanager_config_and_routes_pass_amtool_current(tools: current_prometheus.Tools) -> None:
    result = run(["bash", "deploy/alertmanager/check-config.sh"], AMTOOL=str(tools.amtool))
    assert result.returncode == 0, result.stdout + result.stderr
