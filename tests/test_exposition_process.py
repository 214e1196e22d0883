"""The single-process renderer writes exactly what prometheus_client would."""

from flask import Flask
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from flask_mpesa_monitor import MPesaMonitor
from flask_mpesa_monitor.exposition import TEXT_CONTENT_TYPE, ProcessRenderer


def samples(text):
    return sorted((s.name, tuple(sorted(s.labels.items())), s.value)
                  for family in text_string_to_metric_families(text) for s in family.samples)


def test_process_renderer_matches_prometheus_client():
    registry = CollectorRegistry()
    counter = Counter("t_requests", "help with \\ and\nnewline", ["org", "path"], registry=registry)
    histogram = Histogram("t_seconds", "h", ["org"], buckets=(0.1, 1.0), registry=registry)
    gauge = Gauge("t_plain", "g", registry=registry)
    other = Counter("t_other", "not ours", registry=registry)
    counter.labels("acme", 'we"ird\\path\n').inc(3)
    histogram.labels("acme").observe(0.05)
    histogram.labels("acme").observe(5)
    histogram.labels("jambo")
    gauge.set(2.5)
    other.inc()
    renderer = ProcessRenderer(registry, [counter, histogram, gauge])
    for _ in range(2):  # the second scrape comes from the cached prefixes
        assert samples(renderer.render().decode()) == samples(generate_latest(registry).decode())
    counter.labels("acme", 'we"ird\\path\n').inc()
    assert samples(renderer.render().decode()) == samples(generate_latest(registry).decode())


def test_metrics_endpoint_uses_text_format_for_prometheus_accept_header():
    app = Flask(__name__)
    MPesaMonitor(app)
    prometheus_accept = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
                         "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
    response = app.test_client().get("/metrics", headers={"Accept": prometheus_accept})
    assert response.content_type == TEXT_CONTENT_TYPE
    assert "process_cpu_seconds_total" in response.text or "python_info" in response.text
    assert samples(response.text)


def test_process_renderer_falls_back_when_internals_are_not_there():
    """A metric object without the internals the renderer reads (as after a prometheus_client
    release that renamed them): every scrape then is prometheus_client's own rendering."""
    registry = CollectorRegistry()
    counter = Counter("t_fallback", "h", ["org"], registry=registry)
    counter.labels("acme").inc(2)

    class Renamed:  # a metric whose children and values live elsewhere
        _type, _name, _documentation, _labelnames = "counter", "t_renamed", "h", ("org",)

    renderer = ProcessRenderer(registry, [counter, Renamed()])
    for _ in range(2):
        assert renderer.render() == generate_latest(registry)
