"""``/metrics`` compresses exactly when the scraper's ``Accept-Encoding`` allows gzip.

Decided by the header's parsed qualities (RFC 9110 12.5.3): ``gzip;q=0`` and a ``*;q=0``
refuse it, ``*`` allows it. prometheus_client's ``gzip_accepted`` only looks for the
token, so the parsed header goes first and ``gzip_accepted`` breaks no tie.
"""

import gzip

import pytest
from flask import Flask

from flask_mpesa_monitor import MPesaMonitor


@pytest.fixture(scope="module")
def client():
    app = Flask(__name__)
    MPesaMonitor(app)
    return app.test_client()


@pytest.mark.parametrize("header", ["gzip", "GZIP", "gzip, deflate", "br;q=1.0, gzip;q=0.8, *;q=0.1", "*",
                                    "deflate, gzip;q=0.5"])
def test_metrics_gzip_when_accepted(client, header):
    response = client.get("/metrics", headers={"Accept-Encoding": header})
    assert response.headers.get("Content-Encoding") == "gzip"
    assert b"mpesa_mcp_build_info" in gzip.decompress(response.data)
    assert "Accept-Encoding" in response.headers["Vary"]


@pytest.mark.parametrize("header", ["gzip;q=0", "GZIP; q=0.0", "identity", "", "gzip;q=0, *", "*;q=0",
                                    "x-notgzip", "deflate"])
def test_metrics_plain_when_gzip_refused(client, header):
    response = client.get("/metrics", headers={"Accept-Encoding": header})
    assert "Content-Encoding" not in response.headers
    assert b"mpesa_mcp_build_info" in response.data
