"""Scrape-time collectors: values read from a source every worker shares, at each scrape.

A gauge kept as per-worker increments and decrements (summed over the workers' files)
drifts as soon as the increment and the decrement land on different workers and one of
them dies, and goes negative after an expiry counted elsewhere. What the shared STK table
says is the truth, so :class:`StkPendingCollector` reads it when Prometheus scrapes. It
is registered with the exporter (:meth:`~flask_mpesa_monitor.exposition.MetricsExporter.register`),
the extension point for any such value, and every renderer (text, OpenMetrics, one
process or many, the fallback) writes its family.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily

from . import metrics


class StkPendingCollector:
    """``mpesa_stk_pending`` per organization, counted in the tracker's pending table.

    Each scrape first expires pushes older than the callback timeout (counted once in
    ``mpesa_stk_callbacks_missing_total`` by whichever process gets there first), so
    missing callbacks are counted even when no request comes to trigger it.
    """

    def __init__(self, tracker: Any, gauge: metrics.MetricSpec = metrics.stk_pending) -> None:
        self.tracker, self.gauge = tracker, gauge

    def collect(self) -> Iterator[GaugeMetricFamily]:
        self.tracker.expire()
        family = GaugeMetricFamily(self.gauge.name, self.gauge.documentation, labels=list(self.gauge.labelnames))
        for organization, count in sorted(self.tracker.store.pending_by_organization().items()):
            family.add_metric([organization], float(count))
        yield family
