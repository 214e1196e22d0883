"""The ``flask monitor`` commands run against the demo app as a newcomer runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def flask(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("MPESA_MONITOR_", "DATABASE_URL"))}
    environment.update(PYTHONPATH=str(REPO), **(env or {}))
    return subprocess.run([sys.executable, "-m", "flask", "--app", "examples.demo.app:create_app", *args],
                          cwd=cwd, env=environment, capture_output=True, text=True, timeout=60)


def test_monitor_check_writes_nothing_in_the_working_directory(tmp_path):
    result = flask("monitor", "check", cwd=tmp_path)
    assert "database" in result.stdout, result.stdout + result.stderr
    assert list(tmp_path.iterdir()) == []


def test_test_alert_without_alertmanager_exits_1(tmp_path):
    result = flask("monitor", "test-alert", "--severity", "critical", cwd=tmp_path,
                   env={"DATABASE_URL": f"sqlite:///{tmp_path / 'db' / 'demo.sqlite3'}"})
    assert result.returncode == 1, result.stdout + result.stderr
    assert "MPESA_MONITOR_ALERTMANAGER_URL" in result.stdout + result.stderr
