"""The blueprint: ``/health``, ``/health/detailed``, ``/metrics``, ``/metrics/summary``."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING

from flask import Blueprint, Response, current_app, jsonify, request

from ._version import __version__

if TYPE_CHECKING:
    from .extension import _State

bp = Blueprint("mpesa_monitor", __name__)


def _state() -> "_State":
    return current_app.extensions["mpesa_monitor"]


def utc_now_iso() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def _unauthorized() -> Response:
    response = jsonify(error="unauthorized", message="This endpoint needs credentials.")
    response.status_code = 401
    response.headers["WWW-Authenticate"] = 'Bearer realm="metrics", Basic realm="metrics"'
    return response


@bp.get("/health")
def health() -> Response:
    """Liveness: answers without touching any dependency."""
    return jsonify(status="healthy", timestamp=utc_now_iso(), version=__version__)


@bp.get("/metrics")
def metrics_endpoint() -> Response:
    exporter = _state().exporter
    if not exporter.authorized(request.headers.get("Authorization")):
        return _unauthorized()
    body, content_type = exporter.render(request.headers.get("Accept"))
    return Response(body, status=200, content_type=content_type)
