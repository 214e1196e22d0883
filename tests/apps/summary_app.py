"""A small app for the 2-worker /metrics/summary test (tests/test_summary_gunicorn.py).

Routes:
- ``/``: "ok" (readiness).
- ``POST /pay/<org_id>?type=c2b&outcome=success&amount=100[&token=T]``: records one
  transaction in this worker; with ``token`` it then waits (at most 5 s) until two
  different workers have served a request with that token (a rendezvous under
  $SUMMARY_RENDEZVOUS_DIR/T), so that two concurrent requests are known to have been
  recorded by two workers.
- ``/metrics/summary``: the extension's, shared by the workers through SQLite beside
  PROMETHEUS_MULTIPROC_DIR.

The user of a request is its ``X-User`` header. Every answer carries ``X-Worker-Pid``.
"""

from __future__ import annotations

import os

from flask import Flask, jsonify, request

from flask_mpesa_monitor import MPesaMonitor
from tests.apps.rendezvous import rendezvous

app = Flask(__name__)
monitor = MPesaMonitor(app)


@monitor.user_resolver
def current_user():
    return request.headers.get("X-User")


@app.after_request
def tag_worker(response):
    response.headers["X-Worker-Pid"] = str(os.getpid())
    return response


@app.get("/")
def index():
    return "ok"


def _rendezvous(token: str) -> list[int]:
    return rendezvous("SUMMARY_RENDEZVOUS_DIR", token)


@app.post("/pay/<org_id>")
def pay(org_id):
    monitor.record_transaction(org_id, request.args.get("type", "c2b"), request.args.get("outcome", "success"),
                               amount=float(request.args.get("amount", 0)))
    token = request.args.get("token")
    pids = _rendezvous(token) if token else [os.getpid()]
    return jsonify(pid=os.getpid(), pids=pids)
