"""Under gunicorn the health thread runs in each worker, never in the master, once per interval."""

import time

import pytest
import requests

from examples.demo.servers import wait_until

pytestmark = pytest.mark.slow

INTERVAL = 0.5


def test_health_checks_run_per_worker_after_fork_not_in_the_master(gunicorn_factory, tmp_path):
    counts = tmp_path / "counts"
    counts.mkdir()
    # --preload: the app (and the extension) are created in the master before the fork
    server = gunicorn_factory("tests.apps.health_app:app", workers=2, multiproc_dir=tmp_path / "prom",
                              extra_args=["--preload"],
                              env={"HEALTH_COUNT_DIR": str(counts), "HEALTH_INTERVAL": str(INTERVAL)})
    workers = set(wait_until(lambda: len(server.worker_pids()) == 2 and server.worker_pids(), timeout=10))

    def every_worker_served():
        # new connections spread over the workers; each worker starts its thread on its first request
        served = {int(requests.get(server.url, timeout=5).text) for _ in range(10)}
        return workers <= served

    wait_until(every_worker_served, timeout=15, interval=0.1)
    started = time.monotonic()
    wait_until(lambda: all((counts / str(pid)).exists() for pid in workers), timeout=5)
    time.sleep(4 * INTERVAL)
    elapsed = time.monotonic() - started

    ran = {int(path.name) for path in counts.iterdir() if path.name.isdigit()}
    assert ran == workers, f"checks ran in {ran}, workers are {workers} (master {server.process.pid})"
    for pid in workers:
        times = [float(line) for line in (counts / str(pid)).read_text().split()]
        assert 2 <= len(times) <= elapsed / INTERVAL + 2
        gaps = [later - earlier for earlier, later in zip(times, times[1:])]
        assert min(gaps) >= INTERVAL * 0.8, f"worker {pid} ran twice within one interval: {gaps}"
    metrics = requests.get(f"{server.url}/metrics", timeout=5).text
    assert 'mpesa_health_check_status{check="database"} 1.0' in metrics
