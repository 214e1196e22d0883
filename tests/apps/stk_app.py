"""An app that records STK pushes and callbacks, served by gunicorn in tests."""

import os

from flask import Flask, request

from flask_mpesa_monitor import InvalidCallback, MPesaMonitor


def create_app() -> Flask:
    app = Flask(__name__)
    app.config["MPESA_MONITOR_HEALTH_BACKGROUND"] = False
    app.config["MPESA_MONITOR_CALLBACK_ALLOWED_IPS"] = "safaricom,127.0.0.0/8"
    monitor = MPesaMonitor(app)

    @app.post("/orgs/<org_id>/stk-push")
    def push(org_id):
        body = request.get_json()
        monitor.record_stk_push(org_id, body["checkout"], body["amount"])
        return {"pid": os.getpid()}

    @app.post("/mpesa/callback/<org_id>")
    def callback(org_id):
        try:
            result = monitor.record_stk_callback(request.get_json(silent=True), org_id)
        except InvalidCallback as exc:
            return {"error": str(exc)}, 400
        return {"match": result.match, "pid": os.getpid()}

    return app
