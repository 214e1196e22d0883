"""A multi-tenant M-Pesa payments app using flask-mpesa-monitor: the integration guide in code.

Endpoints::

    POST /login                    {"username", "password", "organization"} -> {"token"}
    POST /orgs/<org_id>/stk-push   {"phone", "amount"}       bearer token of that organization
    GET  /orgs/<org_id>/transactions                         bearer token of that organization
    GET  /orgs/<org_id>/balance                              bearer token of that organization
    POST /orgs/<org_id>/reconcile  {"older_than": seconds}   STK Query for the tenant's pushes still pending
    POST /mpesa/callback/<org_id>  Daraja's STK callback

Settings come from the environment: ``DATABASE_URL`` (default SQLite in the working
directory), ``DARAJA_BASE_URL`` (the simulator), ``DEMO_PUBLIC_URL`` (where Daraja posts
callbacks), ``DEMO_ORGANIZATIONS`` (``acme,jambo,duka,safari``), ``DEMO_PASSWORD``,
``DEMO_RATE_LIMIT`` (requests per minute per organization), ``DEMO_RATE_LIMITS``
(``duka=5,acme=200``), ``DEMO_DARAJA_TIMEOUT`` (seconds a Daraja call may take, default
10) and ``DEMO_RECONCILE_INTERVAL`` (seconds between background reconciliations of missing
pushes per worker; 0, the default, leaves it to the endpoint), plus any
``MPESA_MONITOR_*`` setting of the extension.

Client addresses: behind a reverse proxy every request comes from the proxy. The app
believes ``X-Forwarded-For`` from the proxies listed in
``MPESA_MONITOR_CALLBACK_TRUSTED_PROXIES`` only (the same setting, and the same reading,
as the extension's callback source check: the right-most address that is not a trusted
proxy), so failed logins are counted per real client and one address guessing passwords
stands out.

Run::

    gunicorn -c examples/demo/gunicorn_conf.py 'examples.demo.app:create_app()'
"""

from __future__ import annotations

import hmac
import os
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from flask import Flask, abort, g, jsonify, request
from itsdangerous import BadSignature, URLSafeTimedSerializer

from flask_mpesa_monitor import InvalidCallback, MPesaMonitor
from flask_mpesa_monitor.config import MonitorConfig
from flask_mpesa_monitor.security import CallbackSource

from .daraja_client import Credentials, DarajaClient
from .store import Store

monitor = MPesaMonitor()


class RateLimiter:
    """Requests per minute per organization, in fixed one-minute windows (per worker)."""

    def __init__(self, default: int, overrides: dict[str, int]) -> None:
        self.default, self.overrides = default, overrides
        self._windows: dict[str, tuple[int, int]] = defaultdict(lambda: (0, 0))
        self._lock = threading.Lock()

    def limit_of(self, org: str) -> int:
        return self.overrides.get(org, self.default)

    def allow(self, org: str) -> bool:
        minute = int(time.time() // 60)
        with self._lock:
            window, count = self._windows[org]
            count = count + 1 if window == minute else 1
            self._windows[org] = (minute, count)
        return count <= self.limit_of(org)


def _limits(text: str) -> dict[str, int]:
    pairs = (item.split("=", 1) for item in text.split(",") if "=" in item)
    return {org.strip(): int(limit) for org, limit in pairs}


DEFAULT_SQLITE = Path(__file__).resolve().parents[2] / ".local-stack" / "demo.sqlite3"


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    env = os.environ
    app.config.update(
        SECRET_KEY=env.get("DEMO_SECRET_KEY", "demo-only-secret"),
        # Without DATABASE_URL the demo keeps its SQLite file with the local stack's state
        # (git-ignored), never in whatever directory a command happens to run in.
        DATABASE_URL=env.get("DATABASE_URL", "sqlite:///" + str(DEFAULT_SQLITE)),
        DARAJA_BASE_URL=env.get("DARAJA_BASE_URL", "http://127.0.0.1:8081"),
        DEMO_PUBLIC_URL=env.get("DEMO_PUBLIC_URL", "http://127.0.0.1:8000"),
        DEMO_ORGANIZATIONS=env.get("DEMO_ORGANIZATIONS", "acme,jambo,duka,safari").split(","),
        DEMO_PASSWORD=env.get("DEMO_PASSWORD", "demo-password"),
        DEMO_RATE_LIMIT=int(env.get("DEMO_RATE_LIMIT", "600")),
        DEMO_RATE_LIMITS=_limits(env.get("DEMO_RATE_LIMITS", "")),
        DEMO_RECONCILE_INTERVAL=float(env.get("DEMO_RECONCILE_INTERVAL", "0")),
        DEMO_DARAJA_TIMEOUT=float(env.get("DEMO_DARAJA_TIMEOUT", "10")),
    )
    # Every MPESA_MONITOR_* variable of the environment is a setting of the extension.
    app.config.update({key: value for key, value in env.items() if key.startswith("MPESA_MONITOR_")})
    app.config.setdefault("MPESA_MONITOR_DATABASE_URL", app.config["DATABASE_URL"])
    app.config.update(config or {})

    monitor.init_app(app)
    store = Store(app.config["DATABASE_URL"])
    try:
        store.create_schema()
    except Exception:  # the database may be down at start: /health/detailed will say so
        app.logger.exception("could not create the schema")
    organizations = app.config["DEMO_ORGANIZATIONS"]
    daraja = DarajaClient(app.config["DARAJA_BASE_URL"], {
        org: Credentials(f"{org}-consumer-key", f"{org}-consumer-secret") for org in organizations},
        timeout=app.config["DEMO_DARAJA_TIMEOUT"])
    # Who the client is: the peer, or what a trusted proxy says it forwarded for.
    clients = CallbackSource((), MonitorConfig.from_mapping(app.config).callback_trusted_proxies)

    def client_address() -> str | None:
        address = clients.source(request.remote_addr, request.headers.get("X-Forwarded-For"))
        return str(address) if address is not None else None

    limiter = RateLimiter(app.config["DEMO_RATE_LIMIT"], app.config["DEMO_RATE_LIMITS"])
    for org in organizations:
        monitor.set_api_limit(org, limiter.limit_of(org))
    tokens = URLSafeTimedSerializer(app.config["SECRET_KEY"], salt="demo-login")

    @monitor.organization_resolver
    def organization_of_caller() -> str | None:
        # The logged-in user's organization, not the one in the URL: a cross-tenant
        # attempt is then counted against the organization that made it.
        return g.get("user_org")

    @monitor.user_resolver
    def current_user() -> str | None:  # feeds active_users in /metrics/summary
        return f"demo@{g.user_org}" if g.get("user_org") else None

    @monitor.summary_access
    def summary_access(organization: str | None) -> str | None:
        # A logged-in tenant sees its own figures only; /metrics credentials see all.
        return g.get("user_org")

    @monitor.audit_verifier
    def tampered_transactions() -> int:
        # The demo's stand-in for an audit-log check: rows in a state the app never writes.
        return store.tampered_rows()

    @app.before_request
    def authenticate() -> None:
        # Only the app's own API: /metrics and /health/detailed check their own tokens.
        header = request.headers.get("Authorization", "")
        if request.path.startswith(("/orgs/", "/metrics/summary")) and header.startswith("Bearer "):
            try:
                g.user_org = tokens.loads(header[7:], max_age=3600)["org"]
            except BadSignature:
                abort(401)

    def authorize(org_id: str) -> None:
        user_org = g.get("user_org")
        if user_org is None:
            abort(401)
        if not monitor.verify_tenant_isolation(user_org, org_id):
            abort(403)
        if not limiter.allow(org_id):
            monitor.record_rate_limit_hit(org_id, "per_minute")
            abort(429)

    @app.get("/")
    def index():
        # What a person opening the demo app's address can do with it.
        return jsonify(app="flask-mpesa-monitor demo", organizations=sorted(organizations), endpoints={
            "POST /login": '{"username": "demo", "password": ..., "organization": ...} -> a bearer token',
            "POST /orgs/<org_id>/stk-push": '{"phone": ..., "amount": ...}',
            "POST /orgs/<org_id>/reconcile": '{"older_than": seconds}: STK Query for pushes still pending',
            "GET /orgs/<org_id>/transactions": "the tenant's transactions",
            "GET /orgs/<org_id>/balance": "the tenant's balance",
            "GET /health, /health/detailed": "health checks",
            "GET /metrics": "Prometheus metrics (bearer token)",
            "GET /metrics/summary": "24 h figures (a tenant's own, or all with the metrics token)",
        })

    @app.post("/login")
    def login():
        body = request.get_json(silent=True) or {}
        org = str(body.get("organization", ""))
        ok = (org in organizations and body.get("username") == "demo"
              and hmac.compare_digest(str(body.get("password", "")), app.config["DEMO_PASSWORD"]))
        monitor.record_auth_attempt(org if org in organizations else None, ok, ip=client_address())
        if not ok:
            return jsonify(error="invalid credentials"), 401
        return jsonify(token=tokens.dumps({"org": org}))

    @app.post("/orgs/<org_id>/stk-push")
    def stk_push(org_id: str):
        authorize(org_id)
        body = request.get_json(silent=True) or {}
        phone, amount = str(body.get("phone", "")), body.get("amount")
        if not isinstance(amount, int) or amount <= 0 or not phone.isdigit():
            return jsonify(error="phone (digits) and amount (positive integer) are required"), 400
        callback_url = f"{app.config['DEMO_PUBLIC_URL']}/mpesa/callback/{org_id}"
        try:
            ack = daraja.stk_push(org_id, phone, amount, callback_url)
        except Exception as exc:  # classified and counted by the decorator
            return jsonify(error="M-Pesa is not available", detail=type(exc).__name__), 502
        checkout = ack["CheckoutRequestID"]
        monitor.record_stk_push(org_id, checkout, amount)
        store.add_pending(checkout, org_id, amount)
        return jsonify(checkout_request_id=checkout, status="pending"), 202

    @app.post("/mpesa/callback/<org_id>")
    def stk_callback(org_id: str):
        if org_id not in organizations:
            abort(404)
        try:
            result = monitor.record_stk_callback(request.get_json(silent=True), org_id)
        except InvalidCallback as exc:
            return jsonify(ResultCode=1, ResultDesc=str(exc)), 400
        if not result.duplicate:
            store.complete(result.checkout_request_id, result.outcome, result.result_code)
        return jsonify(ResultCode=0, ResultDesc="Accepted")

    def reconcile(org_id: str, older_than: float) -> dict[str, int]:
        """Ask STK Query about the tenant's pushes still pending after ``older_than``
        seconds (their callbacks may be lost) and hand each answer to the monitor, which
        counts it once with any callback that still comes."""
        counts: dict[str, int] = defaultdict(int)
        for checkout in store.pending_before(org_id, time.time() - older_than):
            answer = daraja.stk_query_answer(org_id, checkout)
            try:
                result = monitor.record_stk_query(org_id, checkout, answer)
            except ValueError:  # an answer that is not Daraja's: try again next time
                counts["invalid"] += 1
                continue
            if result.match in ("recovered", "matched"):
                store.complete(checkout, result.outcome, result.result_code)
            counts[result.match] += 1
        return dict(counts)

    @app.post("/orgs/<org_id>/reconcile")
    def reconcile_view(org_id: str):
        authorize(org_id)
        body = request.get_json(silent=True) or {}
        older_than = body.get("older_than", float(app.config["MPESA_MONITOR_STK_CALLBACK_TIMEOUT"]))
        if isinstance(older_than, bool) or not isinstance(older_than, (int, float)) or older_than < 0:
            return jsonify(error="older_than must be a number of seconds"), 400
        return jsonify(organization=org_id, reconciled=reconcile(org_id, float(older_than)))

    interval = app.config["DEMO_RECONCILE_INTERVAL"]
    reconciler = {"pid": None}

    def reconcile_forever() -> None:
        while True:
            time.sleep(interval)
            for org in organizations:
                try:
                    reconcile(org, float(app.config["MPESA_MONITOR_STK_CALLBACK_TIMEOUT"]))
                except Exception:  # the next round tries again
                    app.logger.exception("reconciliation of %s failed", org)

    @app.before_request
    def start_reconciler() -> None:
        # One thread per worker, started after the fork (threads do not survive it).
        if interval > 0 and reconciler["pid"] != os.getpid():
            reconciler["pid"] = os.getpid()
            threading.Thread(target=reconcile_forever, name="demo-reconciler", daemon=True).start()

    @app.get("/orgs/<org_id>/transactions")
    def transactions(org_id: str):
        authorize(org_id)
        return jsonify(transactions=store.transactions(org_id))

    @app.get("/orgs/<org_id>/balance")
    def balance(org_id: str):
        authorize(org_id)
        return jsonify(organization=org_id, balance=store.balance(org_id), currency="KES")

    return app
