"""What every benchmark shares: results, targets, statistics, child processes, the machine.

A benchmark module exposes ``run(**counts) -> Result``. A :class:`Result` carries the
table that goes into ``bench/RESULTS.md``, the targets it is held to with the measured
value and whether it was met, free-form notes, and the raw numbers (``data``) that the
smoke tests check for being well formed. Nothing here asserts a timing.

Measurements that must not share a process (series stay registered for the life of a
process; RSS is per process) run in a fresh child: :func:`run_child` starts
``python -m <module> --child ...`` and reads the JSON document the child prints last.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Target:
    """One target of the issue: what was asked, what was measured, met or not."""

    name: str
    goal: str
    measured: str
    met: bool | None  # None: not measured in this run (skipped)
    reason: str = ""


@dataclass
class Result:
    """The outcome of one benchmark."""

    key: str
    title: str
    method: str
    header: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    skipped: str | None = None
    seconds: float = 0.0

    def markdown(self) -> str:
        lines = [f"## {self.title}", "", self.method, ""]
        if self.skipped:
            lines += [f"**Skipped:** {self.skipped}", ""]
        if self.header and self.rows:
            lines.append(markdown_table(self.header, self.rows))
            lines.append("")
        if self.targets:
            lines.append("| target | goal | measured | |")
            lines.append("|---|---|---|---|")
            for t in self.targets:
                mark = {True: "met", False: "**missed**", None: "not measured"}[t.met]
                lines.append(f"| {t.name} | {t.goal} | {t.measured} | {mark} |")
            lines.append("")
            for t in self.targets:
                if t.reason:
                    lines.append(f"- {t.name}: {t.reason}")
            if any(t.reason for t in self.targets):
                lines.append("")
        for note in self.notes:
            lines.append(f"- {note}")
        if self.notes:
            lines.append("")
        lines.append(f"_Run time: {self.seconds:.0f} s._")
        lines.append("")
        return "\n".join(lines)


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        out.append("| " + " | ".join(str(cell) for cell in row) + " |")
    return "\n".join(out)


# --------------------------------------------------------------------------- statistics


def median(values: Iterable[float]) -> float:
    values = list(values)
    if not values:
        raise ValueError("median of no values")
    return statistics.median(values)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of unsorted values."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, NaN when the denominator is not positive."""
    return numerator / denominator if denominator > 0 else float("nan")


def fmt(value: float, digits: int = 1) -> str:
    if value != value:  # NaN
        return "n/a"
    return f"{value:,.{digits}f}"


def is_number(value: Any) -> bool:
    """A real, finite number (not a bool): what the smoke tests ask of every figure."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# --------------------------------------------------------------------------- children


class ChildError(RuntimeError):
    """A benchmark child process failed; the message carries its stderr."""


def child_environ(env: dict[str, str | None] | None = None) -> dict[str, str]:
    """os.environ with ``env`` applied (None removes a variable) and the repo importable."""
    child_env = dict(os.environ)
    for key, value in (env or {}).items():
        if value is None:
            child_env.pop(key, None)
        else:
            child_env[key] = value
    child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), child_env.get("PYTHONPATH")]))
    return child_env


def run_child(module: str, args: Sequence[str], *, env: dict[str, str | None] | None = None,
              timeout: float = 300.0) -> dict[str, Any]:
    """Run ``python -m module --child args...`` from the repo root; its last JSON line.

    ``env`` is applied to this process's environment (a value of None removes a variable:
    prometheus_client switches to multiprocess mode when ``PROMETHEUS_MULTIPROC_DIR`` is
    merely present).
    """
    child_env = child_environ(env)
    proc = subprocess.run(
        [sys.executable, "-m", module, "--child", *args],
        cwd=REPO_ROOT, env=child_env, capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    if proc.returncode != 0:
        raise ChildError(f"{module} {' '.join(args)} exited with {proc.returncode}:\n{proc.stderr[-4000:]}")
    for line in reversed(proc.stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise ChildError(f"{module} {' '.join(args)} printed no JSON result:\n{proc.stdout[-2000:]}")


def emit(document: dict[str, Any]) -> None:
    """What a child prints last: one JSON line."""
    sys.stdout.write(json.dumps(document) + "\n")
    sys.stdout.flush()


def rss_bytes(pid: int | None = None) -> int:
    import psutil

    return psutil.Process(pid or os.getpid()).memory_info().rss


# --------------------------------------------------------------------------- machine


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _command_version(argv: Sequence[str]) -> str:
    if shutil.which(argv[0]) is None and not Path(argv[0]).exists():
        return "not installed"
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (proc.stdout or proc.stderr).strip().splitlines()
    return text[0].strip() if text else "unknown"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, str]:
    """Machine, date and versions for the head of RESULTS.md."""
    import psutil

    from flask_mpesa_monitor import __version__

    return {
        "date (UTC)": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "CPU": f"{cpu_model()}, {os.cpu_count()} logical cores",
        "memory": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "OS": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "flask-mpesa-monitor": __version__,
        "Flask / Werkzeug": f"{_version('flask')} / {_version('werkzeug')}",
        "prometheus_client": _version("prometheus_client"),
        "prometheus-flask-exporter": _version("prometheus-flask-exporter"),
        "gunicorn": _version("gunicorn"),
        "psycopg2": _version("psycopg2-binary"),
        "wrk": _command_version(["wrk", "--version"]).split(" Copyright")[0],
        "PostgreSQL": _command_version(["/usr/lib/postgresql/15/bin/postgres", "--version"]),
    }
