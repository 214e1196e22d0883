"""Dead workers' counter and histogram files folded into one archive per kind.

Worker processes write real multiprocess files; after each archive step the renderer
(cold and warm) and prometheus_client's ``MultiProcessCollector`` must give exactly the
samples they gave before it: nothing lost, nothing counted twice, totals never back.
A merger killed (SIGKILL) after each of its steps leaves a directory that the next
scrape or merge brings back to the same samples.
"""

import os
import subprocess
import sys

import pytest
from prometheus_client import CollectorRegistry, generate_latest, multiprocess
from prometheus_client.parser import text_string_to_metric_families

from flask_mpesa_monitor import archive
from flask_mpesa_monitor.exposition import MetricsExporter, MultiProcessRenderer

WORKER = r'''
import sys
from prometheus_client import Counter, Gauge, Histogram
w = int(sys.argv[1])
c = Counter("mg_requests", "Requests.", ["org"])
h = Histogram("mg_latency_seconds", "Latency.", ["org"], buckets=(0.1, 1, 5))
g = Gauge("mg_in_progress", "Live.", ["org"], multiprocess_mode="livesum")
for i in range(3 + w % 3):
    org = f"org-{i}"
    c.labels(org).inc(i + w + 0.5)
    h.labels(org).observe(0.0625 * (i + 1) * (w + 1))  # dyadic: sums exact in any order
    g.labels(org).set(1)
'''


def workers(directory, ids):
    env = {"PROMETHEUS_MULTIPROC_DIR": str(directory), "PATH": "/usr/bin:/bin"}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(w)], env=env) for w in ids]
    assert [p.wait(timeout=60) for p in procs] == [0] * len(procs)
    return [p.pid for p in procs]


def samples(body):
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode()) for s in family.samples}


def reference(directory):
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(directory))
    return samples(generate_latest(registry))


def kill_dead(directory, pids):
    for pid in pids:
        multiprocess.mark_process_dead(pid, str(directory))


def db_files(directory):
    return sorted(name for name in os.listdir(directory) if name.endswith(".db"))


def test_archiving_dead_workers_keeps_every_sample(tmp_path):
    table = tmp_path / "mpesa_monitor_stk.sqlite"
    table.write_bytes(b"shared table: never touched by the archive")
    renderer = MultiProcessRenderer(str(tmp_path))
    pids = workers(tmp_path, range(6))
    kill_dead(tmp_path, pids)
    expected = reference(tmp_path)
    assert len(expected) > 30 and samples(renderer.render()) == expected  # warm cache from here on
    for done, pid in enumerate(pids, 1):
        folded = archive.archive_dead_worker(str(tmp_path), pid)
        assert sorted(folded) == [f"counter_{pid}.db", f"histogram_{pid}.db"]
        assert samples(renderer.render()) == expected  # the rewritten archive is re-read
        assert reference(tmp_path) == expected
        assert len(db_files(tmp_path)) == 2 * (len(pids) - done) + 2
    assert db_files(tmp_path) == ["counter_archive-6.db", "histogram_archive-6.db"]
    assert samples(MultiProcessRenderer(str(tmp_path)).render()) == expected  # and cold
    more = workers(tmp_path, [7])  # live workers next to the archive add up with it
    kill_dead(tmp_path, more)
    grown = reference(tmp_path)
    assert samples(renderer.render()) == grown
    assert all(grown[key] >= value for key, value in expected.items() if "mg_in_progress" not in key[0])
    assert table.read_bytes() == b"shared table: never touched by the archive"
    assert archive.archive_dead_worker(str(tmp_path), 999999999) == []  # no files: nothing to do


@pytest.mark.parametrize("step", ["written", "journaled", "renamed"])
def test_a_merger_killed_mid_way_loses_and_doubles_nothing(tmp_path, step):
    pids = workers(tmp_path, range(3))
    kill_dead(tmp_path, pids)
    archive.archive_dead_worker(str(tmp_path), pids[0])  # an archive exists: it gets replaced
    expected = reference(tmp_path)
    renderer = MultiProcessRenderer(str(tmp_path))
    assert samples(renderer.render()) == expected
    code = ("from flask_mpesa_monitor.archive import archive_dead_worker; "
            f"archive_dead_worker({str(tmp_path)!r}, {pids[1]})")
    env = {**os.environ, archive.CRASH_ENV: step, "PYTHONPATH": os.getcwd()}
    merger = subprocess.run([sys.executable, "-c", code], env=env, timeout=60)
    assert merger.returncode == -9  # killed at that step
    assert os.path.exists(tmp_path / archive.JOURNAL_NAME) == (step != "written")
    assert samples(renderer.render()) == expected  # the scrape finishes (or drops) the merge first
    assert not os.path.exists(tmp_path / archive.JOURNAL_NAME)  # (partial archives, not *.db, wait for the next merge)
    exporter_env = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    try:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path)
        exporter = MetricsExporter()
        exporter._renderer = None  # MultiProcessCollector, behind the same lock
        assert samples(exporter.render(None)[0]) == expected
    finally:
        if exporter_env is None:
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR")
        else:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = exporter_env
    for pid in pids[1:]:
        archive.archive_dead_worker(str(tmp_path), pid)
    assert samples(renderer.render()) == expected == reference(tmp_path)
    assert len(db_files(tmp_path)) == 2
    assert not [name for name in os.listdir(tmp_path) if name.endswith((".partial", ".journal"))]


def test_a_merger_killed_before_the_journal_recovered_by_the_next_merge(tmp_path):
    pids = workers(tmp_path, range(2))
    kill_dead(tmp_path, pids)
    expected = reference(tmp_path)
    code = ("from flask_mpesa_monitor.archive import archive_dead_worker; "
            f"archive_dead_worker({str(tmp_path)!r}, {pids[0]})")
    env = {**os.environ, archive.CRASH_ENV: "journaled", "PYTHONPATH": os.getcwd()}
    assert subprocess.run([sys.executable, "-c", code], env=env, timeout=60).returncode == -9
    archive.archive_dead_worker(str(tmp_path), pids[1])  # recovers, then merges
    assert reference(tmp_path) == expected
    assert db_files(tmp_path) == ["counter_archive-2.db", "histogram_archive-2.db"]


def test_a_merge_overtaken_by_another_one_gives_up_and_loses_nothing(tmp_path, monkeypatch):
    """Two mergers on one directory (two masters: a misconfiguration): the one whose inputs
    changed while it wrote does not commit; the dead worker's files stay, still counted."""
    pids = workers(tmp_path, range(3))
    kill_dead(tmp_path, pids)
    archive.archive_dead_worker(str(tmp_path), pids[0])
    expected = reference(tmp_path)
    write, raced = archive._write_archive, []

    def overtaken(path, files):
        write(path, files)
        if not raced:
            raced.append(path)
            archive.archive_dead_worker(str(tmp_path), pids[2])  # the other merger, in between

    monkeypatch.setattr(archive, "_write_archive", overtaken)
    assert archive.archive_dead_worker(str(tmp_path), pids[1]) == []
    assert reference(tmp_path) == expected
    assert (tmp_path / f"counter_{pids[1]}.db").exists() and not (tmp_path / f"counter_{pids[2]}.db").exists()
    monkeypatch.setattr(archive, "_write_archive", write)
    assert archive.archive_dead_worker(str(tmp_path), pids[1])
    assert reference(tmp_path) == expected and len(db_files(tmp_path)) == 2
