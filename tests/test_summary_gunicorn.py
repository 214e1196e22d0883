"""/metrics/summary adds up across two real gunicorn workers (SQLite beside the multiprocess dir)."""

import json
import threading
import urllib.request

import pytest
import requests

from examples.demo.servers import wait_until

pytestmark = pytest.mark.slow


def test_summary_two_gunicorn_workers_add_up(gunicorn_factory, tmp_path):
    server = gunicorn_factory("tests.apps.summary_app:app", workers=2, multiproc_dir=tmp_path / "prom",
                              env={"SUMMARY_RENDEZVOUS_DIR": str(tmp_path / "rendezvous")})
    answers = []

    def pay(org, user):
        request = urllib.request.Request(f"{server.url}/pay/{org}?amount=100&token=both", method="POST",
                                         headers={"X-User": user})
        with urllib.request.urlopen(request, timeout=10) as response:
            answers.append(response.read())

    threads = [threading.Thread(target=pay, args=("acme", user)) for user in ("alice", "bob")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(15)
    pids = {int(pid) for answer in answers for pid in json.loads(answer)["pids"]}
    assert len(answers) == 2 and len(pids) == 2, "the two payments were not served by two workers"

    for query, user in (("amount=50", "carol"), ("amount=50", "alice"),
                        ("outcome=customer_cancelled", "carol"), ("outcome=pending", "dan")):
        # a new connection each time: the requests spread over the workers
        assert requests.post(f"{server.url}/pay/duka?{query}", headers={"X-User": user}, timeout=10).ok

    expected = {"total_organizations": 2, "active_users": 4, "transactions_24h": 5, "revenue_24h": 300.0,
                "success_rate_24h": 80.0}
    seen_by: dict[int, dict] = {}

    def every_worker_agrees():
        response = requests.get(f"{server.url}/metrics/summary", timeout=10)
        figures = {key: response.json()[key] for key in expected}
        seen_by[int(response.headers["X-Worker-Pid"])] = figures
        return len(seen_by) == 2 and all(f == expected for f in seen_by.values())

    wait_until(every_worker_agrees, timeout=15, interval=0.1,
               description="both workers report the summed figures")
    duka = requests.get(f"{server.url}/metrics/summary?organization=duka", timeout=10).json()
    assert (duka["transactions_24h"], duka["revenue_24h"], duka["success_rate_24h"]) == (3, 100.0, 66.7)
    assert duka["active_users"] == 3  # carol, alice and dan (whose payment is still pending)
    assert (tmp_path / "prom.summary.sqlite").exists()
