"""Notifications per alert and samples lost through the HA layout (examples/demo/hastack.py).

The loopback HA stack of tests/test_ha.py (two app hosts, two Prometheus 2.42 replicas,
two Alertmanager 0.25 peers, VictoriaMetrics 1.79; 1 s scrapes), three rounds of the same
fault (app host 2 away: MPesaMCPDown, critical: Slack, e-mail, SMS):

- ``both up``: every channel's notifications for the fault;
- ``prometheus killed``: replica 1 SIGKILLed as the fault begins;
- ``alertmanager killed``: replica 1 SIGKILLed as the fault begins and Alertmanager 1
  SIGKILLed right after the first page, before the resolution;

and one outage of replica 2 (10 s) during which the samples of app host 1 that the
surviving replica took are looked up in VictoriaMetrics. Counts, not timings.
"""

from __future__ import annotations

import time
from typing import Any

from .common import Result, Target, fmt

ALERT = "MPesaMCPDown"
QUIET = 6.0


def _wait(stack: Any, status: str, channels: tuple[str, ...], timeout: float = 45.0) -> None:
    from examples.demo.servers import wait_until

    wait_until(lambda: all(stack.notifications(ALERT)[c][status] >= 1 for c in channels), timeout=timeout,
               interval=0.3, description=f"{status} {ALERT}")


def _round(stack: Any, kill_prometheus: bool, kill_alertmanager: bool) -> dict[str, dict[str, int]]:
    from examples.demo.servers import wait_until

    stack.clear()
    stack.apps[1].stop()
    if kill_prometheus:
        stack.prometheus[0].kill()
    try:
        _wait(stack, "firing", ("slack", "email", "sms"))
        if kill_alertmanager:
            stack.alertmanager[0].kill()
        time.sleep(QUIET)
    finally:
        stack.apps[1].start()
    _wait(stack, "resolved", ("slack", "email"))
    time.sleep(QUIET)
    counts = stack.notifications(ALERT)
    for channel, pages in stack.pages(ALERT).items():
        counts[channel]["pages"] = pages
    if kill_alertmanager:
        stack.alertmanager[0].start()
        stack.wait_cluster_ready()
    if kill_prometheus:
        stack.start_prometheus(0)
    stack.wait_scraping()
    wait_until(lambda: all(not p.firing(ALERT) for p in stack.prometheus), timeout=60, interval=0.5)
    return counts


def _outage(stack: Any, seconds: float = 10.0) -> dict[str, Any]:
    vm, survivor = stack.victoria_metrics, stack.prometheus[0]
    selector = f'up{{job="mpesa-mcp",instance="{stack.instance(0)}"}}'
    start = time.time()
    time.sleep(3)
    down = time.time()
    stack.prometheus[1].kill()
    time.sleep(seconds)
    up = time.time()
    stack.start_prometheus(1)
    time.sleep(3)
    end = time.time()
    time.sleep(3)
    vm.flush()
    [kept] = vm.export(selector, start, end)
    kept_ts = [t / 1000 for t in kept["timestamps"]]
    [taken] = survivor.api("query", {"query": f"{selector}[{int(end - start) + 2}s]", "time": end})["result"]
    taken_ts = [float(t) for t, _ in taken["values"] if start <= float(t) <= end]
    during = [t for t in taken_ts if down <= t <= up]
    missing = [t for t in during if not any(abs(t - k) < 1.0 for k in kept_ts)]
    return {"survivor_samples": len(taken_ts), "vm_samples": len(kept_ts), "outage_samples": len(during),
            "missing": len(missing), "outage_s": up - down}


def run() -> Result:
    from examples.demo.hastack import HAStack

    started = time.monotonic()
    with HAStack() as stack:
        rounds = {
            "both replicas up": _round(stack, False, False),
            "one Prometheus killed at the fault": _round(stack, True, False),
            "one Prometheus killed, then one Alertmanager": _round(stack, True, True),
        }
        outage = _outage(stack)
    rows = []
    for name, counts in rounds.items():
        rows.append([name] + [f"{counts[c]['pages']} / {counts[c]['firing']} / "
                              f"{counts[c]['resolved'] if c != 'sms' else '-'}" for c in ("slack", "email", "sms")])
    result = Result(
        key="ha",
        title="8. The HA layout: notifications per alert, samples kept while a replica is down",
        method=("examples/demo/hastack.py on 127.0.0.1: two app hosts (gunicorn, 2 workers each), two Prometheus "
                "2.42 replicas (1 s scrapes, `replica` dropped from alerts and remote-written samples), two "
                "Alertmanager 0.25 peers in one gossip cluster, VictoriaMetrics 1.79 "
                "(-dedup.minScrapeInterval=1s). The fault: app host 2 stops (MPesaMCPDown, critical); it comes "
                "back after the first page. Notifications are counted per channel (pages = FIRING before the "
                "first RESOLVED / all FIRING / RESOLVED; the SMS relay gets firing alerts only) until 6 s after "
                "the last one; group_interval 15 s, peer timeout 250 ms (the production ratio, 5 %: "
                "examples/demo/hastack.py says why it matters). Then replica 2 is killed for "
                f"{outage['outage_s']:.0f} s and every sample replica 1 took of app host 1 meanwhile is looked "
                "up in VictoriaMetrics (`/api/v1/export`, after de-duplication)."),
        header=["round", "Slack", "e-mail", "SMS"],
        rows=rows,
        data={"rounds": rounds, "outage": outage},
    )
    both = rounds["both replicas up"]
    result.targets.append(Target(
        "one page per channel, both replicas up", "exactly 1 FIRING per channel",
        ", ".join(f"{c} {both[c]['pages']} (+{both[c]['firing'] - both[c]['pages']} after the resolution)"
                  for c in ("slack", "email", "sms")),
        all(both[c]["pages"] == 1 for c in ("slack", "email", "sms"))))
    worst = max(r[c]["firing"] for r in list(rounds.values())[1:] for c in ("slack", "email", "sms"))
    least = min(r[c]["firing"] for r in list(rounds.values())[1:] for c in ("slack", "email", "sms"))
    result.targets.append(Target(
        "notifications with a replica killed mid-fault", "at least 1, at most 2 per channel",
        f"{least}..{worst} per channel", 1 <= least and worst <= 2))
    result.targets.append(Target(
        "samples missing in VictoriaMetrics while a replica is down", "0",
        f"{outage['missing']} of {outage['outage_samples']} ({outage['vm_samples']} kept vs "
        f"{outage['survivor_samples']} taken by one replica over the window)", outage["missing"] == 0))
    result.notes.append(f"One copy kept: VictoriaMetrics holds {outage['vm_samples']} samples of the window where one "
                        f"replica took {outage['survivor_samples']} (two copies would be about "
                        f"{fmt(2 * outage['survivor_samples'], 0)}).")
    result.seconds = time.monotonic() - started
    return result


if __name__ == "__main__":
    print(run().markdown())
