"""No page without a fault: the local stack under the demo's normal traffic, a few minutes.

The traffic (examples/demo/traffic.py) is a normal day: sessions, a few wrong passwords,
cancellations, wrong PINs, 1037 timeouts, a slow tail of Daraja answers, many client
addresses. Nothing but the Watchdog may notify; ``HighResourceUsage`` only when this
test's own psutil reading confirms that the host was over the threshold (the alert
measures the real, shared machine). The longer soak, at fast and production intervals,
with false pages per hour, is bench/bench_soak.py.
"""

from __future__ import annotations

import os

import pytest

from bench.bench_soak import soak

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

#: Seconds of traffic (MPESA_SOAK_SECONDS to change): at --fast, 120 s stand for 30
#: minutes of the production clock.
SOAK_SECONDS = float(os.environ.get("MPESA_SOAK_SECONDS", "120"))


def test_soak_normal_traffic_pages_nobody(tmp_path):
    report = soak(SOAK_SECONDS, fast=True, rps=5.0, state_dir=tmp_path / "local-stack")

    assert report.watchdog_pings > 0, "the alerting pipeline never pinged the Watchdog: nothing was watched"
    assert "connection_errors=0" in report.traffic and "server_errors=0" in report.traffic, report.traffic
    assert not report.false_pages, report.summary() + "\n" + "\n".join(
        f"{m['channel']} {m.get('status')} {m.get('alertnames')} ({m.get('organization')}): {m['text'][:160]!r}"
        for m in report.false_pages)
