#!/usr/bin/env python3
"""Print (or --write into README.md) the table of every MPESA_MONITOR_* setting.

The table is generated from flask_mpesa_monitor.config.SETTINGS (the fields of
MonitorConfig) so it cannot drift;
tests/test_readme.py fails when README.md is not up to date.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flask_mpesa_monitor.config import SETTINGS  # noqa: E402

BEGIN = "<!-- config-table:begin -->"
END = "<!-- config-table:end -->"


def _default(value: object) -> str:
    if value is None or value == ():
        return "unset"
    if isinstance(value, (tuple, list, frozenset)):
        return ", ".join(f"`{item}`" for item in value)
    return f"`{value}`"


def table() -> str:
    rows = ["| setting | default | what it does |", "|---|---|---|"]
    rows += [f"| `{s.config_key}` | {_default(s.default)} | {s.doc} |" for s in SETTINGS]
    return "\n".join(rows)


def render(readme: str) -> str:
    head, _, rest = readme.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return f"{head}{BEGIN}\n{table()}\n{END}{tail}"


if __name__ == "__main__":
    if "--write" in sys.argv:
        path = Path(__file__).resolve().parent.parent / "README.md"
        path.write_text(render(path.read_text()))
    else:
        print(table())
