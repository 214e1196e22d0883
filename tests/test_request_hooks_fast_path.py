"""The request hooks' value-level fast path records what the public API would."""

from metric_values import value

from flask_mpesa_monitor import metrics
from flask_mpesa_monitor.request_hooks import RequestMetrics, _fast_path


def test_request_fast_path_finds_prometheus_client_values():
    counter = metrics.requests_total.labels("GET", "/fast-path", "200", "acme")
    histogram = metrics.request_duration_seconds.labels("GET", "/fast-path", "acme")
    assert _fast_path(counter, histogram) is not None
    assert _fast_path(counter, object()) is None  # unknown internals: the public API is used


def test_request_fast_path_fills_the_buckets_le_inclusive():
    labels = {"method": "GET", "endpoint": "/fast-buckets", "organization": "bucketco"}
    les = ("0.25", "0.5", "5.0", "10.0", "+Inf")

    def snapshot():
        return {le: value("mpesa_mcp_request_duration_seconds_bucket", le=le, **labels) for le in les}

    before = snapshot()
    record = RequestMetrics(frozenset(), "X-Organization-ID")._recorder_for(("GET", "/fast-buckets", 200, "bucketco"))
    record(0.3)
    record(5.0)  # exactly on a boundary: counted in le="5.0" (upper bounds are inclusive)
    after = snapshot()
    assert {le: after[le] - before[le] for le in les} == {"0.25": 0, "0.5": 1, "5.0": 2, "10.0": 2, "+Inf": 2}
    assert value("mpesa_mcp_request_duration_seconds_sum", **labels) >= 5.3
    assert value("mpesa_mcp_requests_total", status="200", **labels) >= 2


def test_without_the_internals_the_public_api_records_the_same(monkeypatch):
    """A prometheus_client release without the value objects read by the fast path: the
    recorder built for a key uses ``inc``/``observe`` and counts the same."""
    from flask_mpesa_monitor import request_hooks

    monkeypatch.setattr(request_hooks, "_fast_path", lambda counter, histogram: None)
    labels = {"method": "GET", "endpoint": "/public-path", "organization": "publicco"}
    count = value("mpesa_mcp_requests_total", status="200", **labels)
    bucket = value("mpesa_mcp_request_duration_seconds_bucket", le="0.5", **labels)
    record = RequestMetrics(frozenset(), "X-Organization-ID")._recorder_for(("GET", "/public-path", 200, "publicco"))
    record(0.3)
    assert value("mpesa_mcp_requests_total", status="200", **labels) == count + 1
    assert value("mpesa_mcp_request_duration_seconds_bucket", le="0.5", **labels) == bucket + 1
