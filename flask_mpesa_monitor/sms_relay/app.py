"""The relay's WSGI app: Alertmanager webhook in, one SMS per firing alert out.

Routes:

- ``POST /alerts``: an Alertmanager webhook notification (version 4). Each firing alert
  becomes one SMS (:func:`.message.format_sms`) sent to every on-call number. Answers
  200 when every text went out (or had gone out within the dedup window), 400 with a
  reason for a body that is not a notification, 502 when the provider failed for any
  recipient, so that Alertmanager retries; the retry reaches only the numbers that did
  not get the text, because deliveries are remembered per (fingerprint, status, number).
  Resolved alerts are not texted unless ``SMS_RELAY_SEND_RESOLVED=true``.
- ``GET /-/healthy``, ``GET /-/ready``: liveness and readiness (settings loaded).
- ``GET /metrics``: ``sms_relay_messages_total{provider,result}`` (result ``sent``,
  ``failed``, ``deduplicated``; one per alert and number) and
  ``sms_relay_requests_total{code}``, in a registry of its own so that the relay can
  share a process with the extension's default-registry metrics.

Phone numbers never leave the process except towards the provider: log lines carry
:func:`.masking.mask_phone` forms, answers and metrics carry counts only.

Run it with ``python -m flask_mpesa_monitor.sms_relay`` or under gunicorn::

    gunicorn -c python:flask_mpesa_monitor.sms_relay.gunicorn_conf \\
        'flask_mpesa_monitor.sms_relay:create_app()'
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

from flask import Flask, Response, jsonify, request
from prometheus_client import CollectorRegistry, Counter, generate_latest

from .config import RelaySettings
from .dedup import DedupStore, incident_key
from .masking import get_logger, mask_phone
from .message import format_sms
from .payload import Alert, Notification, PayloadError, parse_notification
from .providers import Provider, make_provider

RESULTS = ("sent", "failed", "deduplicated")
MAX_BODY_BYTES = 1024 * 1024
# The classic text format, spelled out: newer prometheus_client versions call
# 1.0.0 "latest", which older Prometheus servers (2.42 in the tests) do not announce.
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

logger = get_logger()


@dataclass
class Outcome:
    """Counts for one notification; what ``POST /alerts`` answers (never a number)."""

    sent: int = 0
    failed: int = 0
    deduplicated: int = 0
    skipped_resolved: int = 0

    @property
    def http_status(self) -> int:
        return 502 if self.failed else 200

    def as_dict(self) -> dict[str, object]:
        return {
            "status": "error" if self.failed else "ok",
            "sent": self.sent,
            "failed": self.failed,
            "deduplicated": self.deduplicated,
            "skipped_resolved": self.skipped_resolved,
        }


class Relay:
    """Turns notifications into texts; holds the provider, the dedup store and metrics."""

    def __init__(self, settings: RelaySettings, provider: Provider, store: DedupStore,
                 registry: CollectorRegistry) -> None:
        self.settings = settings
        self.provider = provider
        self.store = store
        self.registry = registry
        self.messages = Counter(
            "sms_relay_messages",
            "Texts handled, one per firing alert and on-call number, by provider and "
            "result (sent, failed, deduplicated).",
            ["provider", "result"],
            registry=registry,
        )
        self.requests = Counter(
            "sms_relay_requests",
            "Webhook notifications received on POST /alerts, by HTTP answer.",
            ["code"],
            registry=registry,
        )
        for result in RESULTS:
            self.messages.labels(provider.name, result)
        for code in ("200", "400", "502"):
            self.requests.labels(code)
        # One notification at a time: a retry racing its original (or the second
        # Alertmanager of an HA pair) must see the first one's deliveries, or the same
        # alert would be texted twice. Texts are few; throughput is not the concern.
        self._lock = threading.Lock()

    def handle(self, notification: Notification) -> Outcome:
        outcome = Outcome()
        if notification.truncated_alerts:
            logger.warning(
                "notification truncated by Alertmanager: %d alerts not included "
                "(max_alerts of the webhook config)", notification.truncated_alerts,
            )
        with self._lock:
            for alert in notification.alerts:
                if alert.status == "resolved" and not self.settings.send_resolved:
                    outcome.skipped_resolved += 1
                    continue
                self._text(alert, outcome)
        return outcome

    def _text(self, alert: Alert, outcome: Outcome) -> None:
        name = alert.labels.get("alertname", "")
        pending = []
        for number in self.settings.recipients:
            if self.store.seen(incident_key(alert.fingerprint, alert.starts_at, alert.status, number)):
                outcome.deduplicated += 1
                self.messages.labels(self.provider.name, "deduplicated").inc()
                logger.info("already texted this incident (%s %s) to %s within %ss; skipped",
                            alert.status, name, mask_phone(number), self.settings.dedup_seconds)
            else:
                pending.append(number)
        if not pending:
            return
        text = format_sms(alert.as_dict())
        for delivery in self.provider.send(text, pending):
            if delivery.ok:
                self.store.record(incident_key(alert.fingerprint, alert.starts_at, alert.status, delivery.recipient))
                outcome.sent += 1
                self.messages.labels(self.provider.name, "sent").inc()
                logger.info("texted %s %s to %s via %s", alert.status, name,
                            mask_phone(delivery.recipient), self.provider.name)
            else:
                outcome.failed += 1
                self.messages.labels(self.provider.name, "failed").inc()
                logger.warning("could not text %s %s to %s via %s: %s", alert.status, name,
                               mask_phone(delivery.recipient), self.provider.name,
                               delivery.reason)


def create_app(settings: RelaySettings | None = None, *, provider: Provider | None = None,
               clock: Callable[[], float] = time.monotonic) -> Flask:
    """Build the relay; settings from the ``SMS_RELAY_*`` environment when not given.

    ``provider`` replaces the one the settings name (another gateway, a double);
    ``clock`` drives the dedup window (tests move it by hand). Production passes neither.
    """
    settings = settings if settings is not None else RelaySettings.from_env()
    provider = provider if provider is not None else make_provider(settings)
    relay = Relay(settings, provider, DedupStore(settings.dedup_seconds, clock), CollectorRegistry())

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.extensions["sms_relay"] = relay

    @app.post("/alerts")
    def alerts() -> tuple[Response, int]:
        try:
            notification = parse_notification(request.get_data(cache=False))
        except PayloadError as exc:
            relay.requests.labels("400").inc()
            logger.warning("refused a notification: %s", exc)
            return jsonify({"status": "error", "error": str(exc)}), 400
        outcome = relay.handle(notification)
        relay.requests.labels(str(outcome.http_status)).inc()
        return jsonify(outcome.as_dict()), outcome.http_status

    @app.get("/-/healthy")
    def healthy() -> Response:
        return Response("OK\n", mimetype="text/plain")

    @app.get("/-/ready")
    def ready() -> Response:
        return Response("OK\n", mimetype="text/plain")

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(relay.registry), content_type=METRICS_CONTENT_TYPE)

    return app
