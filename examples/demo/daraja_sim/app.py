"""The Flask views of the simulator and its command line (``python -m examples.demo.daraja_sim``).

The views only translate HTTP to :class:`~examples.demo.daraja_sim.simulator.DarajaSimulator`
calls and back; the faults that answer before any Daraja logic (down, latency, token,
spike arrest) are checked in one guard shared by push and query.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from typing import Any

from flask import Flask, Response, jsonify, request

from .config import ConfigError
from .simulator import DarajaSimulator, daraja_error

__all__ = ["create_app", "main"]


def _unavailable() -> Response:
    return Response("Service Unavailable", status=503, mimetype="text/plain")


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the simulator app; ``config`` takes DEFAULTS and STRUCTURAL keys.

    The simulator object is ``app.extensions["daraja_sim"]``; call its ``close()`` when
    done (tests) to stop the callback threads.

    Example::

        app = create_app({"seed": 1, "callback_delay_s": 0.1, "result_mix": {"0": 1}})
    """
    sim = DarajaSimulator(config)
    app = Flask(__name__)
    app.json.sort_keys = False  # keep Daraja's field order
    app.extensions["daraja_sim"] = sim

    @app.get("/oauth/v1/generate")
    def oauth_generate() -> Any:
        eff = sim.effective(None)
        if eff["down"]:
            sim.count("oauth", "down")
            return _unavailable()
        sim.sleep_latency(eff)
        if request.args.get("grant_type") != "client_credentials":
            sim.count("oauth", "bad_grant_type")
            return jsonify(daraja_error("400.008.02", "Invalid grant type passed", sim.request_id())), 400
        auth = request.authorization
        key, secret = (auth.username, auth.password) if auth and auth.type == "basic" else (None, None)
        body, status = sim.issue_token(key, secret)
        return jsonify(body), status

    def _guard(section: str, org: str | None, label: str) -> tuple[Any, dict[str, Any] | None]:
        """Faults and token check shared by push and query: (error response, settings)."""
        eff = sim.effective(org)
        if eff["down"]:
            sim.count(section, "down", label)
            return _unavailable(), None
        sim.sleep_latency(eff)
        if not sim.token_valid(request.headers.get("Authorization")):
            sim.count(section, "invalid_token", label)
            return (jsonify(daraja_error("404.001.03", "Invalid Access Token", sim.request_id())), 404), None
        if sim.spike_arrested(eff):
            sim.count(section, "spike_arrest", label)
            return (jsonify(daraja_error("500.003.02", "Spike Arrest Violation", sim.request_id())), 500), None
        return None, eff

    @app.post("/mpesa/stkpush/v1/processrequest")
    def stk_push() -> Any:
        body = request.get_json(silent=True)
        org, label = sim.organization_of(body)
        sim.count("stk_push", "requests", label)
        if sim.effective(None)["down"]:
            sim.count("stk_push", "down", label)
            return _unavailable()
        failure, eff = _guard("stk_push", org, label)
        if failure is not None:
            return failure
        assert eff is not None
        invalid = sim.validate_push(body)
        if invalid is not None:
            sim.count("stk_push", "bad_request", label)
            return jsonify(invalid[0]), invalid[1]
        wrong = sim.check_password(body)
        if wrong is not None:
            sim.count("stk_push", "wrong_credentials", label)
            return jsonify(wrong[0]), wrong[1]
        return jsonify(sim.accept_push(body, label, eff))

    @app.post("/mpesa/stkpushquery/v1/query")
    def stk_query() -> Any:
        body = request.get_json(silent=True)
        found = sim.checkout(body.get("CheckoutRequestID")) if isinstance(body, dict) else None
        if found is not None and found["org"] in sim.config["orgs"]:
            org, label = found["org"], found["org"]
        else:
            org, label = sim.organization_of(body)
            label = found["org"] if found else label
        sim.count("stk_query", "requests", label)
        if sim.effective(None)["down"]:
            sim.count("stk_query", "down", label)
            return _unavailable()
        failure, _ = _guard("stk_query", org, label)
        if failure is not None:
            return failure
        result, status = sim.query(body)
        return jsonify(result), status

    @app.route("/sim/config", methods=["GET", "POST"])
    def sim_config() -> Any:
        if request.method == "GET":
            return jsonify(sim.config)
        partial = request.get_json(silent=True)
        try:
            return jsonify(sim.update_config(partial if partial is not None else "not JSON"))
        except ConfigError as exc:
            return jsonify({"error": str(exc)}), 400

    @app.post("/sim/reset")
    def sim_reset() -> Any:
        sim.reset()
        return jsonify(sim.config)

    @app.post("/sim/flush")
    def sim_flush() -> Any:
        return jsonify({"completed": sim.flush()})

    @app.post("/sim/tokens/expire")
    def sim_expire_tokens() -> Any:
        return jsonify({"expired": sim.expire_tokens()})

    @app.get("/sim/stats")
    def sim_stats() -> Any:
        return jsonify(sim.stats())

    return app


def _delay_arg(text: str) -> list[float]:
    parts = [float(p) for p in text.split(",")]
    if len(parts) not in (1, 2):
        raise argparse.ArgumentTypeError("use S or MIN,MAX (seconds)")
    return [parts[0], parts[-1]]


def main(argv: list[str] | None = None) -> int:
    """Serve the simulator until Ctrl-C or SIGTERM."""
    from werkzeug.serving import make_server

    parser = argparse.ArgumentParser(prog="python -m examples.demo.daraja_sim",
                                     description=sys.modules[__package__].__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--callback-delay", type=_delay_arg, default=None, metavar="S|MIN,MAX")
    parser.add_argument("--config", default=None, help="a JSON file of start settings")
    parser.add_argument("--quiet", action="store_true", help="no request log lines")
    args = parser.parse_args(argv)

    config: dict[str, Any] = {}
    if args.config:
        with open(args.config, encoding="utf-8") as handle:
            config.update(json.load(handle))
    if args.seed is not None:
        config["seed"] = args.seed
    if args.callback_delay is not None:
        config["callback_delay_s"] = args.callback_delay
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.quiet:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
    try:
        app = create_app(config)
    except ConfigError as exc:
        parser.error(str(exc))
    server = make_server(args.host, args.port, app, threaded=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"daraja-sim listening on http://{args.host}:{server.server_port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        app.extensions["daraja_sim"].close()
        server.server_close()
    return 0
