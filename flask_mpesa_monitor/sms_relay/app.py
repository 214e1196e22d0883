"""The relay's WSGI app: Alertmanager webhook in, one SMS per firing alert out.

Routes:

- ``POST /alerts``: an Alertmanager webhook notification (version 4). Each firing alert
  becomes one SMS (:func:`.message.format_sms`) sent to every on-call number. Answers
  200 when every text went out (or had gone out within the dedup window), 400 with a
  reason for a body that is not a notification, 502 when the provider failed for any
  recipient, so that Alertmanager retries; the retry reaches only the numbers that did
  not get the text, because deliveries are remembered per (fingerprint, status, number).
  Resolved alerts are not texted unless ``SMS_RELAY_SEND_RESOLVED=true``.
  At most ``SMS_RELAY_MAX_TEXTS_PER_NOTIFICATION`` texts go to one number per
  notification; the rest of its firing alerts become one summary text (``+N more:``
  and their names), so a storm of 3,000 alerts is 6 texts per number, not 3,000.
  With ``SMS_RELAY_AUTH_TOKEN_FILE`` or ``SMS_RELAY_BASIC_AUTH_FILE`` the route needs
  ``Authorization: Bearer ...`` or basic auth (Alertmanager's webhook ``http_config``
  sends either from a file); anything else is 401 and counted.
- ``GET /-/healthy``, ``GET /-/ready``: liveness and readiness (settings loaded).
- ``GET /metrics``: ``sms_relay_messages_total{provider,result}`` (result ``sent``,
  ``failed``, ``deduplicated``; one per alert and number) and
  ``sms_relay_requests_total{code}``, in a registry of its own so that the relay can
  share a process with the extension's default-registry metrics.

Phone numbers never leave the process except towards the provider as recipients: log
lines carry :func:`.masking.mask_phone` forms, answers and metrics carry counts only,
and every text is masked on its own before it is sent (defence in depth: Alertmanager
may hold alerts from any rule or app, not only from the extension that masks them).

Run it with ``python -m flask_mpesa_monitor.sms_relay`` or under gunicorn::

    gunicorn -c python:flask_mpesa_monitor.sms_relay.gunicorn_conf \\
        'flask_mpesa_monitor.sms_relay:create_app()'
"""

from __future__ import annotations

import base64
import hmac
import threading
import time
from collections import Counter as Tally
from collections.abc import Callable
from dataclasses import dataclass

from flask import Flask, Response, jsonify, request
from prometheus_client import CollectorRegistry, Counter, generate_latest

from .config import RelaySettings
from .dedup import DedupStore, incident_key
from .masking import get_logger, mask_phone, mask_phones
from .message import format_sms, format_summary
from .payload import Alert, Notification, PayloadError, parse_notification
from .providers import Provider, make_provider

RESULTS = ("sent", "failed", "deduplicated", "summarized")
REFUSALS = ("invalid_json", "too_deep", "not_a_notification", "unauthorized")
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
    summarized: int = 0

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
            "summarized": self.summarized,
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
            "result (sent, failed, deduplicated; summarized: folded into a summary text "
            "past the per-notification cap).",
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
        self.refused = Counter(
            "sms_relay_refused_notifications",
            "Bodies refused on POST /alerts, by reason (invalid_json, too_deep, "
            "not_a_notification, unauthorized).",
            ["reason"],
            registry=registry,
        )
        for code in ("200", "400", "401", "502"):
            self.requests.labels(code)
        for reason in REFUSALS:
            self.refused.labels(reason)
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
            sent_to: Tally[str] = Tally()  # texts per number in this notification
            overflow: dict[str, list[Alert]] = {}
            for alert in notification.alerts:
                if alert.status == "resolved" and not self.settings.send_resolved:
                    outcome.skipped_resolved += 1
                    continue
                self._text(alert, outcome, sent_to, overflow)
            self._summarize(overflow, outcome)
        return outcome

    def _text(self, alert: Alert, outcome: Outcome, sent_to: Tally[str],
              overflow: dict[str, list[Alert]]) -> None:
        name = alert.labels.get("alertname", "")
        pending = []
        for number in self.settings.recipients:
            if self.store.seen(incident_key(alert.fingerprint, alert.starts_at, alert.status, number)):
                outcome.deduplicated += 1
                self.messages.labels(self.provider.name, "deduplicated").inc()
                logger.info("already texted this incident (%s %s) to %s within %ss; skipped",
                            alert.status, name, mask_phone(number), self.settings.dedup_seconds)
            elif sent_to[number] >= self.settings.max_texts_per_notification:
                overflow.setdefault(number, []).append(alert)
            else:
                sent_to[number] += 1
                pending.append(number)
        if not pending:
            return
        text = mask_phones(format_sms(alert.as_dict()))
        self._deliver(text, pending, [alert], outcome, f"{alert.status} {name}")

    def _summarize(self, overflow: dict[str, list[Alert]], outcome: Outcome) -> None:
        """One summary text per number for the alerts past the cap (numbers that missed
        the same alerts share one provider request)."""
        groups: dict[tuple[tuple[str, str], ...], list[str]] = {}
        for number, alerts in overflow.items():
            key = tuple((a.fingerprint, a.status) for a in alerts)
            groups.setdefault(key, []).append(number)
        for numbers in groups.values():
            alerts = overflow[numbers[0]]
            text = mask_phones(format_summary([a.as_dict() for a in alerts]))
            self.messages.labels(self.provider.name, "summarized").inc(len(alerts) * len(numbers))
            outcome.summarized += len(alerts) * len(numbers)
            self._deliver(text, numbers, alerts, outcome, f"summary of {len(alerts)} alerts")

    def _deliver(self, text: str, numbers: list[str], alerts: list[Alert], outcome: Outcome,
                 what: str) -> None:
        for delivery in self.provider.send(text, numbers):
            if delivery.ok:
                for alert in alerts:
                    self.store.record(incident_key(alert.fingerprint, alert.starts_at, alert.status,
                                                   delivery.recipient))
                outcome.sent += 1
                self.messages.labels(self.provider.name, "sent").inc()
                logger.info("texted %s to %s via %s", what, mask_phone(delivery.recipient), self.provider.name)
            else:
                outcome.failed += 1
                self.messages.labels(self.provider.name, "failed").inc()
                logger.warning("could not text %s to %s via %s: %s", what, mask_phone(delivery.recipient),
                               self.provider.name, delivery.reason)

    def authorized(self, header: str | None) -> bool:
        """True when no auth is configured, or ``header`` carries the bearer token or the
        basic credentials (constant-time comparison)."""
        token, basic = self.settings.auth_token, self.settings.basic_auth
        if not token and not basic:
            return True
        scheme, _, credentials = (header or "").partition(" ")
        credentials = credentials.strip()
        if token and scheme.lower() == "bearer":
            return hmac.compare_digest(credentials.encode(), token.encode())
        if basic and scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(credentials, validate=True)
            except ValueError:
                return False
            return hmac.compare_digest(decoded, basic.encode())
        return False


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
        if not relay.authorized(request.headers.get("Authorization")):
            relay.requests.labels("401").inc()
            relay.refused.labels("unauthorized").inc()
            logger.warning("refused a notification without valid credentials")
            response = jsonify({"status": "error", "error": "credentials required"})
            response.headers["WWW-Authenticate"] = 'Bearer realm="sms-relay"' if relay.settings.auth_token \
                else 'Basic realm="sms-relay"'
            return response, 401
        try:
            notification = parse_notification(request.get_data(cache=False))
        except PayloadError as exc:
            relay.requests.labels("400").inc()
            relay.refused.labels(exc.reason).inc()
            reason = mask_phones(str(exc))[:300]
            logger.warning("refused a notification: %s", reason)
            return jsonify({"status": "error", "error": reason}), 400
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
