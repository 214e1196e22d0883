"""6. Memory: process RSS with 0, 500 and 2,000 organizations' worth of series.

Each point is a fresh process that imports what it needs, builds the app, makes the
series of N organizations (:mod:`bench.population`: 38 series each, through our
extension, or with plain prometheus_client and its defaults), collects garbage and
reads its RSS. "0" is the same process with the app built and no organization yet, so
the difference is what the series cost. Past the guard's bound (500) ours folds new
organizations into ``other``: 2,000 should cost about what 500 does.

Run alone: ``python -m bench.bench_memory [--orgs 0,500,2000]``.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from typing import Any

from .common import Result, Target, emit, fmt, rss_bytes, run_child

MODULE = "bench.bench_memory"
IMPLS = ("ours", "plain")
LABELS = {"ours": "flask-mpesa-monitor", "plain": "plain prometheus_client"}
MIB = 1024 * 1024


def child(impl: str, orgs: int) -> dict[str, Any]:
    from .population import organizations, populate

    gc.collect()
    rss_import = rss_bytes()
    populate(impl, organizations(orgs))
    gc.collect()
    return {"rss": rss_bytes(), "rss_import": rss_import}


def run(orgs_list: tuple[int, ...] = (0, 500, 2000)) -> Result:
    started = time.monotonic()
    env = {"PROMETHEUS_MULTIPROC_DIR": None, "prometheus_multiproc_dir": None}
    points = {impl: {str(n): run_child(MODULE, [impl, str(n)], env=env) for n in orgs_list} for impl in IMPLS}
    base = str(min(orgs_list))
    rows = []
    for n in orgs_list:
        o, p = points["ours"][str(n)]["rss"], points["plain"][str(n)]["rss"]
        o0, p0 = points["ours"][base]["rss"], points["plain"][base]["rss"]
        rows.append([f"{n:,}", fmt(o / MIB), fmt((o - o0) / MIB), fmt(p / MIB), fmt((p - p0) / MIB),
                     fmt((o - o0) / max(1, p - p0), 2) if n != int(base) else "-"])
    result = Result(
        key="memory",
        title="6. Memory (RSS per process)",
        method=(
            "A fresh process per point: build the app (ours: the 10-endpoint population app with the "
            "extension; plain: the metric objects), make the series of N organizations, `gc.collect()`, "
            "read RSS. Added = RSS minus the same process kind's 0-organization RSS."
        ),
        header=["organizations", "ours RSS MiB", "ours added MiB", "plain RSS MiB", "plain added MiB",
                "ours added × plain added"],
        rows=rows,
        data={"points": points, "orgs": list(orgs_list)},
    )
    if 500 in orgs_list and 2000 in orgs_list:
        o500, o2000 = points["ours"]["500"]["rss"], points["ours"]["2000"]["rss"]
        o0 = points["ours"][base]["rss"]
        bounded = (o2000 - o0) <= 1.25 * (o500 - o0) + 2 * MIB
        result.targets.append(Target(
            "memory bounded by the guard", "2,000 orgs cost about what 500 do",
            f"+{fmt((o2000 - o0) / MIB)} MiB vs +{fmt((o500 - o0) / MIB)} MiB", bool(bounded)))
    result.seconds = time.monotonic() - started
    return result


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        emit(child(sys.argv[2], int(sys.argv[3])))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orgs", default="0,500,2000")
    args = parser.parse_args()
    print(run(tuple(int(x) for x in args.orgs.split(","))).markdown())


if __name__ == "__main__":
    main()
