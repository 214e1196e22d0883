"""No page without a fault: the local stack under the demo's normal traffic, a few minutes.

The traffic (examples/demo/traffic.py) is a normal day: sessions, a few wrong passwords,
cancellations, wrong PINs, 1037 timeouts, a slow tail of Daraja answers, many client
addresses. Nothing but the Watchdog may notify; ``HighResourceUsage`` only when this
test's own psutil reading confirms that the host was over the threshold (the alert
measures the real, shared machine). The longer soak, at fast and production intervals,
with false pages per hour, is bench/bench_soak.py.

The soak has a stack of its own, in which nothing is injected. It runs in a thread
(conftest.py's ``soak_in_background``), started with the end-to-end stack when the
session runs tests/test_e2e.py too, so that the two run side by side.
"""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def test_soak_normal_traffic_pages_nobody(soak_in_background):
    wanted = soak_in_background.seconds  # conftest.py's SOAK_SECONDS (MPESA_SOAK_SECONDS)
    # Bounded: the stack's start and stop, the traffic, the last notifications.
    report = soak_in_background.result(timeout=wanted + 600)
    print("\n" + "\n".join(soak_in_background.lines))

    assert report.seconds >= wanted * 0.95, f"the soak ran {report.seconds:.0f}s of {wanted:g}s"
    assert report.watchdog_pings > 0, "the alerting pipeline never pinged the Watchdog: nothing was watched"
    assert "connection_errors=0" in report.traffic and "server_errors=0" in report.traffic, report.traffic
    assert not report.false_pages, report.summary() + "\n" + "\n".join(
        f"{m['channel']} {m.get('status')} {m.get('alertnames')} ({m.get('organization')}): {m['text'][:160]!r}"
        for m in report.false_pages)
