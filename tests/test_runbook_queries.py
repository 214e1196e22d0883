"""Every PromQL query of docs/runbooks.md and docs/operations.md runs, and counts right.

A real Prometheus (Debian's 2.42, every second) scrapes a small exposition server that
serves the metric catalogue (flask_mpesa_monitor.metrics) with synthetic values, and
loads the committed rules. Each query must evaluate without an error. The counting
queries ("how many in the last hour") must equal the counters themselves: every series
here is born during the test, already at 3 (the extension creates a labelled counter at
its first count), so a query that misses a new series' first sample counts 2, not 5.
"""

from __future__ import annotations

import itertools
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from examples.demo.servers import PrometheusServer, free_port, wait_until
from flask_mpesa_monitor import metrics

ROOT = Path(__file__).resolve().parent.parent
DOCS = (ROOT / "docs" / "runbooks.md", ROOT / "docs" / "operations.md")
#: Placeholders the runbooks use for the operator to fill in.
PLACEHOLDERS = {"<org>": "acme"}
#: A counting query in its first-sample-safe form (docs/runbooks.md, "Before you start").
_COUNTING = re.compile(r"sum by \((?P<by>[^)]*)\) \(\((?P<sel>[^()]+?) unless (?P=sel) offset (?P<w>\w+)\)"
                       r" or increase\((?P=sel)\[(?P=w)\]\)\)")
#: Label values of the synthetic series: two per label, the ones the runbooks filter on.
VALUES = {"organization": ("acme", "unknown"), "outcome": ("provider_error", "timeout"),
          "result": ("failure", "success"), "type": ("stk_push", "c2b", "b2c"), "severity": ("high", "critical"),
          "operation": ("stk_push", "b2c"), "check": ("database", "mpesa_api"), "ip": ("203.0.113.7",),
          "currency": ("KES",), "state": ("in_use",), "limit": ("per_minute",), "method": ("POST",),
          "endpoint": ("payments.stk_push",), "label": ("endpoint",),
          "event_type": ("cross_tenant_access", "callback_unmatched", "invalid_callback"),
          "tool": ("stk_push",), "version": ("0",), "python_version": ("3",), "alertname": ("X",),
          "channel": ("slack",)}
STATUS = {"mpesa_mcp_requests_total": ("200", "502"), "mpesa_token_refreshes_total": ("failure", "success")}


def queries() -> list[tuple[str, str]]:
    found = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for query in re.findall(r"\bq '([^']+)'", text) + re.findall(r"'query=([^']+)'", text):
            for placeholder, value in PLACEHOLDERS.items():
                query = query.replace(placeholder, value)
            found.append((path.name, query))
    return found


class Exposition:
    """The catalogue's metrics in a registry of their own, served on 127.0.0.1.

    ``phase(0)``: unlabelled metrics only (labelled series do not exist yet);
    ``phase(1)``: every series born at 3; ``phase(2)``: counters at 5.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.metrics = []
        for name, metric in metrics.CATALOGUE.items():
            kind = {"counter": Counter, "gauge": Gauge, "histogram": Histogram}[metric.type]
            base = name[: -len("_total")] if kind is Counter else name
            labels = metric.labelnames
            self.metrics.append((name, kind(base, "synthetic", labels, registry=self.registry), labels))
        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.server_port}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        registry = self.registry

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = generate_latest(registry)
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        return Handler

    def phase(self, number: int) -> None:
        amount = 3 if number == 1 else 2
        for name, metric, labels in self.metrics:
            choices = [STATUS.get(name, ("200",)) if label == "status" else VALUES.get(label, ("x",))
                       for label in labels]
            for values in itertools.product(*choices) if labels else [()]:
                child = metric.labels(*values) if labels else metric
                if isinstance(metric, Counter):
                    child.inc(amount)
                elif isinstance(metric, Gauge):
                    child.set(amount)
                else:
                    for _ in range(amount):
                        child.observe(0.2)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    exposition = Exposition()
    base = tmp_path_factory.mktemp("runbook-prometheus")
    config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
              "scrape_configs": [{"job_name": "mpesa-mcp", "static_configs": [{"targets": [exposition.target]}]}]}
    server = PrometheusServer(config, base_dir=base,
                              rule_files=sorted((ROOT / "deploy" / "prometheus" / "rules").glob("*.yml")))
    try:
        server.start()

        def scraped(count: int):
            return lambda: (server.value('sum(count_over_time(up{job="mpesa-mcp"}[10m]))') or 0) >= count

        wait_until(scraped(3), timeout=60, interval=0.5, description="three scrapes of nothing labelled")
        exposition.phase(1)
        wait_until(lambda: server.value("sum(mpesa_cross_tenant_attempts_total)") == 6, timeout=60, interval=0.5,
                   description="the series born at 3")
        wait_until(scraped(6), timeout=60, interval=0.5, description="more scrapes")
        exposition.phase(2)
        wait_until(lambda: server.value("sum(mpesa_cross_tenant_attempts_total)") == 10, timeout=60,
                   interval=0.5, description="the counters at 5")
        yield server
    finally:
        server.cleanup()
        exposition.close()


def test_the_docs_have_queries_and_counting_queries() -> None:
    found = [query for _doc, query in queries()]
    assert len(found) > 50
    assert sum(1 for q in found if _COUNTING.search(q)) >= 10


@pytest.mark.slow
@pytest.mark.parametrize("doc, query", queries(), ids=[f"{d}:{q[:60]}" for d, q in queries()])
def test_runbook_query_evaluates(prometheus: PrometheusServer, doc: str, query: str) -> None:
    prometheus.query(query)  # raises ServerError on a PromQL error


def _by_labels(result: list[dict]) -> dict[tuple, float]:
    return {tuple(sorted(r["metric"].items())): float(r["value"][1]) for r in result}


@pytest.mark.slow
@pytest.mark.parametrize("query", sorted({q for _d, q in queries() if "increase(" in q}))
def test_counting_query_counts_every_event_of_a_new_series(prometheus: PrometheusServer, query: str) -> None:
    assert _COUNTING.search(query), f"write the count first-sample safe: {query}"
    # Every series was born during this test: the count in the window is the counter.
    expected_query = _COUNTING.sub(lambda m: f"sum by ({m['by']}) ({m['sel']})", query)
    expected = _by_labels(prometheus.query(expected_query))
    counted = _by_labels(prometheus.query(query))
    assert expected, f"the synthetic series do not reach {expected_query}: extend VALUES"
    assert counted.keys() == expected.keys()
    for labels, value in expected.items():
        assert counted[labels] == pytest.approx(value), (query, labels)


@pytest.mark.slow
def test_plain_increase_misses_the_first_sample(prometheus: PrometheusServer) -> None:
    """Why the runbooks do not count with increase() alone (this check can fail)."""
    plain = _by_labels(prometheus.query("sum by (organization) (increase(mpesa_cross_tenant_attempts_total[1h]))"))
    assert all(value < 5 for value in plain.values()), plain
