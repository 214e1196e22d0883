"""An app with a small organization bound (MAX_ORGANIZATIONS from the environment), for
the whole-host bound under gunicorn."""

import os

from flask import Flask

from flask_mpesa_monitor import MPesaMonitor

app = Flask(__name__)
app.config["MPESA_MONITOR_HEALTH_BACKGROUND"] = False
app.config["MPESA_MONITOR_MAX_ORGANIZATIONS"] = int(os.environ.get("BOUND", "20"))
app.config["MPESA_MONITOR_KNOWN_ORGANIZATIONS"] = os.environ.get("KNOWN", "")
MPesaMonitor(app)


@app.get("/orgs/<org_id>/pay")
def pay(org_id):
    return {"org": org_id, "pid": os.getpid()}
