"""MultiProcessRenderer gives the samples prometheus_client's MultiProcessCollector gives.

Worker processes write real multiprocess files (counters, histograms, summaries, gauges
of every multiprocess mode, a label value that needs escaping); the renderer's output,
cold and warm, is compared sample by sample with MultiProcessCollector + generate_latest,
also after more workers wrote and after one was marked dead.
"""

import subprocess
import sys

from prometheus_client import CollectorRegistry, generate_latest, multiprocess
from prometheus_client.parser import text_string_to_metric_families

from flask_mpesa_monitor.exposition import MetricsExporter, MultiProcessRenderer

WORKER = r'''
import sys
from prometheus_client import Counter, Gauge, Histogram, Summary
w = int(sys.argv[1])
c = Counter("eq_requests", "Requests.", ["org", "path"])
h = Histogram("eq_latency_seconds", "Latency\nwith \\ a backslash.", ["org"], buckets=(0.1, 1, 5))
s = Summary("eq_size_bytes", "Sizes.", ["org"])
modes = ("all", "liveall", "min", "livemin", "max", "livemax", "sum", "livesum", "mostrecent", "livemostrecent")
gauges = {m: Gauge(f"eq_gauge_{m}", f"Gauge {m}.", ["org"], multiprocess_mode=m) for m in modes}
for i in range(4 + w):
    org = f"org-{i}" if i != 2 else 'we"ird\\org\nx'
    c.labels(org, "/pay").inc(i + w)
    h.labels(org).observe(0.05 * (i + 1) * (w + 1))
    s.labels(org).observe(10 * i)
    for g in gauges.values():
        g.labels(org).set(i * 10 + w)
'''


def _workers(directory, ids):
    env = {"PROMETHEUS_MULTIPROC_DIR": str(directory), "PATH": "/usr/bin:/bin"}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(w)], env=env) for w in ids]
    assert [p.wait(timeout=60) for p in procs] == [0] * len(procs)
    return [p.pid for p in procs]


def _samples(body):
    return {
        (family.name, family.type, family.documentation, s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def _reference(directory):
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(directory))
    return _samples(generate_latest(registry))


def test_multiprocess_renderer_same_samples_as_prometheus_client(tmp_path):
    renderer = MultiProcessRenderer(str(tmp_path))
    first = _workers(tmp_path, [0, 1])
    assert _samples(renderer.render()) == _reference(tmp_path)
    assert _samples(renderer.render()) == _reference(tmp_path)  # warm cache
    _workers(tmp_path, [2])  # a new file, and new entries for known keys
    expected = _reference(tmp_path)
    assert _samples(renderer.render()) == expected
    assert len(expected) > 100
    multiprocess.mark_process_dead(first[0], str(tmp_path))  # its live gauges go
    after_death = _reference(tmp_path)
    assert after_death != expected
    assert _samples(renderer.render()) == after_death
    assert _samples(MultiProcessRenderer(str(tmp_path)).render()) == after_death


def test_multiprocess_exporter_answers_text_unless_only_openmetrics_accepted(tmp_path, monkeypatch):
    _workers(tmp_path, [0])
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    exporter = MetricsExporter()
    prometheus = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
                  "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
    for accept in (None, "text/plain", prometheus):
        body, content_type = exporter.render(accept)
        assert content_type.startswith("text/plain; version=0.0.4")
        assert _samples(body) == _reference(tmp_path)
    body, content_type = exporter.render("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text") and body.endswith(b"# EOF\n")


def test_unexpected_file_layout_falls_back_to_prometheus_client(tmp_path, monkeypatch):
    """A renderer that expects another entry size than the files have (as a prometheus_client
    release changing its layout would cause) is detected by the probe, and every scrape then
    goes through MultiProcessCollector: same samples, text and OpenMetrics."""
    from flask_mpesa_monitor import exposition

    _workers(tmp_path, [0, 1])
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    assert exposition.multiprocess_layout_supported()
    assert not MetricsExporter().fallback
    monkeypatch.setattr(exposition, "_ENTRY_VALUE_BYTES", 8)  # the layout of prometheus_client 0.17
    assert not exposition.multiprocess_layout_supported()
    exporter = MetricsExporter()
    assert exporter.fallback
    body, content_type = exporter.render(None)
    assert content_type.startswith("text/plain")
    assert _samples(body) == _reference(tmp_path)
    body, content_type = exporter.render("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text") and b"eq_requests_total" in body
