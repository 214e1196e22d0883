"""A small app for the gunicorn health test (tests/test_health_gunicorn.py).

Its database is a SQLite file reached through a connection factory that appends
"<time>" to $HEALTH_COUNT_DIR/<pid> on every call: the test reads which process ran
the `database` check, and how often.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from flask import Flask

from flask_mpesa_monitor import MPesaMonitor

COUNT_DIR = Path(os.environ["HEALTH_COUNT_DIR"])

app = Flask(__name__)
app.config["MPESA_MONITOR_HEALTH_INTERVAL"] = float(os.environ.get("HEALTH_INTERVAL", "0.5"))
monitor = MPesaMonitor(app)


def connect() -> sqlite3.Connection:
    with open(COUNT_DIR / str(os.getpid()), "a") as log:
        log.write(f"{time.time()}\n")
    return sqlite3.connect(str(COUNT_DIR / "app.db"))


monitor.set_database(connect)


@app.get("/")
def index():
    return str(os.getpid())
