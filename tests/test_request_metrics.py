import pytest
from flask import Flask, g
from metric_values import Delta, value

from flask_mpesa_monitor import MPesaMonitor


@pytest.fixture
def app():
    app = Flask(__name__)
    MPesaMonitor(app)

    @app.route("/orgs/<org_id>/pay", methods=["GET", "POST", "PURGE"])
    def pay(org_id):
        return {"org": org_id}

    @app.get("/organizations/<organization_id>/balance")
    def balance(organization_id):
        return {"org": organization_id}

    @app.get("/ping")
    def ping():
        return "pong"

    @app.get("/crash")
    def crash():
        raise KeyError("boom")

    return app


@pytest.fixture
def client(app):
    return app.test_client()


def requests_total(**labels):
    return Delta("mpesa_mcp_requests_total", **labels)


def test_request_counted_by_url_rule_and_org_argument(client):
    count = requests_total(method="GET", endpoint="/orgs/<org_id>/pay", status="200", organization="acme")
    hist = Delta("mpesa_mcp_request_duration_seconds_count",
                 method="GET", endpoint="/orgs/<org_id>/pay", organization="acme")
    for _ in range(3):
        assert client.get("/orgs/acme/pay").status_code == 200
    assert count.change() == 3
    assert hist.change() == 3


def test_request_organization_id_argument(client):
    count = requests_total(method="GET", endpoint="/organizations/<organization_id>/balance",
                           status="200", organization="jambo")
    client.get("/organizations/jambo/balance")
    assert count.change() == 1


def test_request_organization_from_header(client):
    count = requests_total(method="GET", endpoint="/ping", status="200", organization="duka")
    client.get("/ping", headers={"X-Organization-ID": "duka"})
    assert count.change() == 1


def test_request_view_argument_wins_over_header(client):
    count = requests_total(method="GET", endpoint="/orgs/<org_id>/pay", status="200", organization="acme")
    client.get("/orgs/acme/pay", headers={"X-Organization-ID": "evil"})
    assert count.change() == 1


def test_request_resolver_wins_over_view_argument_and_header():
    app = Flask(__name__)
    monitor = MPesaMonitor(app)

    @monitor.organization_resolver
    def from_user():
        return getattr(g, "user_org", None)

    @app.get("/orgs/<org_id>/resolved")
    def resolved(org_id):
        g.user_org = "safari"
        return "ok"

    count = requests_total(method="GET", endpoint="/orgs/<org_id>/resolved", status="200", organization="safari")
    app.test_client().get("/orgs/acme/resolved", headers={"X-Organization-ID": "x"})
    assert count.change() == 1


def test_request_custom_organization_header():
    app = Flask(__name__)
    app.config["MPESA_MONITOR_ORGANIZATION_HEADER"] = "X-Tenant"

    @app.get("/tenant-header")
    def view():
        return "ok"

    MPesaMonitor(app)
    count = requests_total(method="GET", endpoint="/tenant-header", status="200", organization="acme")
    app.test_client().get("/tenant-header", headers={"X-Tenant": "acme"})
    assert count.change() == 1


def test_request_failing_resolver_does_not_break_the_request():
    app = Flask(__name__)
    monitor = MPesaMonitor(app)
    monitor.organization_resolver(lambda: 1 / 0)

    @app.get("/resolver-fails")
    def view():
        return "ok"

    count = requests_total(method="GET", endpoint="/resolver-fails", status="200", organization="unknown")
    assert app.test_client().get("/resolver-fails").status_code == 200
    assert count.change() == 1


def test_request_unmatched_404_uses_no_raw_path(client):
    count = requests_total(method="GET", endpoint="unmatched", status="404", organization="unknown")
    client.get("/no/such/path/123")
    assert count.change() == 1
    assert "/no/such/path" not in client.get("/metrics").text


def test_request_unknown_method_becomes_other(client):
    count = requests_total(method="other", endpoint="/orgs/<org_id>/pay", status="200", organization="acme")
    client.open("/orgs/acme/pay", method="PURGE")
    assert count.change() == 1


def test_request_unhandled_exception_counts_500_and_is_reraised_unchanged(app, client):
    app.testing = True  # exceptions propagate to the caller
    count = requests_total(method="GET", endpoint="/crash", status="500", organization="unknown")
    in_progress = value("mpesa_mcp_requests_in_progress")
    with pytest.raises(KeyError, match="boom"):
        client.get("/crash")
    assert count.change() == 1
    assert value("mpesa_mcp_requests_in_progress") == in_progress


def test_request_unhandled_exception_in_production_mode_counts_500_once(app, client):
    app.testing = False
    count = requests_total(method="GET", endpoint="/crash", status="500", organization="unknown")
    assert client.get("/crash").status_code == 500
    assert count.change() == 1


def test_request_excluded_paths_not_counted(client):
    before = sum(
        value("mpesa_mcp_requests_total", method="GET", endpoint=path, status="200", organization="unknown")
        for path in ("/metrics", "/health")
    )
    client.get("/metrics")
    client.get("/health")
    after = sum(
        value("mpesa_mcp_requests_total", method="GET", endpoint=path, status="200", organization="unknown")
        for path in ("/metrics", "/health")
    )
    assert before == after == 0


def test_request_excluded_paths_setting():
    app = Flask(__name__)
    app.config["MPESA_MONITOR_EXCLUDED_PATHS"] = ["/ping-excluded"]

    @app.get("/ping-excluded")
    def view():
        return "ok"

    MPesaMonitor(app)
    count = requests_total(method="GET", endpoint="/ping-excluded", status="200", organization="unknown")
    app.test_client().get("/ping-excluded")
    assert count.change() == 0


def test_request_in_progress_gauge_counts_running_requests():
    app = Flask(__name__)
    MPesaMonitor(app)
    seen = []

    @app.get("/slow-in-progress")
    def view():
        seen.append(value("mpesa_mcp_requests_in_progress"))
        return "ok"

    before = value("mpesa_mcp_requests_in_progress")
    app.test_client().get("/slow-in-progress")
    assert seen == [before + 1]
    assert value("mpesa_mcp_requests_in_progress") == before


def test_request_buckets_have_boundaries_for_the_alerts():
    from flask_mpesa_monitor import metrics

    assert 1.0 in metrics.REQUEST_BUCKETS and 5.0 in metrics.REQUEST_BUCKETS
    assert metrics.REQUEST_BUCKETS[0] == 0.01 and metrics.REQUEST_BUCKETS[-1] == 30.0
    assert len(metrics.REQUEST_BUCKETS) <= 12
