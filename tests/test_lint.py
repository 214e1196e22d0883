"""Lint and types are part of the test command: ruff over the code, mypy --strict over
the package. Their settings live in pyproject.toml ([tool.ruff], [tool.mypy]); a finding
fails this test with the tool's own report."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: What ruff checks: the package, the tests, the demo, the benchmarks, the scripts and
#: deploy/'s Python (the renderer and the dashboards' builder).
RUFF_PATHS = ["flask_mpesa_monitor", "tests", "examples", "bench", "scripts",
              *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "deploy").rglob("*.py")
                      if "secrets" not in p.relative_to(ROOT).parts)]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300, check=False)


def test_ruff_finds_nothing():
    result = _run("ruff", "check", "--no-cache", *RUFF_PATHS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_finds_nothing():
    result = _run("mypy", "--no-incremental", "--cache-dir", os.devnull)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success" in result.stdout


def test_the_checkers_do_report_a_finding(tmp_path):
    """The two tests above can fail: the same settings reject a small bad file."""
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n\n\ndef f(x):\n    return x  # " + "-" * 120 + "\n")
    ruff = _run("ruff", "check", "--no-cache", "--config", str(ROOT / "pyproject.toml"), str(bad))
    assert ruff.returncode != 0 and "F401" in ruff.stdout and "E501" in ruff.stdout, ruff.stdout + ruff.stderr
    mypy = _run("mypy", "--no-incremental", "--cache-dir", os.devnull, "--config-file",
                str(ROOT / "pyproject.toml"), str(bad))
    assert mypy.returncode != 0 and "no-untyped-def" in mypy.stdout, mypy.stdout + mypy.stderr
