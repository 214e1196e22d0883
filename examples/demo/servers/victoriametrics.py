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

It uses only the public helpers of :mod:`examples.demo.servers`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from .process import ManagedProcess, ServerError, free_port, http_json, http_request, wait_http, wait_until

__all__ = ["VictoriaMetricsServer"]

HOST = "127.0.0.1"
T = TypeVar("T")


class VictoriaMetricsServer:
    """``victoria-metrics`` (Debian package, 1.79) with its data under ``base_dir``.

    ``restart()`` keeps the data directory. ``kill()`` is a crash (SIGKILL).
    """

    name = "victoria-metrics"

    def __init__(
        self,
        *,
        port: int | None = None,
        dedup_interval: str | None = None,
        latency_offset: str = "1s",
        retention: str = "1",
        disable_cache: bool = True,
        extra_args: Sequence[str] = (),
        base_dir: str | os.PathLike[str] | None = None,
        binary: str = "victoria-metrics",
        start_timeout: float = 30.0,
    ) -> None:
        self.port = port or free_port()
        self.dedup_interval = dedup_interval
        self.latency_offset = latency_offset
        self.retention = retention
        self.disable_cache = disable_cache
        self.extra_args = list(extra_args)
        self.binary = binary
        self.start_timeout = start_timeout
        self._own_dir = base_dir is None
        self.base_dir = Path(base_dir or tempfile.mkdtemp(prefix="mpesa-vm-"))
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.storage_path = self.base_dir / "data"
        self.process: ManagedProcess | None = None

    def __repr__(self) -> str:
        return f"<VictoriaMetricsServer {self.url} running={self.running}>"

    # -- addresses
    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``: also the Prometheus query API root (``/api/v1/query``)."""
        return f"http://{HOST}:{self.port}"

    @property
    def write_url(self) -> str:
        """Where Prometheus' ``remote_write`` sends (``/api/v1/write``)."""
        return f"{self.url}/api/v1/write"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.running

    # -- lifecycle
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

    def start(self) -> VictoriaMetricsServer:
        """Start and wait for ``/health``; ServerError with the log when it does not come up."""
        if self.running:
            return self
        if shutil.which(self.binary) is None:
            raise ServerError(f"{self.binary} not found: install Debian's victoria-metrics package "
                              "(scripts/test.sh does)")
        self.process = ManagedProcess(self.argv(), cwd=self.base_dir, log_path=self.base_dir / f"{self.name}.log",
                                      name=self.name, stop_timeout=10.0)
        self.process.start()
        try:
            wait_http(self.url + "/health", self.start_timeout, process=self.process)
        except BaseException:
            self.process.stop()
            raise
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()

    def restart(self) -> VictoriaMetricsServer:
        self.stop()
        return self.start()

    def cleanup(self) -> None:
        """Stop, and remove the base directory when this object created it."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        return self.process.log_tail(lines) if self.process is not None else "(not started)"

    def wait_for(self, predicate: Callable[[], T], timeout: float = 15.0, interval: float = 0.2,
                 description: str | None = None) -> T:
        """``wait_until`` whose timeout message carries this server's log tail."""
        try:
            return wait_until(predicate, timeout, interval, description=description)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n{self.log_tail()}") from None

    def __enter__(self) -> VictoriaMetricsServer:
        try:
            return self.start()
        except BaseException:
            self.cleanup()
            raise

    def __exit__(self, *exc_info: object) -> None:
        self.cleanup()

    # -- the Prometheus-compatible API
    def api(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        """GET ``/api/v1/<path>``; its ``data`` (ServerError on an error answer)."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        reply = http_json("GET", f"{self.url}/api/v1/{path.lstrip('/')}{query}")
        if reply.get("status") != "success":
            raise ServerError(f"VictoriaMetrics /api/v1/{path} failed: {reply}")
        return reply["data"]

    def query(self, expr: str, time: float | None = None) -> list[dict[str, Any]]:
        """An instant query (MetricsQL, a superset of PromQL); the ``result`` list."""
        params: dict[str, Any] = {"query": expr}
        if time is not None:
            params["time"] = time
        return self.api("query", params)["result"]

    def value(self, expr: str, time: float | None = None) -> float | None:
        """The single value of an instant query, or None when empty."""
        result = self.query(expr, time)
        if not result:
            return None
        if len(result) > 1:
            raise ServerError(f"{expr!r} returned {len(result)} series, expected at most one: {result}")
        return float(result[0]["value"][1])

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
