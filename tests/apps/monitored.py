"""A small multi-tenant app using the extension, served by gunicorn in tests."""

import os

from flask import Flask

from flask_mpesa_monitor import MPesaMonitor


def create_app() -> Flask:
    app = Flask(__name__)
    app.config["MPESA_MONITOR_HEALTH_BACKGROUND"] = False
    MPesaMonitor(app)

    @app.get("/orgs/<org_id>/pay")
    def pay(org_id):
        return {"org": org_id, "pid": os.getpid()}

    return app
