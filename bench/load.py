"""HTTP load generators for the benchmarks: wrk when installed, else a bounded Python client.

Both run for a fixed duration against one URL (or a list of paths cycled per request)
on 127.0.0.1 and return the same :class:`LoadResult`: requests/s, p50/p99 latency in
milliseconds, requests and errors. wrk (Debian's ``wrk`` package; ``scripts/bench.sh``
installs it) is the one to trust for throughput: it is C and takes little CPU from the
server under test. The Python client exists so that the smoke tests run on machines
without wrk; its own CPU use caps what it can measure.
"""

from __future__ import annotations

import http.client
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .common import percentile


@dataclass
class LoadResult:
    tool: str
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    non_2xx: int

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not match:
        raise ValueError(f"cannot read wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _lua_script(paths: Sequence[str]) -> str:
    quoted = ", ".join('"' + p.replace("\\", "\\\\").replace('"', '\\"') + '"' for p in paths)
    return (
        f"local paths = {{{quoted}}}\n"
        "local i = 0\n"
        "request = function()\n"
        "  i = i + 1\n"
        "  return wrk.format(\"GET\", paths[(i % #paths) + 1])\n"
        "end\n"
    )


def parse_wrk(output: str, duration: float) -> LoadResult:
    """Read wrk's ``--latency`` report."""
    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", output)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.M)
    if not (total and rps and p50 and p99):
        raise RuntimeError(f"unexpected wrk output:\n{output}")
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    errors = sum(int(x) for x in socket_errors.groups()) if socket_errors else 0
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return LoadResult(
        tool="wrk",
        requests=int(total.group(1)),
        seconds=_ms(total.group(2) + total.group(3)) / 1000.0,
        rps=float(rps.group(1)),
        p50_ms=_ms(p50.group(1)),
        p99_ms=_ms(p99.group(1)),
        errors=errors,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
    )


def run_wrk(base_url: str, paths: Sequence[str], duration: float, connections: int, threads: int = 1,
            timeout_s: float = 5.0) -> LoadResult:
    """wrk ``-t threads -c connections -d duration --latency`` cycling over ``paths``."""
    threads = max(1, min(threads, connections))
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
        script = Path(tmp) / "paths.lua"
        script.write_text(_lua_script(paths))
        argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s",
                f"--timeout={timeout_s:g}s", "--latency", "-s", str(script), base_url]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60,
                              stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr or proc.stdout}")
    return parse_wrk(proc.stdout, duration)


def run_python(base_url: str, paths: Sequence[str], duration: float, connections: int,
               timeout_s: float = 5.0) -> LoadResult:
    """``connections`` threads, each sending one request at a time until ``duration`` is up."""
    parsed = urllib.parse.urlsplit(base_url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 80
    latencies: list[list[float]] = [[] for _ in range(connections)]
    errors = [0] * connections
    non_2xx = [0] * connections
    deadline = time.monotonic() + duration

    def worker(index: int) -> None:
        i = index
        while time.monotonic() < deadline:
            path = paths[i % len(paths)]
            i += 1
            started = time.perf_counter()
            conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
            try:
                conn.request("GET", path)
                response = conn.getresponse()
                response.read()
                if not 200 <= response.status < 400:
                    non_2xx[index] += 1
            except (OSError, http.client.HTTPException):
                errors[index] += 1
                continue
            finally:
                conn.close()
            latencies[index].append((time.perf_counter() - started) * 1000.0)

    started = time.monotonic()
    pool = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(connections)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(duration + timeout_s + 5)
    elapsed = time.monotonic() - started
    flat = [x for per in latencies for x in per]
    if not flat:
        raise RuntimeError(f"no request to {base_url} succeeded in {duration:g} s ({sum(errors)} errors)")
    return LoadResult(
        tool="python",
        requests=len(flat),
        seconds=elapsed,
        rps=len(flat) / elapsed,
        p50_ms=percentile(flat, 50),
        p99_ms=percentile(flat, 99),
        errors=sum(errors),
        non_2xx=sum(non_2xx),
    )


def run_load(base_url: str, paths: Sequence[str], duration: float, connections: int,
             tool: str = "auto", threads: int = 1) -> LoadResult:
    """wrk when available (``tool="auto"``), else the Python client."""
    if tool == "wrk" or (tool == "auto" and have_wrk()):
        return run_wrk(base_url, paths, duration, connections, threads)
    return run_python(base_url, paths, duration, connections)
