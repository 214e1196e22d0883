"""The request hooks' cached recorders count what prometheus_client's public API counts."""

from flask_mpesa_monitor.request_hooks import RequestMetrics

from metric_values import value


def test_request_recorder_fills_the_buckets_le_inclusive():
    labels = {"method": "GET", "endpoint": "/fast-buckets", "organization": "bucketco"}
    les = ("0.25", "0.5", "5.0", "10.0", "+Inf")

    def snapshot():
        return {le: value("mpesa_mcp_request_duration_seconds_bucket", le=le, **labels) for le in les}

    before = snapshot()
    hooks = RequestMetrics(frozenset(), "X-Organization-ID")
    record = hooks._recorder_for(("GET", "/fast-buckets", 200, "bucketco"))
    record(0.3)
    record(5.0)  # exactly on a boundary: counted in le="5.0" (upper bounds are inclusive)
    after = snapshot()
    assert {le: after[le] - before[le] for le in les} == {"0.25": 0, "0.5": 1, "5.0": 2, "10.0": 2, "+Inf": 2}
    assert value("mpesa_mcp_request_duration_seconds_sum", **labels) >= 5.3
    assert value("mpesa_mcp_requests_total", status="200", **labels) >= 2
    assert hooks._children[("GET", "/fast-buckets", 200, "bucketco")] is record  # cached for the next request


def test_junk_methods_are_counted_as_other_and_not_cached():
    hooks = RequestMetrics(frozenset(), "X-Organization-ID")
    before = value("mpesa_mcp_requests_total", method="other", endpoint="/junk", status="405", organization="junkco")
    hooks._recorder_for(("BREW", "/junk", 405, "junkco"))(0.01)
    assert value("mpesa_mcp_requests_total", method="other", endpoint="/junk", status="405",
                 organization="junkco") == before + 1
    assert not [key for key in hooks._children if key[0] == "BREW"]
