"""Debian's single-node VictoriaMetrics on 127.0.0.1, for the HA test and benchmarks.

VictoriaMetrics is the long-term store of the HA layout (``docker-compose.ha.yml``): both
Prometheus replicas ``remote_write`` into it and it keeps one copy of each sample
(``-dedup.minScrapeInterval``). This launcher starts the same program on a free port
with the same flags, and speaks its Prometheus-compatible query API.

Two flags matter in tests and differ from production on purpose:

- ``-search.latencyOffset`` (default 30 s) hides the newest samples from queries, so a
  fresh sample is invisible for half a minute; tests set it to about a second.
- ``-search.disableCache``: the response cache of range queries would otherwise return
  a result computed before the last samples arrived.

Example::

    with VictoriaMetricsServer(dedup_interval="1s") as vm:
        ...  # Prometheus remote_write to vm.write_url
        vm.wait_for(lambda: vm.value('count(up)'))

It uses only the public helpers of :mod:`examples.demo.servers`: it is an
:class:`~examples.demo.servers.service.HTTPService` with Prometheus' query helpers.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.parse
from collections.abc import Sequence
from typing import Any

from .process import HOST, PathLike, ServerError, http_json, http_request
from .prometheus import PrometheusAPI
from .service import HTTPService

__all__ = ["VictoriaMetricsServer"]


class VictoriaMetricsServer(PrometheusAPI, HTTPService):
    """``victoria-metrics`` (Debian package, 1.79) with its data under ``base_dir``.

    An :class:`~examples.demo.servers.service.HTTPService` (ready on ``/health``):
    ``restart()`` keeps the data directory, ``kill()`` is a crash (SIGKILL). The query
    helpers (``api``, ``query``, ``value``) are Prometheus' own, on its compatible API.
    """

    name = "victoria-metrics"
    ready_path = "/health"
    api_name = "VictoriaMetrics"

    def __init__(
        self,
        *,
        port: int | None = None,
        dedup_interval: str | None = None,
        latency_offset: str = "1s",
        retention: str = "1",
        disable_cache: bool = True,
        extra_args: Sequence[str] = (),
        base_dir: PathLike | None = None,
        binary: str = "victoria-metrics",
        start_timeout: float = 30.0,
    ) -> None:
        super().__init__(port=port, base_dir=base_dir, start_timeout=start_timeout)
        self.dedup_interval = dedup_interval
        self.latency_offset = latency_offset
        self.retention = retention
        self.disable_cache = disable_cache
        self.extra_args = list(extra_args)
        self.binary = os.fspath(binary)
        self.storage_path = self.base_dir / "data"

    @property
    def write_url(self) -> str:
        """Where Prometheus' ``remote_write`` sends (``/api/v1/write``); ``url`` is also the
        Prometheus query API root (``/api/v1/query``)."""
        return f"{self.url}/api/v1/write"

    def argv(self) -> list[str]:
        """The command line (also what the compose service runs, addresses aside)."""
        argv = [
            self.binary,
            f"-storageDataPath={self.storage_path}",
            f"-httpListenAddr={HOST}:{self.port}",
            f"-retentionPeriod={self.retention}",
            f"-search.latencyOffset={self.latency_offset}",
            "-loggerLevel=INFO",
        ]
        if self.dedup_interval:
            argv.append(f"-dedup.minScrapeInterval={self.dedup_interval}")
        if self.disable_cache:
            argv.append("-search.disableCache")
        return argv + self.extra_args

    def _argv(self) -> list[str]:
        if shutil.which(self.binary) is None:
            raise ServerError(f"{self.binary} not found: install Debian's victoria-metrics package "
                              "(scripts/test.sh does)")
        return self.argv()

    # -- beyond the Prometheus-compatible API
    def export(self, match: str, start: float, end: float) -> list[dict[str, Any]]:
        """Raw samples of the series ``match`` selects (``/api/v1/export``), after de-duplication:
        ``[{"metric": {...}, "values": [...], "timestamps": [ms, ...]}]``."""
        params = urllib.parse.urlencode({"match[]": match, "start": f"{start:.3f}", "end": f"{end:.3f}"})
        status, _, body = http_request("GET", f"{self.url}/api/v1/export?{params}")
        if status != 200:
            raise ServerError(f"VictoriaMetrics /api/v1/export -> HTTP {status}: {body[:500]!r}")
        return [json.loads(line) for line in body.splitlines() if line.strip()]

    def flush(self) -> None:
        """Make every received sample searchable now (``/internal/force_flush``)."""
        http_json("GET", f"{self.url}/internal/force_flush")

    def disk_bytes(self) -> int:
        """Bytes under the data directory (what the long-term store costs on disk)."""
        return sum(p.stat().st_size for p in self.storage_path.rglob("*") if p.is_file())
