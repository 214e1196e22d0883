"""gunicorn config for an app using flask-mpesa-monitor with several workers.

Run:  PROMETHEUS_MULTIPROC_DIR=/run/mpesa-metrics gunicorn -c gunicorn_conf.py "app:create_app()"

The server hooks come from the package in one line (what they do and why:
:mod:`flask_mpesa_monitor.gunicorn`): ``on_starting`` empties the multiprocess directory
of a previous run's files, ``child_exit`` retires a dead worker's metrics (live gauges
dropped, counters and histograms folded into one archive), ``logconfig_dict`` prints
every log line once. The app must not be preloaded (no ``preload_app``): the extension
starts its health check thread in each worker after fork.

Command-line flags override these settings (the test launcher passes --bind/--workers).
"""

from __future__ import annotations

import os

from flask_mpesa_monitor.gunicorn import *  # noqa: F401,F403 (on_starting, child_exit, logconfig_dict)

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# Health checks and M-Pesa calls are bounded well below this; a worker stuck longer is killed.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = 10
preload_app = False
