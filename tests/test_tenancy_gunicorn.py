"""The organization bound holds for a whole host: 4 real gunicorn workers, an attacker's
random organizations far past the bound, and every worker killed several times."""

from __future__ import annotations

import os
import random
import re
import signal
import string

import pytest
import requests

from examples.demo.servers import wait_until

pytestmark = pytest.mark.slow

BOUND = 20
WORKERS = 4
ROUNDS = 3


def _organizations(metrics_text: str) -> set[str]:
    return set(re.findall(r'organization="([^"]*)"', metrics_text)) - {"unknown", "other"}


def test_organization_bound_holds_for_the_host_across_worker_restarts(gunicorn_factory, tmp_path):
    server = gunicorn_factory("tests.apps.bounded:app", workers=WORKERS, multiproc_dir=tmp_path / "prom",
                              env={"BOUND": str(BOUND), "KNOWN": "acme,globex"}, ready_path="/orgs/acme/pay")
    rng = random.Random(20261201)
    session = requests.Session()
    seen_pids: set[int] = set()

    def attack(count: int) -> None:
        for _ in range(count):
            org = "".join(rng.choice(string.ascii_lowercase) for _ in range(10))
            response = session.get(f"{server.url}/orgs/{org}/pay", headers={"Connection": "close"}, timeout=10)
            assert response.status_code == 200
            seen_pids.add(response.json()["pid"])

    attack(150)
    for _ in range(ROUNDS):  # bounded: 3 rounds of killing every worker
        old = set(server.worker_pids())
        assert len(old) == WORKERS
        for pid in old:
            os.kill(pid, signal.SIGKILL)
        wait_until(lambda old=old: len(server.worker_pids()) == WORKERS and not old & set(server.worker_pids()),
                   timeout=30, interval=0.1, description="gunicorn replaced every killed worker")
        attack(150)
    assert len(seen_pids) > WORKERS, "the requests never reached the restarted workers"

    # A known tenant's first request after the attack is still its own; a tenant that was
    # not known and arrives after the bound is full is `other`, on every worker.
    for org in ["globex", "latecomer"] * (2 * WORKERS):
        session.get(f"{server.url}/orgs/{org}/pay", headers={"Connection": "close"}, timeout=10)
    status, body = server.get("/metrics")
    assert status == 200
    organizations = _organizations(body.decode())
    assert {"acme", "globex"} <= organizations and "latecomer" not in organizations
    assert len(organizations) == BOUND, sorted(organizations)
