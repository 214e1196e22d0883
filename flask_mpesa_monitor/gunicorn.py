"""gunicorn server hooks for an app using flask-mpesa-monitor, in one import.

In your gunicorn config file (``gunicorn -c gunicorn_conf.py 'app:create_app()'``)::

    from flask_mpesa_monitor.gunicorn import *  # on_starting, child_exit, logconfig_dict

or, to combine them with hooks of your own, import them by name and call them from yours.

Why each piece (all three are no-ops for the metrics without ``PROMETHEUS_MULTIPROC_DIR``):

- ``on_starting`` (master, before any worker): prometheus_client's multiprocess
  directory must start empty, or a previous run's files would be counted again. It
  removes the metric files (``*.db``), the dead-worker archive's lock and journal, and the
  extension's shared tables (``mpesa_monitor_*.sqlite``), and nothing else, so a mistyped
  path never loses anything. The pending STK table (``mpesa_monitor_stk.sqlite``) is
  kept, so callbacks of pushes sent just before a restart or upgrade still match: only
  its rows older than a day are dropped (``stk_store.prune_on_start``).
- ``child_exit`` (master, when a worker exits: restart, crash, ``max_requests``): the
  worker's ``live*`` gauges stop counting (``mark_process_dead``), and its counter and
  histogram files are folded into one archive per kind (:mod:`flask_mpesa_monitor.archive`),
  so the directory and the scrape time stay flat however many workers come and go. gunicorn
  calls it before it forks the replacement, so a reused pid never meets its old file.
- ``logconfig_dict``: gunicorn's default logging config makes its own loggers propagate
  to a root logger that has a handler too, so with the root logger configured every line
  is printed twice. Here the root logger (the app's and this package's lines) and
  gunicorn's two loggers each print once, to stderr (errors) and stdout (access).

The app must not be preloaded (no ``preload_app``): the extension starts its health check
thread in each worker after fork.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from . import stk_store
from .archive import JOURNAL_NAME, LOCK_NAME, archive_dead_worker

__all__ = ["on_starting", "child_exit", "logconfig_dict"]

log = logging.getLogger("gunicorn.error")

#: Files ``on_starting`` removes from the multiprocess directory, and only these.
STALE_PATTERNS = ("*.db", "*.db.partial", LOCK_NAME, JOURNAL_NAME + "*", "mpesa_monitor_*.sqlite*")

_FORMAT = "%(asctime)s [%(process)d] [%(levelname)s] %(message)s"  # gunicorn's own

logconfig_dict: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "root": {"level": "INFO", "handlers": ["error_console"]},
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": ["error_console"], "propagate": False,
                           "qualname": "gunicorn.error"},
        "gunicorn.access": {"level": "INFO", "handlers": ["console"], "propagate": False,
                            "qualname": "gunicorn.access"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "generic", "stream": "ext://sys.stdout"},
        "error_console": {"class": "logging.StreamHandler", "formatter": "generic", "stream": "ext://sys.stderr"},
    },
    "formatters": {"generic": {"format": _FORMAT, "datefmt": "[%Y-%m-%d %H:%M:%S %z]",
                               "class": "logging.Formatter"}},
}


def _multiproc_dir() -> Path | None:
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir")
    return Path(path) if path else None


def on_starting(server: Any) -> None:
    """Empty the multiprocess directory of a previous run's metric files and tables."""
    directory = _multiproc_dir()
    if directory is None:
        return
    directory.mkdir(parents=True, exist_ok=True)
    for pattern in STALE_PATTERNS:
        for stale in directory.glob(pattern):
            if not stale.name.startswith(stk_store.FILE_NAME):
                stale.unlink(missing_ok=True)
    stk_store.prune_on_start(directory)


def child_exit(server: Any, worker: Any) -> None:
    """Retire a dead worker's metrics: live gauges dropped, counters and histograms archived."""
    directory = _multiproc_dir()
    if directory is None:
        return
    from prometheus_client import multiprocess

    try:
        multiprocess.mark_process_dead(worker.pid, str(directory))
    except Exception:  # a hook that raises would take the master down with it
        log.exception("could not mark worker %s dead for the metrics", worker.pid)
    try:
        archive_dead_worker(str(directory), worker.pid)
    except Exception:  # its files stay as they are: still counted, only not compacted
        log.exception("could not archive the metric files of worker %s", worker.pid)
