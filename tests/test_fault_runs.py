"""How a run of the fault catalogue reads its pages (examples/demo/faults.py), against
the real inbox served on 127.0.0.1: no stack, no rules engine, notifications posted
the way Alertmanager posts them to Slack. The end-to-end tests (tests/test_e2e.py) run
the same code against the whole stack; these pin what it measures."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import yaml

from examples.demo import faults as catalogue
from examples.demo.inbox import create_app as create_inbox
from examples.demo.servers import serving

BURST = catalogue.Expect("RateLimitWarnings", "medium", "kilele", signal="event")


class InboxOnly:
    """The one part of a stack a group run reads its pages from."""

    prometheus = None  # evidence for a failed measurement: unavailable here

    def __init__(self, inbox: str) -> None:
        self.inbox = inbox

    def url(self, name: str) -> str:
        assert name == "inbox", name
        return self.inbox

    def notify(self, status: str) -> None:
        """A Slack notification as Alertmanager's template titles it."""
        head = "[FIRING:1]" if status == "firing" else "[RESOLVED]"
        block = "*FIRING*" if status == "firing" else "*RESOLVED*"
        text = f"{head} MEDIUM RateLimitWarnings (kilele)\n{block} kilele is near its API limit.\n*Severity:* medium"
        requests.post(f"{self.inbox}/slack/test", json={"text": text}, timeout=5).raise_for_status()


@pytest.fixture(scope="module")
def rendered() -> catalogue.Rendered:
    return catalogue.render_configs(True, catalogue.app_env(None, fast=True))


@pytest.fixture
def stack() -> Iterator[InboxOnly]:
    with serving(create_inbox({"max_per_channel": 50})) as url:
        yield InboxOnly(url)


def fault(name: str, inject: Any, revert: Any = lambda c: None, expects: tuple[catalogue.Expect, ...] = ()) -> Any:
    return catalogue.Fault(name, name, name, inject, revert, expects, group="pinned")


def run(stack: InboxOnly, rendered: catalogue.Rendered, faults: list[catalogue.Fault]) -> catalogue.GroupResult:
    return catalogue.run_group(stack, faults, rendered, margin=2.0, log=lambda line: None)


def test_a_page_that_comes_while_later_faults_are_injected_counts_from_its_own_fault(stack, rendered):
    """A fault that pages at once, injected before one whose injection takes seconds (40
    logins, 30 reads on a busy stack): its page counts, timed from its own injection."""
    burst = fault("burst", lambda c: stack.notify("firing"), lambda c: stack.notify("resolved"), (BURST,))
    slow = fault("slow_to_inject", lambda c: time.sleep(2.0))
    result = run(stack, rendered, [burst, slow])
    (m,) = result.measurements
    assert m.paged and m.firing_count == {"slack": 1}, (m.page_s, m.notifications)
    assert 0 <= m.page_s["slack"] < 2.0
    assert m.resolved and m.resolve_s["slack"] >= 0


def test_a_page_from_before_the_fault_does_not_count(stack, rendered):
    """The same alert firing before its fault was injected is someone else's page."""
    stack.notify("firing")
    time.sleep(0.05)
    burst = fault("burst", lambda c: None, expects=(BURST,))
    started = time.time()
    (m,) = run(stack, rendered, [burst]).measurements
    assert not m.paged and m.firing_count == {"slack": 0}
    assert time.time() - started >= catalogue.bounds(burst, BURST, rendered).page * 1.5  # it waited
    assert m.evidence and "unavailable" in m.evidence[0]  # and says what it could not read


def test_evidence_lists_each_alerts_series_with_the_seconds_it_fired(prometheus_factory, tmp_path):
    """What a failed page check prints, read from a real Prometheus: the alert's series
    (labels, when it fired) and the tenant's Daraja calls (none here)."""
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "pinned", "interval": "1s", "rules": [
        {"alert": "RateLimitWarnings", "expr": "vector(1)", "labels": {"organization": "kilele", "severity": "medium"}},
    ]}]}))
    prometheus = prometheus_factory({"global": {"evaluation_interval": "1s"}}, rule_files=[rules])
    started = time.time()
    prometheus.wait_for(lambda: prometheus.query('ALERTS{alertname="RateLimitWarnings"}'), timeout=20)
    time.sleep(2)
    lines = catalogue.prometheus_evidence(prometheus, BURST, started, time.time())
    assert len(lines) == 2, lines
    # one run of firing steps, from its start to now
    assert re.fullmatch(r"ALERTS \{'organization': 'kilele', 'severity': 'medium'\} firing \+\d+\.\.\+\d+s",
                        lines[0]), lines
    assert lines[1] == "Daraja calls: ", lines
