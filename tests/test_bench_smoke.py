"""Each benchmark of bench/ runs with tiny counts and produces well-formed numbers.

Smoke runs only, so that the benchmarks never rot: nothing here asserts a timing or a
target (``./scripts/bench.sh`` measures; bench/RESULTS.md has the figures). What is
asserted: every figure is a finite number where it should be, tables have their rows,
targets say met/missed, and the scrape baseline exposes the same series as ours.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from bench import (
    apps,
    bench_alert_latency,
    bench_health,
    bench_http,
    bench_inprocess,
    bench_memory,
    bench_scrape,
    run_all,
)
from bench.common import REPO_ROOT, Result, is_number, run_child
from bench.load import parse_wrk


def _well_formed(result: Result) -> None:
    assert result.skipped is None, result.skipped
    assert result.rows and all(len(row) == len(result.header) for row in result.rows)
    assert all(t.met in (True, False) for t in result.targets)
    assert result.markdown().startswith(f"## {result.title}")


def test_bench_inprocess_smoke_gives_per_request_figures(monkeypatch):
    monkeypatch.setenv("MPESA_MONITOR_HEALTH_BACKGROUND", "false")
    result = bench_inprocess.run(requests=300, rounds=2, warmup=30, block=100)
    _well_formed(result)
    assert set(result.data["per_round_us"]) == set(apps.VARIANTS)
    assert all(len(v) == 2 and all(is_number(x) and x > 0 for x in v) for v in result.data["per_round_us"].values())
    assert all(is_number(v) for v in result.data["added_us"].values())
    assert is_number(result.data["ours_over_pfe"])


def test_bench_apps_three_variants_serve_the_three_routes(monkeypatch):
    monkeypatch.setenv("MPESA_MONITOR_HEALTH_BACKGROUND", "false")
    for variant in apps.VARIANTS:
        client = apps.create(variant).test_client()
        for _rule, path in apps.ROUTES:
            assert client.get(path).status_code == 200, (variant, path)
    with pytest.raises(ValueError, match="unknown variant"):
        apps.create("nope")


def test_bench_http_smoke_under_gunicorn():
    result = bench_http.run(duration=1, rounds=1, connections=2, warmup=0)
    _well_formed(result)
    for variant in apps.VARIANTS:
        summary = result.data["summary"][variant]
        assert summary["requests"] > 0 and summary["errors"] == 0
        assert all(is_number(summary[k]) for k in ("rps", "p50_ms", "p99_ms", "cpu_us"))
    # the instrumented apps really counted what they served
    assert result.data["counted"]["ours"] > 0 and result.data["counted"]["pfe"] > 0


def test_bench_load_parses_wrk_report():
    report = """Running 1s test @ http://127.0.0.1:1
  1 threads and 2 connections
  Latency Distribution
     50%  830.00us
     75%    1.20ms
     90%    2.00ms
     99%    1.50s
  1234 requests in 1.00s, 0.99MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 5
Requests/sec:   1234.00
"""
    load = parse_wrk(report, 1)
    assert (load.requests, load.rps, load.errors, load.non_2xx) == (1234, 1234.0, 3, 5)
    assert load.p50_ms == pytest.approx(0.83) and load.p99_ms == pytest.approx(1500.0)


def test_bench_scrape_smoke_single_and_multiprocess():
    result = bench_scrape.run((3,), reps=1, workers=2)
    _well_formed(result)
    for mode in ("single", "multi"):
        for impl in bench_scrape.IMPLS:
            point = result.data["points"][mode][impl]["3"]
            assert is_number(point["render_s"]) and point["render_s"] > 0
            assert point["bytes"] > point["gzip_bytes"] > 0
            assert point["organizations"] == 3
    assert result.data["points"]["multi"]["ours"]["3"]["files"] > 0


def test_bench_scrape_baseline_exposes_the_same_series_as_ours():
    env = {"PROMETHEUS_MULTIPROC_DIR": None, "prometheus_multiproc_dir": None}
    ours = run_child(bench_scrape.MODULE, ["series", "ours", "2", "0"], env=env)["series"]
    plain = run_child(bench_scrape.MODULE, ["series", "plain", "2", "0"], env=env)["series"]
    assert len(ours) == 2 * 38 + 1
    assert ours == plain


def test_bench_health_smoke_or_skipped_with_reason(postgres):
    reason = bench_health.unavailable()
    result = bench_health.run(duration=1, clients=8, interval=1.0, postgres=postgres)
    if reason is not None:
        assert result.skipped == reason and all(t.met is None for t in result.targets)
        pytest.skip(f"health benchmark skipped: {reason}")
    _well_formed(result)
    for run in result.data["runs"].values():
        assert run["requests"] > 0 and is_number(run["p99_ms"])
    assert result.data["total_queries"] >= 1  # the database check really ran
    assert result.data["allowed_queries"] >= 2


def test_bench_alert_latency_bounds_from_deploy():
    result = bench_alert_latency.run(measure=False)
    if result.skipped:
        pytest.skip(result.skipped)
    bounds = result.data["bounds"]
    assert "production/DatabaseDown" in bounds and "production/CrossTenantAccessAttempt" in bounds
    for bound in bounds.values():
        assert is_number(bound["best"]) and is_number(bound["worst"]) and 0 <= bound["best"] <= bound["worst"]
    assert all(t.met is None for t in result.targets)  # measure=False: nothing measured, nothing judged


@pytest.mark.parametrize("args", [["--bounds-only"], ["--catalogue", "--bounds-only", "--production"],
                                  ["--catalogue", "--bounds-only", "--production-only", "--faults", "app_down"]])
def test_bench_alert_latency_command_line_runs(args):
    """The benchmark as its docstring says to run it: a fresh interpreter, every option it
    documents, so a name defined after the ``__main__`` guard shows here."""
    result = subprocess.run([sys.executable, "-m", "bench.bench_alert_latency", *args], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "| DatabaseDown |" in result.stdout or "| database_down | DatabaseDown" in result.stdout


def test_bench_alert_latency_refuses_an_unknown_fault():
    result = subprocess.run([sys.executable, "-m", "bench.bench_alert_latency", "--catalogue", "--faults", "app_dwon"],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 2 and "unknown faults app_dwon" in result.stderr


def test_bench_alert_latency_route_follows_alertmanager_rules():
    config = {"route": {"receiver": "default", "group_wait": "30s", "routes": [
        {"receiver": "null", "matchers": ['severity=~"info|none"']},
        {"receiver": "critical", "matchers": ['severity="critical"'], "group_wait": "10s", "continue": True},
        {"receiver": "audit", "matchers": ['service="mpesa-mcp"']},
    ]}}
    routes = bench_alert_latency.route_for(config, {"alertname": "X", "severity": "critical", "service": "mpesa-mcp"})
    assert [(r["receiver"], r["group_wait"]) for r in routes] == [("critical", "10s"), ("audit", "30s")]
    assert bench_alert_latency.seconds("1m30s") == 90 and bench_alert_latency.seconds("0m") == 0


def test_bench_memory_smoke():
    result = bench_memory.run((0, 5))
    _well_formed(result)
    for impl in bench_memory.IMPLS:
        for point in result.data["points"][impl].values():
            assert is_number(point["rss"]) and point["rss"] > 10 * 2**20


def test_bench_run_all_writes_results(tmp_path):
    alert = bench_alert_latency.run(measure=False)
    inprocess = Result(key="inprocess", title="1.", method="m",
                       data={"added_us": {"ours": 10.0, "pfe": 40.0}})
    out = tmp_path / "RESULTS.md"
    run_all.write({"inprocess": inprocess, "alert_latency": alert}, {"CPU": "test"}, {"inprocess": "0.5"}, out, 1.0)
    text = out.read_text()
    assert "## Headline" in text and "| added CPU per request, in process | 10.0 µs |" in text
    assert "0.25" in text and "Load average (1 min) before: 0.5" in text
    assert (REPO_ROOT / "scripts" / "bench.sh").stat().st_mode & 0o111
