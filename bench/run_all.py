"""Run every benchmark once and write ``bench/RESULTS.md``: ``python -m bench.run_all``.

``scripts/bench.sh`` installs what is missing and calls this. A benchmark that fails is
reported as failed in its section (with the error) and the others still run; the exit
status is 1 then. The load average before each benchmark is recorded, because the
machine may be shared and every figure should be read with it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import (
    bench_alert_latency,
    bench_capacity,
    bench_ha,
    bench_health,
    bench_http,
    bench_inprocess,
    bench_memory,
    bench_scrape,
)
from .common import REPO_ROOT, Result, fmt, machine_info, markdown_table, ratio

#: (key, runner) in the order of the issue's list, with full counts.
BENCHMARKS: list[tuple[str, Callable[[], Result]]] = [
    ("inprocess", lambda: bench_inprocess.run(requests=20_000, rounds=5)),
    ("http", lambda: bench_http.run(duration=6.0, rounds=5)),
    ("scrape", lambda: bench_scrape.run((10, 100, 500, 2000))),
    ("health", lambda: bench_health.run(duration=10.0, clients=200)),
    ("alert_latency", lambda: bench_alert_latency.run()),
    ("memory", lambda: bench_memory.run((0, 500, 2000))),
    ("capacity", lambda: bench_capacity.run()),
    ("ha", lambda: bench_ha.run()),
]


def _get(results: dict[str, Result], key: str, *path: str) -> Any:
    result = results.get(key)
    if result is None or result.skipped:
        return None
    node: Any = result.data
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def headline(results: dict[str, Result]) -> str:
    """The summary table (the one the README shows)."""
    rows: list[list[str]] = []
    add = _get(results, "inprocess", "added_us")
    if add:
        rows.append(["added CPU per request, in process", f"{fmt(add['ours'])} µs",
                     f"{fmt(add['pfe'])} µs (prometheus-flask-exporter)", fmt(ratio(add["ours"], add["pfe"]), 2),
                     "≤ 0.5×"])
    http = _get(results, "http", "summary")
    if http:
        rows.append(["throughput under gunicorn (2 sync workers)", f"{fmt(http['ours']['rps'], 0)} req/s",
                     f"{fmt(http['bare']['rps'], 0)} req/s (bare Flask); p-f-e {fmt(http['pfe']['rps'], 0)}",
                     fmt(ratio(http["ours"]["rps"], http["bare"]["rps"]), 2), "≥ 0.9×"])
    points = _get(results, "scrape", "points")
    if points:
        for mode, label, goal in (("single", "single process", "< 0.5 s"),
                                  ("multi", "multiprocess, 4 workers", "< 2 s")):
            o, p = points[mode]["ours"].get("500"), points[mode]["plain"].get("500")
            if o and p:
                rows.append([f"/metrics render, 500 orgs, {label}", f"{fmt(o['render_s'], 2)} s",
                             f"{fmt(p['render_s'], 2)} s (plain prometheus_client)",
                             fmt(ratio(o["render_s"], p["render_s"]), 2), goal])
            o, p = points[mode]["ours"].get("2000"), points[mode]["plain"].get("2000")
            if o and p:
                rows.append([f"/metrics render, 2,000 orgs, {label}",
                             f"{fmt(o['render_s'], 2)} s, {o['organizations']:,} orgs kept",
                             f"{fmt(p['render_s'], 2)} s, {p['organizations']:,} orgs",
                             fmt(ratio(o["render_s"], p["render_s"]), 2), "bounded by the guard"])
    runs = _get(results, "health", "runs")
    if runs:
        rows.append(["/health/detailed p99, 200 clients", f"{fmt(runs['detailed']['p99_ms'], 0)} ms",
                     f"{fmt(runs['floor']['p99_ms'], 0)} ms (/health, no check)",
                     fmt(ratio(runs["detailed"]["p99_ms"], runs["floor"]["p99_ms"]), 2), "< 20 ms"])
        rows.append(["database queries by the health checks", str(_get(results, "health", "total_queries")),
                     f"bound {_get(results, 'health', 'allowed_queries')} (1 per worker per interval)", "-",
                     "≤ bound"])
    bounds = _get(results, "alert_latency", "bounds")
    if bounds and "production/DatabaseDown" in bounds:
        db = bounds["production/DatabaseDown"]
        ct = bounds.get("production/CrossTenantAccessAttempt")
        def measured(bound: dict | None) -> str:
            value = bound.get("measured") if bound else None
            return f"{fmt(value, 1)} s" if value is not None else "not measured"

        rows.append(["alert latency, production intervals: DatabaseDown / CrossTenantAccessAttempt",
                     f"measured {measured(db)} / {measured(ct)}",
                     f"computed {fmt(db['best'], 0)}–{fmt(db['worst'], 0)} s / "
                     + (f"{fmt(ct['best'], 0)} s (app-side)" if ct else "-"),
                     "-", "within the computed bound"])
    mem = _get(results, "memory", "points")
    if mem and "2000" in mem["ours"] and "0" in mem["ours"]:
        o = (mem["ours"]["2000"]["rss"] - mem["ours"]["0"]["rss"]) / 2**20
        p = (mem["plain"]["2000"]["rss"] - mem["plain"]["0"]["rss"]) / 2**20
        rows.append(["RSS added by 2,000 orgs' series", f"{fmt(o)} MiB", f"{fmt(p)} MiB (plain prometheus_client)",
                     fmt(ratio(o, p), 2), "bounded by the guard"])
    return markdown_table(["measure", "flask-mpesa-monitor", "baseline", "ratio", "target"], rows)


def targets_table(results: dict[str, Result]) -> str:
    rows = []
    for result in results.values():
        for t in result.targets:
            mark = {True: "met", False: "**missed**", None: "not measured"}[t.met]
            rows.append([t.name, t.goal, t.measured, mark])
    return markdown_table(["target", "goal", "measured", ""], rows)


#: Sections after this line are measured by the long benchmarks (bench_soak, the fault
#: catalogue of bench_alert_latency), which run_all does not run: a rewrite keeps them.
KEPT_MARKER = ("<!-- kept across runs: long benchmarks (python -m bench.bench_soak, "
               "python -m bench.bench_alert_latency --catalogue) -->")


def write(results: dict[str, Result], info: dict[str, str], loads: dict[str, str], out: Path, seconds: float) -> None:
    previous = out.read_text() if out.exists() else ""
    kept = previous[previous.index(KEPT_MARKER):] if KEPT_MARKER in previous else ""
    parts = [
        "# Benchmark results",
        "",
        "Written by `./scripts/bench.sh` (`python -m bench.run_all`); do not edit by hand. Each section "
        "says how it was measured; the code is in `bench/`.",
        "",
        markdown_table(["", ""], [[k, v] for k, v in info.items()] +
                       [["whole run", f"{seconds / 60:.1f} min"]]),
        "",
        "## Headline",
        "",
        headline(results),
        "",
        "## Targets",
        "",
        targets_table(results),
        "",
    ]
    for key, result in results.items():
        section = result.markdown()
        if key in loads:
            section = section.rstrip("\n") + f" Load average (1 min) before: {loads[key]}.\n"
        parts.append(section)
    if kept:
        parts.append(kept.rstrip("\n") + "\n")
    out.write_text("\n".join(parts))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "RESULTS.md")
    parser.add_argument("--only", default="", help="comma-separated benchmark keys to run")
    args = parser.parse_args()
    only = {k for k in args.only.split(",") if k}
    started = time.monotonic()
    info = machine_info()
    results: dict[str, Result] = {}
    loads: dict[str, str] = {}
    failed = False
    for key, runner in BENCHMARKS:
        if only and key not in only:
            continue
        loads[key] = fmt(os.getloadavg()[0], 2)
        print(f"== {key} (load {loads[key]})", flush=True)
        t0 = time.monotonic()
        try:
            result = runner()
        except Exception:
            failed = True
            error = traceback.format_exc()
            print(error, file=sys.stderr, flush=True)
            result = Result(key=key, title=f"{key}: failed", method="The benchmark raised an error.",
                            skipped="failed:\n\n```\n" + error[-3000:] + "\n```")
            result.seconds = time.monotonic() - t0
        results[key] = result
        print(result.markdown(), flush=True)
    write(results, info, loads, args.out, time.monotonic() - started)
    print(f"wrote {args.out} in {(time.monotonic() - started) / 60:.1f} min")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
