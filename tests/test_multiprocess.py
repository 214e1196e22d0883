"""/metrics under a real gunicorn with several workers adds up every worker's counts."""

import re

import pytest
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


def _pay_total(text):
    return sum(float(m.group(1)) for m in re.finditer(
        r'^mpesa_mcp_requests_total\{[^}]*endpoint="/orgs/<org_id>/pay"[^}]*\} (\S+)$', text, re.M))


def _pay_histogram_count(text):
    return sum(float(m.group(1)) for m in re.finditer(
        r'^mpesa_mcp_request_duration_seconds_count\{[^}]*endpoint="/orgs/<org_id>/pay"[^}]*\} (\S+)$', text, re.M))


@pytest.mark.slow
def test_workers_recycled_by_max_requests_counts_exact_and_files_bounded(tmp_path):
    """Dozens of workers come and go (``max_requests``); each dead one is folded into the
    archive in ``child_exit``: counts stay exact, never go back, and the directory keeps a
    bounded number of files instead of two more per worker that ever ran."""
    workers, max_requests, total = 2, 25, 1000
    directory = tmp_path / "prom"
    server = GunicornServer("tests.apps.monitored:create_app()", workers=workers, multiproc_dir=directory,
                            base_dir=tmp_path / "run", ready_path="/health",
                            extra_args=["--max-requests", str(max_requests), "--max-requests-jitter", "0"])
    pids, seen_totals, most_files = set(), [], 0
    with server, requests.Session() as scraper:
        for i in range(total):
            # a new connection each time: sync workers serve one connection per request anyway
            response = requests.get(f"{server.url}/orgs/org{i % 5}/pay", timeout=10)
            assert response.status_code == 200
            pids.add(response.json()["pid"])
            if i % 50 == 49:
                text = scraper.get(f"{server.url}/metrics", timeout=10).text
                seen_totals.append(_pay_total(text))
                most_files = max(most_files, len(list(directory.glob("*.db"))))
        text = scraper.get(f"{server.url}/metrics", timeout=10).text
        archives = sorted(p.name.split("-")[0] for p in directory.glob("*_archive-*.db"))
        counter_files = len(list(directory.glob("counter_*.db")))
        histogram_files = len(list(directory.glob("histogram_*.db")))
    assert _pay_total(text) == total and _pay_histogram_count(text) == total
    assert seen_totals == sorted(seen_totals)  # never backwards, through every merge
    assert all(t >= 50 * (n + 1) for n, t in enumerate(seen_totals))  # each scrape saw all requests before it
    assert len(pids) >= 30  # dozens of workers came and went ...
    assert archives == ["counter_archive", "histogram_archive"]
    # ... and the directory holds the live workers' files plus one archive per kind
    assert counter_files <= workers + 1 and histogram_files <= workers + 1
    assert most_files <= 2 + workers * 8
