"""2. Request overhead over HTTP: the three apps under gunicorn, loaded from 127.0.0.1.

Each app of :mod:`bench.apps` runs under gunicorn with 2 sync workers and
``examples/demo/gunicorn_conf.py``; the two instrumented ones with
``PROMETHEUS_MULTIPROC_DIR`` (multiprocess metrics, as in production). The three servers
run side by side; the load generator (wrk, ``-t1 -c4``, cycling over the three routes)
visits them in interleaved rounds, the order rotating each round, and the figures are
medians over rounds. At the end each instrumented app's ``/metrics`` must show the
requests it served (instrumentation really on).

On 2 cores the load generator and the two workers share the CPU, as they would in a
small VM: the absolute numbers are modest, the ratios are the point.

Target: at least 0.9 of bare Flask's throughput.

Run alone: ``python -m bench.bench_http [--duration S] [--rounds R]``.
"""

from __future__ import annotations

import argparse
import re
import shutil
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from examples.demo.servers import GunicornServer

from . import apps
from .common import REPO_ROOT, Result, Target, fmt, median, ratio
from .load import run_load

PATHS = [path for _rule, path in apps.ROUTES]
LABELS = {"bare": "bare Flask", "pfe": "prometheus-flask-exporter", "ours": "flask-mpesa-monitor"}
COUNTERS = {"pfe": "flask_http_request_total", "ours": "mpesa_mcp_requests_total"}


def _server_cpu(server: GunicornServer) -> float:
    """CPU seconds (user + system) used so far by the gunicorn master and its workers."""
    import psutil

    total = 0.0
    pids = [server.process.pid] if server.process is not None and server.process.pid else []
    for pid in pids + server.worker_pids():
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def _measure(server: GunicornServer, duration: float, connections: int, tool: str) -> dict[str, Any]:
    cpu_before = _server_cpu(server)
    load = run_load(server.url, PATHS, duration, connections, tool).as_dict()
    load["server_cpu_us_per_request"] = (_server_cpu(server) - cpu_before) / max(1, load["requests"]) * 1e6
    return load


def _counted(server: GunicornServer, metric: str) -> float:
    status, body = server.get("/metrics")
    if status != 200:
        raise RuntimeError(f"{server.app_spec}: /metrics answered {status}")
    return sum(float(m.group(1)) for m in re.finditer(rf"^{metric}{{[^}}]*}} (\S+)$", body.decode(), re.M))


def run(duration: float = 6.0, rounds: int = 5, connections: int = 4, warmup: float = 2.0,
        tool: str = "auto") -> Result:
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="bench-http-"))
    per_round: dict[str, list[dict[str, Any]]] = {v: [] for v in apps.VARIANTS}
    counted: dict[str, float] = {}
    try:
        with ExitStack() as stack:
            servers = {}
            for variant in apps.VARIANTS:
                servers[variant] = stack.enter_context(GunicornServer(
                    f"bench.apps:create_{variant}()",
                    workers=2,
                    multiproc_dir=None if variant == "bare" else workdir / variant / "prom",
                    base_dir=workdir / variant / "run",
                    cwd=REPO_ROOT,
                    ready_path="/",
                ))
            if warmup > 0:
                for server in servers.values():
                    run_load(server.url, PATHS, warmup, connections, tool)
            order = list(apps.VARIANTS)
            for r in range(rounds):
                for variant in order[r % 3:] + order[:r % 3]:
                    per_round[variant].append(_measure(servers[variant], duration, connections, tool))
            for variant, metric in COUNTERS.items():
                counted[variant] = _counted(servers[variant], metric)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    summary = {
        variant: {
            "rps": median(r["rps"] for r in runs),
            "p50_ms": median(r["p50_ms"] for r in runs),
            "p99_ms": median(r["p99_ms"] for r in runs),
            "errors": sum(r["errors"] + r["non_2xx"] for r in runs),
            "requests": sum(r["requests"] for r in runs),
            "cpu_us": median(r["server_cpu_us_per_request"] for r in runs),
        }
        for variant, runs in per_round.items()
    }
    bare_rps = summary["bare"]["rps"]
    rows = []
    for variant in apps.VARIANTS:
        s = summary[variant]
        rows.append([LABELS[variant], fmt(s["rps"], 0), fmt(ratio(s["rps"], bare_rps), 2),
                     fmt(s["p50_ms"], 2), fmt(s["p99_ms"], 2), fmt(s["cpu_us"], 0),
                     fmt(s["cpu_us"] - summary["bare"]["cpu_us"], 0), str(s["errors"])])
    tool_used = per_round["bare"][0]["tool"] if per_round["bare"] else tool
    result = Result(
        key="http",
        title="2. Request overhead over HTTP (gunicorn, 2 sync workers)",
        method=(
            f"gunicorn 2 sync workers per app (multiprocess metrics for the instrumented two), "
            f"load from {tool_used} on 127.0.0.1 with {connections} connections cycling over the three "
            f"routes, {duration:g} s per measurement, {rounds} interleaved rounds after {warmup:g} s "
            "warm-up; medians over rounds. Load generator and workers share the 2 cores."
        ),
        header=["app", "req/s", "× bare", "p50 ms", "p99 ms", "server CPU µs/req", "added CPU µs/req", "errors"],
        rows=rows,
        data={"summary": summary, "per_round": per_round, "counted": counted, "tool": tool_used},
    )
    for variant in ("pfe", "ours"):
        result.data[f"{variant}_over_bare"] = ratio(summary[variant]["rps"], bare_rps)
    share = result.data["ours_over_bare"]
    result.targets.append(Target(
        name="HTTP throughput",
        goal="ours ≥ 0.9 × bare Flask req/s",
        measured=f"{fmt(summary['ours']['rps'], 0)} vs {fmt(bare_rps, 0)} req/s = {fmt(share, 2)}×",
        met=bool(share >= 0.9),
    ))
    result.notes.append(
        "Requests counted by each app's own /metrics at the end (warm-up, rounds and the readiness "
        f"probe): prometheus-flask-exporter {counted.get('pfe', 0):,.0f}, ours {counted.get('ours', 0):,.0f}; "
        f"load generator total over the rounds: {summary['pfe']['requests']:,} and {summary['ours']['requests']:,}."
    )
    result.seconds = time.monotonic() - started
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--tool", choices=("auto", "wrk", "python"), default="auto")
    args = parser.parse_args()
    print(run(args.duration, args.rounds, args.connections, tool=args.tool).markdown())


if __name__ == "__main__":
    main()
