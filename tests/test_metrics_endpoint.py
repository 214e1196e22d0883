import base64

import pytest
from flask import Flask

from flask_mpesa_monitor import MPesaMonitor


def make_client(**config):
    app = Flask(__name__)
    app.config.update(config)
    MPesaMonitor(app)
    return app.test_client()


def test_metrics_text_format_by_default():
    response = make_client().get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain; version=0.0.4")
    assert "# TYPE mpesa_mcp_requests_total counter" in response.text
    assert "mpesa_mcp_build_info{version=" in response.text


def test_metrics_openmetrics_when_asked():
    response = make_client().get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.content_type.startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")


def test_metrics_bearer_token():
    client = make_client(MPESA_MONITOR_METRICS_TOKEN="s3cret-token")
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
    denied = client.get("/metrics")
    assert "WWW-Authenticate" in denied.headers and "s3cret" not in denied.text


@pytest.mark.parametrize("credentials, status", [("prom:pass:word", 200), ("prom:nope", 401), ("other:pass:word", 401)])
def test_metrics_basic_auth(credentials, status):
    client = make_client(MPESA_MONITOR_METRICS_BASIC_AUTH="prom:pass:word")
    header = "Basic " + base64.b64encode(credentials.encode()).decode()
    assert client.get("/metrics", headers={"Authorization": header}).status_code == status


def test_metrics_basic_auth_garbage_header_is_401():
    client = make_client(MPESA_MONITOR_METRICS_BASIC_AUTH="prom:pw")
    assert client.get("/metrics", headers={"Authorization": "Basic !!!notbase64"}).status_code == 401


def test_metrics_gzip_when_the_scraper_accepts_it():
    import gzip

    client = make_client()
    plain = client.get("/metrics")
    packed = client.get("/metrics", headers={"Accept-Encoding": "gzip"})
    assert packed.headers["Content-Encoding"] == "gzip" and "Content-Encoding" not in plain.headers
    assert b"mpesa_mcp_build_info" in gzip.decompress(packed.data)
    assert len(packed.data) < len(plain.data)
