"""Under a real gunicorn: pushes and callbacks on different workers, workers killed, the
whole server restarted between a push and its callback: every callback matches once."""

import os
import signal

import pytest
import requests
from test_transactions import callback

from examples.demo.servers import GunicornServer, wait_until

pytestmark = pytest.mark.slow


class KeepingGunicorn(GunicornServer):
    """Leaves the multiprocess directory to gunicorn's own start hook, as in production
    (the test launcher empties it before each start otherwise)."""

    def _before_start(self) -> None:
        self.multiproc_dir.mkdir(parents=True, exist_ok=True)


def _revenue(server, org):
    text = requests.get(f"{server.url}/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("mpesa_revenue_total{") and f'organization="{org}"' in line:
            total += float(line.rsplit(" ", 1)[1])
        assert not line.startswith("mpesa_revenue_unverified_total{") or f'organization="{org}"' not in line, line
    return total


def test_callbacks_match_across_workers_kills_and_a_restart(tmp_path):
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    server = KeepingGunicorn("tests.apps.stk_app:create_app()", workers=4, multiproc_dir=tmp_path / "prom",
                             cwd=repo, base_dir=tmp_path / "gunicorn", ready_path="/metrics",
                             env={"PYTHONPATH": str(repo)})
    try:
        server.start()
        pushes = {f"ws_CO_gu_{i:03d}": 10 + i for i in range(24)}
        workers_used = set()
        for checkout, amount in pushes.items():  # a new connection each: spread over workers
            answer = requests.post(f"{server.url}/orgs/gu-acme/stk-push",
                                   json={"checkout": checkout, "amount": amount}, timeout=10)
            workers_used.add(answer.json()["pid"])
        # Every worker that saw a push crashes: the callbacks reach other processes.
        before = set(server.worker_pids())
        for pid in before:
            os.kill(pid, signal.SIGKILL)
        wait_until(lambda: len(server.worker_pids()) == 4 and not before & set(server.worker_pids()), timeout=20)
        first, second = list(pushes)[:12], list(pushes)[12:]
        for checkout in first:
            for _ in range(2):  # Daraja retries
                requests.post(f"{server.url}/mpesa/callback/gu-acme",
                              json=callback(checkout, 0, amount=pushes[checkout]), timeout=10)
        assert _revenue(server, "gu-acme") == sum(pushes[c] for c in first)
        assert workers_used <= before
        server.restart()  # a deploy: the master's start hook runs again
        matches = []
        for checkout in second:
            for _ in range(2):
                answer = requests.post(f"{server.url}/mpesa/callback/gu-acme",
                                       json=callback(checkout, 0, amount=pushes[checkout]), timeout=10)
                matches.append(answer.json()["match"])
        assert matches == ["matched", "duplicate"] * len(second)
        # Metric files were cleared at the restart: only the callbacks since count.
        assert _revenue(server, "gu-acme") == sum(pushes[c] for c in second)
    finally:
        server.cleanup()
