"""/metrics under a real gunicorn with several workers adds up every worker's counts."""

import re

import requests

from examples.demo.servers import GunicornServer


def test_gunicorn_three_workers_300_requests_counted_once_each(tmp_path):
    server = GunicornServer("tests.apps.monitored:create_app()", workers=3,
                            multiproc_dir=tmp_path / "prom", base_dir=tmp_path / "run", ready_path="/health")
    with server:
        pids = set()
        with requests.Session() as session:
            for i in range(300):
                # a new connection each time so that requests spread over the workers
                response = requests.get(f"{server.url}/orgs/org{i % 3}/pay", timeout=10)
                assert response.status_code == 200
                pids.add(response.json()["pid"])
            text = session.get(f"{server.url}/metrics", timeout=10).text
    total = sum(
        float(m.group(1))
        for m in re.finditer(r'^mpesa_mcp_requests_total\{[^}]*endpoint="/orgs/<org_id>/pay"[^}]*\} (\S+)$', text, re.M)
    )
    assert total == 300
    assert len(pids) >= 2  # the count really came from several worker processes
    in_progress = re.search(r"^mpesa_mcp_requests_in_progress (\S+)$", text, re.M)
    assert in_progress and float(in_progress.group(1)) == 0  # livesum over live workers
    assert "mpesa_mcp_build_info" in text
