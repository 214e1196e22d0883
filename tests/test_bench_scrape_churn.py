"""The dead-worker scrape benchmark runs with tiny counts and gives well-formed figures.

A smoke run only (no timing asserted): the piled-up state has the dead workers' files,
the archived state has them folded into one archive per kind, with the same lines.
"""

from bench import bench_scrape
from bench.common import is_number


def test_bench_scrape_churn_smoke():
    result = bench_scrape.run_churn(orgs=3, dead=5, workers=2, reps=1)
    assert result.skipped is None and len(result.rows) == 3
    assert all(len(row) == len(result.header) for row in result.rows)
    states = list(result.data["states"].values())
    none, piled, archived = states
    files = [state["counter_histogram_files"] for state in states]
    # 2 live workers' files; each render child leaves a counter file too (label_overflow children)
    assert files == [2 * 2, 2 * 2 + 1 + 2 * 5, 2 * 2 + 2 + 2]  # archived: the dead ones gone, 2 archives
    assert none["lines"] == piled["lines"] == archived["lines"]
    assert all(is_number(s["render_s"]) and s["render_s"] > 0 for s in states)
    assert len(result.data["merge_s"]) == 5 and all(t.met in (True, False) for t in result.targets)
