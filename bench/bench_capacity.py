"""What one app host, one Prometheus and one VictoriaMetrics carry (docs/scaling.md).

Measured, on this machine, with the real engines:

1. **One app host at the organization bound**: a gunicorn host's ``/metrics`` with
   ``MAX_ORGANIZATIONS`` (500) organizations populated through the extension's real
   code paths (:mod:`bench.population`), rendered in multiprocess mode from ``workers``
   processes' files: exposition lines (= samples per scrape), series per organization,
   bytes (plain and gzip, as Prometheus asks) and render time (= scrape time).
2. **One Prometheus** (Debian's 2.42) scraping ``hosts`` such hosts (the same body served
   by an in-process HTTP server per host) every ``interval`` seconds and remote-writing
   everything to VictoriaMetrics: samples appended per second, CPU seconds per million
   samples, resident memory per head series, scrape duration.
3. **One VictoriaMetrics** (Debian's 1.79, single node): rows ingested per second, CPU
   seconds per million rows, and disk bytes per million samples after a flush (fresh
   parts; background merges compress further, so this is an upper bound).

Per-sample costs are the figures to scale on: docs/scaling.md multiplies them out.
``python -m bench.bench_capacity`` runs it alone (about 2 minutes).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .common import Result, Target, emit, fmt, run_child

MODULE = "bench.bench_capacity"


# --------------------------------------------------------------------------- children
def child_body(orgs: int, out: str) -> dict[str, Any]:
    """Populate ``orgs`` organizations in this (single) process; write the exposition."""
    from .population import describe, organizations, populate, render

    populate("ours", organizations(orgs))
    body, content_type = render("ours", None)
    Path(out).write_bytes(body)
    return {"content_type": content_type, **describe(body)}


# --------------------------------------------------------------------------- helpers
def _metrics(url: str) -> dict[str, float]:
    """A /metrics page as {"name{labels}": value} (text format)."""
    from examples.demo.servers import http_request

    status, _, body = http_request("GET", url, timeout=10)
    if status != 200:
        raise RuntimeError(f"GET {url} -> {status}")
    out: dict[str, float] = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            try:
                out[key] = float(value)
            except ValueError:
                continue
    return out


def _sum(metrics: dict[str, float], name: str, contains: str = "") -> float:
    return sum(v for k, v in metrics.items() if (k == name or k.startswith(name + "{")) and contains in k)


def measure_host(orgs: int, workers: int, reps: int) -> dict[str, Any]:
    """The scrape of one host at the bound (multiprocess render over ``workers`` files)."""
    from . import bench_scrape

    return bench_scrape.measure_multi("ours", orgs, reps, workers=workers)


def measure_engines(body_path: Path, content_type: str, hosts: int, interval: float, duration: float,
                    work: Path) -> dict[str, Any]:
    """One Prometheus scraping ``hosts`` copies of the body, remote-writing to one VM."""
    from examples.demo.servers import (
        PrometheusServer,
        RecordingHTTPServer,
        VictoriaMetricsServer,
        free_port,
        wait_until,
    )

    body = body_path.read_bytes()
    servers = [RecordingHTTPServer() for _ in range(hosts)]
    for server in servers:
        server.set_response("/metrics", 200, body, headers={"Content-Type": content_type})
        server.start()
    vm = VictoriaMetricsServer(base_dir=work / "vm", latency_offset="1s")
    prom_port = free_port()
    config = {
        "global": {"scrape_interval": f"{interval:g}s", "scrape_timeout": f"{min(interval, 10):g}s",
                   "external_labels": {"cluster": "bench", "environment": "bench"}},
        "scrape_configs": [
            {"job_name": "mpesa-mcp", "static_configs": [{"targets": [f"127.0.0.1:{s.port}" for s in servers]}]},
            {"job_name": "prometheus", "scrape_interval": "5s",
             "static_configs": [{"targets": [f"127.0.0.1:{prom_port}"]}]},
        ],
        "remote_write": [{"url": vm.write_url, "write_relabel_configs": [
            {"action": "labeldrop", "regex": "replica"}],
            "queue_config": {"max_samples_per_send": 2000, "max_shards": 10}}],
    }
    prom = PrometheusServer(config, port=prom_port, base_dir=work / "prometheus")
    try:
        vm.start()
        prom.start()
        wait_until(lambda: len(prom.query('up{job="mpesa-mcp"} == 1')) == hosts, timeout=60, interval=0.5,
                   description="Prometheus scraping every host")
        time.sleep(2 * interval)   # the first scrapes create the series: not steady state
        p0, v0, t0 = _metrics(prom.url + "/metrics"), _metrics(vm.url + "/metrics"), time.monotonic()
        time.sleep(duration)
        p1, v1, t1 = _metrics(prom.url + "/metrics"), _metrics(vm.url + "/metrics"), time.monotonic()
        elapsed = t1 - t0
        appended = _sum(p1, "prometheus_tsdb_head_samples_appended_total") - \
            _sum(p0, "prometheus_tsdb_head_samples_appended_total")
        prom_cpu = _sum(p1, "process_cpu_seconds_total") - _sum(p0, "process_cpu_seconds_total")
        sent = _sum(p1, "prometheus_remote_storage_samples_total") - _sum(p0, "prometheus_remote_storage_samples_total")
        rows = _sum(v1, "vm_rows_inserted_total", 'type="promremotewrite"') - \
            _sum(v0, "vm_rows_inserted_total", 'type="promremotewrite"')
        vm_cpu = _sum(v1, "process_cpu_seconds_total") - _sum(v0, "process_cpu_seconds_total")
        scrape = [float(r["value"][1]) for r in prom.query('scrape_duration_seconds{job="mpesa-mcp"}')]
        head_series = _sum(p1, "prometheus_tsdb_head_series")
        prom_rss = _sum(p1, "process_resident_memory_bytes")
        vm_rss = _sum(v1, "process_resident_memory_bytes")
        pending = _sum(p1, "prometheus_remote_storage_samples_pending")
        prom.stop()                      # no more writes: everything VM got is on disk after a flush
        time.sleep(1)
        vm.flush()
        time.sleep(1)
        total_rows = _sum(_metrics(vm.url + "/metrics"), "vm_rows_inserted_total", 'type="promremotewrite"')
        disk = vm.disk_bytes()
        return {
            "hosts": hosts, "interval_s": interval, "duration_s": elapsed,
            "prometheus": {"samples_per_s": appended / elapsed, "cpu_s_per_million": prom_cpu / appended * 1e6,
                           "cpu_cores": prom_cpu / elapsed, "head_series": head_series, "rss_bytes": prom_rss,
                           "rss_per_series": prom_rss / head_series if head_series else None,
                           "scrape_s_max": max(scrape) if scrape else None,
                           "remote_sent_per_s": sent / elapsed, "remote_pending": pending},
            "victoria_metrics": {"rows_per_s": rows / elapsed,
                                 "cpu_s_per_million": vm_cpu / rows * 1e6 if rows else None,
                                 "cpu_cores": vm_cpu / elapsed, "rss_bytes": vm_rss, "rows_total": total_rows,
                                 "disk_bytes": disk,
                                 "disk_per_million": disk / total_rows * 1e6 if total_rows else None,
                                 "bytes_per_sample": disk / total_rows if total_rows else None},
        }
    finally:
        prom.cleanup()
        vm.cleanup()
        for server in servers:
            server.stop()


# --------------------------------------------------------------------------- run
def run(orgs: int = 500, workers: int = 2, hosts: int = 2, interval: float = 5.0, duration: float = 60.0,
        reps: int = 5) -> Result:
    started = time.monotonic()
    host = measure_host(orgs, workers, reps)
    with tempfile.TemporaryDirectory(prefix="bench-capacity-") as tmp:
        work = Path(tmp)
        body_file = work / "metrics.txt"
        served = run_child(MODULE, ["body", str(orgs), str(body_file)], env={"PROMETHEUS_MULTIPROC_DIR": None,
                                                                             "prometheus_multiproc_dir": None})
        engines = measure_engines(body_file, served["content_type"], hosts, interval, duration, work)
    per_org = (host["series"] / host["organizations"]) if host.get("organizations") else None
    lines_per_org = host["lines"] / host["organizations"] if host.get("organizations") else None
    p, v = engines["prometheus"], engines["victoria_metrics"]
    samples_per_host_per_s_15 = host["lines"] / 15.0
    result = Result(
        key="capacity",
        title="7. Capacity: one app host, one Prometheus, one VictoriaMetrics",
        method=(f"One host: {orgs} organizations (the guard's bound) populated through the extension in each of "
                f"{workers} worker processes, `/metrics` rendered in multiprocess mode ({reps} renders, median). "
                f"Engines: Debian's Prometheus 2.42 scraping {hosts} such hosts every {interval:g} s (the body served "
                f"from memory, {served['lines']:,} samples per scrape) and remote-writing everything to Debian's "
                f"VictoriaMetrics 1.79 (single node), measured over {engines['duration_s']:.0f} s of steady state "
                "from both programs' own counters; VictoriaMetrics' disk after a flush of fresh parts (background "
                "merges shrink it further: an upper bound). docs/scaling.md multiplies these out."),
        header=["measure", "value"],
        rows=[
            ["series per organization (a histogram counts once)", fmt(per_org, 1) if per_org else "-"],
            ["samples per organization per scrape (exposition lines)", fmt(lines_per_org, 0) if lines_per_org else "-"],
            [f"samples per scrape of one host at {orgs} orgs", f"{host['lines']:,}"],
            ["bytes per scrape (plain / gzip)",
             f"{host['bytes'] / 2**20:.1f} MiB / {host['gzip_bytes'] / 2**20:.2f} MiB"],
            [f"scrape (render) time per host, {workers} workers", f"{fmt(host['render_s'], 3)} s"],
            ["samples/s per replica per host at a 15 s interval", f"{samples_per_host_per_s_15:,.0f}"],
            ["Prometheus: samples appended/s in this run", f"{p['samples_per_s']:,.0f}"],
            ["Prometheus: CPU s per million samples (scrape + TSDB + remote write)", fmt(p["cpu_s_per_million"], 2)],
            ["Prometheus: resident memory per head series",
             f"{p['rss_per_series']:,.0f} B" if p["rss_per_series"] else "-"],
            ["Prometheus: longest scrape of a served host",
             f"{fmt(p['scrape_s_max'], 3)} s" if p["scrape_s_max"] else "-"],
            ["VictoriaMetrics: rows ingested/s in this run", f"{v['rows_per_s']:,.0f}"],
            ["VictoriaMetrics: CPU s per million rows",
             fmt(v["cpu_s_per_million"], 2) if v["cpu_s_per_million"] else "-"],
            ["VictoriaMetrics: disk per million samples (fresh parts)",
             f"{v['disk_per_million'] / 2**20:.2f} MiB ({fmt(v['bytes_per_sample'], 2)} B/sample)"
             if v["disk_per_million"] else "-"],
            ["VictoriaMetrics: resident memory", f"{v['rss_bytes'] / 2**20:.0f} MiB"],
        ],
        data={"host": {k: host[k] for k in ("lines", "series", "organizations", "bytes", "gzip_bytes", "render_s")},
              "series_per_org": per_org, "samples_per_org": lines_per_org, "served": served, **engines},
    )
    result.targets.append(Target(
        "remote_write keeps up", "VictoriaMetrics ingests what Prometheus appends (no backlog)",
        f"{p['samples_per_s']:,.0f} appended/s, {v['rows_per_s']:,.0f} ingested/s, "
        f"{p['remote_pending']:,.0f} pending at the end",
        v["rows_per_s"] >= 0.9 * p["samples_per_s"]))
    result.seconds = time.monotonic() - started
    return result


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        mode, *args = sys.argv[2:]
        if mode == "body":
            emit(child_body(int(args[0]), args[1]))
            return
        raise SystemExit(f"unknown child mode {mode!r}")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orgs", type=int, default=500)
    parser.add_argument("--hosts", type=int, default=2)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--json", action="store_true", help="print the raw figures too")
    args = parser.parse_args()
    result = run(args.orgs, hosts=args.hosts, interval=args.interval, duration=args.duration)
    print(result.markdown())
    if args.json:
        print(json.dumps(result.data, indent=2, default=str))


if __name__ == "__main__":
    main()
