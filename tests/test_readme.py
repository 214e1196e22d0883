"""The README's generated parts and commands stay true."""

from pathlib import Path

from scripts.config_table import render

ROOT = Path(__file__).resolve().parent.parent


def test_readme_config_table_is_current():
    readme = (ROOT / "README.md").read_text()
    assert render(readme) == readme, "run: python scripts/config_table.py --write"


def test_readme_shows_the_two_commands_and_ci_runs_the_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "./deploy-monitoring.sh --local" in readme
    assert "./scripts/test.sh" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert "./scripts/test.sh" in ci
