"""gunicorn config for an app using flask-mpesa-monitor with several workers.

Run:  PROMETHEUS_MULTIPROC_DIR=/run/mpesa-metrics gunicorn -c gunicorn_conf.py "app:create_app()"

Why each piece:
- Each gunicorn worker is a process with its own metrics. prometheus_client's
  multiprocess mode writes them to files in PROMETHEUS_MULTIPROC_DIR, and /metrics adds
  them up. The directory must start empty: files of a previous run would be counted
  again. ``on_starting`` (in the master, before any worker) removes the old ``*.db``
  files and the extension's other shared tables (``mpesa_monitor_*.sqlite``), and only
  those, so a mistyped path never loses anything else. The pending STK table
  (``mpesa_monitor_stk.sqlite``) is kept across a restart or upgrade, so callbacks of
  pushes sent just before still match: only its rows older than a day are dropped
  (``flask_mpesa_monitor.stk_store.prune_on_start``).
- When a worker exits (restart, crash, max_requests), its "live" gauges (in-progress
  requests, health status) must stop counting: ``child_exit`` (in the master) calls
  ``mark_process_dead``. Counters and histograms of dead workers are kept, so totals
  never go backwards.
- The app must not be preloaded (no ``preload_app``): the extension starts its health
  check thread in each worker after fork.

Command-line flags override these settings (the test launcher passes --bind/--workers).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# Health checks and M-Pesa calls are bounded well below this; a worker stuck longer is killed.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = 10
preload_app = False


def _multiproc_dir() -> Path | None:
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    return Path(path) if path else None


def on_starting(server: Any) -> None:
    """Empty the multiprocess directory of a previous run's metric files."""
    directory = _multiproc_dir()
    if directory is None:
        return
    from flask_mpesa_monitor import stk_store

    directory.mkdir(parents=True, exist_ok=True)
    for pattern in ("*.db", "mpesa_monitor_*.sqlite*"):  # metric files; shared summary table
        for stale in directory.glob(pattern):
            if not stale.name.startswith(stk_store.FILE_NAME):
                stale.unlink(missing_ok=True)
    stk_store.prune_on_start(directory)


def child_exit(server: Any, worker: Any) -> None:
    """Stop counting a dead worker's live gauges (prometheus_client multiprocess mode)."""
    if _multiproc_dir() is None:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
