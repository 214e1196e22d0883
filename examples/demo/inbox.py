"""A local inbox for alert notifications: Slack webhooks, email (SMTP) and SMS providers.

Why: the local stack and the end-to-end tests must show that an alert really reached
Slack, email and SMS, without the internet. Alertmanager posts to the Slack-compatible
receiver and sends mail to the SMTP server; the SMS relay talks to the fake SMS provider
with either Africa's Talking's or Twilio's API. Everything received is listed on a small
page and through a JSON API, with the alert name, status, severity and organization
parsed from the text when they can be recognised.

HTTP endpoints::

    POST /slack/<anything>                       Slack incoming-webhook JSON (text,
                                                 attachments, blocks) or form payload=;
                                                 answers "ok" as Slack does
    POST /version1/messaging                     Africa's Talking: form username, to,
                                                 message, from; header apiKey -> 201
    POST /version1/messaging/bulk                Africa's Talking JSON variant
    POST /2010-04-01/Accounts/<sid>/Messages.json   Twilio: basic auth sid:token, form
                                                 To, From, Body -> 201
    GET  /                                       what each channel received, newest first
    GET  /api/messages?channel=slack|email|sms   JSON; also filters alertname, status,
                                                 severity, organization, since (epoch s), limit
    DELETE /api/messages[?channel=...]           clear
    GET  /api/stats                              counts per channel, SMS failures
    GET  /dashboards                             every Grafana panel with a link to its
                                                 query on Prometheus' graph page
    GET  /runbooks                               docs/runbooks.md, a #<alertname> anchor per
                                                 section (where the local stack's alerts link)
    GET  /alertmanager                           Alertmanager's current alerts and silences
    GET|POST /sms/fail                           make the SMS provider fail:
                                                 {"enabled": true, "status": 503, "count": 2}
                                                 (count: fail only the next N sends)

SMTP: ``start_smtp(inbox, port=...)`` (aiosmtpd, 127.0.0.1, no TLS, no AUTH: render
Alertmanager's email receiver with ``require_tls: false``).

Memory is bounded (the last ``max_per_channel`` messages of each channel) and every
access holds one lock. SMS recipients are stored masked (``+2547******12``). One process
holds the state: do not run the inbox under several gunicorn workers.

Run::

    python -m examples.demo.inbox --http-port 8025 --smtp-port 2525
"""

from __future__ import annotations

import argparse
import email
import email.policy
import html
import itertools
import json
import logging
import re
import secrets
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from flask import Flask, Response, jsonify, request

from examples.demo.dashboards import DEFAULT_JOB
from examples.demo.inbox_views import NAV, init_views

__all__ = ["create_app", "Inbox", "parse_alert_text", "mask_phone", "start_smtp", "CHANNELS", "main"]

log = logging.getLogger(__name__)

CHANNELS = ("slack", "email", "sms")
_VIEW_SETTINGS = ("prometheus_url", "alertmanager_url", "organizations", "rate_interval", "range_", "job")
MAX_TEXT_CHARS = 20000

#: Alert names from docs/DESIGN.md, recognised anywhere in a text when no label names one.
KNOWN_ALERTS = (
    "MPesaMCPDown",
    "DatabaseDown",
    "HighErrorRate",
    "MPesaAPIFailures",
    "CrossTenantAccessAttempt",
    "TokenRefreshFailures",
    "HighResponseTime",
    "TransactionFailureSpike",
    "SecurityEvents",
    "AuthenticationFailures",
    "STKCallbacksMissing",
    "STKTimeoutSurge",
    "AuditLogTampering",
    "HighResourceUsage",
    "RateLimitWarnings",
    "SlowDatabaseQueries",
    "STKSuccessSLOBurnFast",
    "STKSuccessSLOBurnSlow",
    "LowDailyRevenue",
    "UnusualTransactionPattern",
    "Watchdog",
)

_NAME = r"([A-Za-z_][A-Za-z0-9_]*)"
_QUOTES = r"[\"'`*_\s]*"
_SEVERITY_WORDS = r"(?:CRITICAL|HIGH|MEDIUM|LOW|WARNING|INFO)"
# "[FIRING:2] CRITICAL DatabaseDown (acme)": Alertmanager titles and subjects (ours name
# the severity before the alert; the default ones do not).
_RE_TITLE = re.compile(
    r"\[(FIRING|RESOLVED)(?::\d+)?\]\s*(?:" + _SEVERITY_WORDS + r"\s+)?" + _NAME
    + r"?(?:\s*\(([A-Za-z0-9_.-]{1,64})\))?",
    re.IGNORECASE,
)
# "RESOLVED HIGH MPesaAPIFailures org=acme: ...": the SMS relay's texts.
_RE_SMS_HEAD = re.compile(r"^\s*(RESOLVED\s+)?" + _SEVERITY_WORDS + r"\s+" + _NAME + r"\b")
_RE_ALERTNAME = re.compile(r"(?i:\balert_?name)" + _QUOTES + r"[:=]?" + _QUOTES + _NAME)
_RE_STATUS = re.compile(r"(?i:\bstatus)" + _QUOTES + r"[:=]?" + _QUOTES + r"(firing|resolved)\b", re.IGNORECASE)
_RE_SEVERITY = re.compile(
    r"(?i:\bseverity)" + _QUOTES + r"[:=]?" + _QUOTES + r"(critical|high|medium|low|warning|info)\b", re.IGNORECASE
)
_RE_SEVERITY_WORD = re.compile(r"\b(CRITICAL|HIGH|MEDIUM|WARNING|INFO)\b")
_RE_PARENS = re.compile(r"\(([^()]{0,200})\)")
_SEVERITIES = ("critical", "high", "medium", "low", "warning", "info")
_NOT_NAMES = {"firing", "resolved", *_SEVERITIES}
# "organization=acme", "*Organization:* acme", "org: acme": a separator is required (so
# "another organization's data" names none) and the value ends with a letter or digit
# (so "org=duka." at the end of a sentence is duka).
_RE_ORGANIZATION = re.compile(
    r"(?i:\borg(?:anization)?\b)[*_`\s]*[:=]" + _QUOTES + r"([A-Za-z0-9](?:[A-Za-z0-9_.-]{0,62}[A-Za-z0-9])?)"
)
_RE_KNOWN = re.compile(r"\b(" + "|".join(sorted(KNOWN_ALERTS, key=len, reverse=True)) + r")\b")
_RE_PHONE = re.compile(r"^\+?\d{9,15}$")


def mask_phone(number: str) -> str:
    """Keep the country/network prefix and the last two digits: ``+2547******12``."""
    number = str(number).strip()
    plus = "+" if number.startswith("+") else ""
    digits = number.lstrip("+")
    if len(digits) < 7:
        return plus + "*" * len(digits)
    return plus + digits[:4] + "*" * (len(digits) - 6) + digits[-2:]


def parse_alert_text(text: str) -> dict[str, Any]:
    """Recognise alert name(s), status, severity and organization in a notification.

    Works on Alertmanager's default titles (``[FIRING:2] DatabaseDown ...``), label
    listings (``alertname = X``, ``severity: critical``, ``organization=acme``) and free
    text naming a known alert. Fields that cannot be recognised are None.

    >>> parse_alert_text("[RESOLVED] DatabaseDown severity=critical")["status"]
    'resolved'
    """
    title = _RE_TITLE.search(text)
    sms_head = _RE_SMS_HEAD.match(text)
    names = _RE_ALERTNAME.findall(text)
    if title and title.group(2):
        names.append(title.group(2))
    if sms_head:
        names.append(sms_head.group(2))
    names += _RE_KNOWN.findall(text)
    alertnames = list(dict.fromkeys(n for n in names if n.lower() not in _NOT_NAMES))

    status = None
    if title:
        status = title.group(1).lower()
    elif sms_head:  # the relay marks resolutions; anything else it sends is firing
        status = "resolved" if sms_head.group(1) else "firing"
    elif match := _RE_STATUS.search(text):
        status = match.group(1).lower()
    else:
        words = re.findall(r"\b(firing|resolved)\b", text, re.IGNORECASE)
        status = words[0].lower() if words else None

    severity = None
    if match := _RE_SEVERITY.search(text):
        severity = match.group(1).lower()
    elif match := _RE_SEVERITY_WORD.search(text):
        severity = match.group(1).lower()
    else:  # Alertmanager's default title ends with the group labels: "(mpesa-mcp critical)"
        for group in _RE_PARENS.findall(text):
            words = [w for w in group.lower().split() if w in _SEVERITIES]
            if words:
                severity = words[0]
                break

    organization = None
    if match := _RE_ORGANIZATION.search(text):
        organization = match.group(1)
    elif title and title.group(3) and title.group(3).lower() not in _NOT_NAMES:
        organization = title.group(3)  # "[FIRING:1] HIGH X (acme)": our titles' group label

    return {
        "alertname": alertnames[0] if alertnames else None,
        "alertnames": alertnames,
        "status": status,
        "severity": severity,
        "organization": organization,
    }


class Inbox:
    """Messages received per channel, newest last, bounded; thread-safe."""

    def __init__(self, max_per_channel: int = 500) -> None:
        self.watchdog_pings = 0
        self.last_watchdog_ping: float | None = None
        if max_per_channel < 1:
            raise ValueError(f"max_per_channel must be at least 1, got {max_per_channel}.")
        self._lock = threading.Lock()
        self._messages = {channel: deque(maxlen=max_per_channel) for channel in CHANNELS}
        self._received = {channel: 0 for channel in CHANNELS}
        self._ids = itertools.count(1)
        self._sms_fail = {"enabled": False, "status": 503, "count": None}
        self._sms_failures = 0

    def record(self, channel: str, text: str, *, parse_from: str | None = None, **extra: Any) -> dict[str, Any]:
        """Store one notification; parse what it is about (from ``parse_from`` when the
        stored text is only part of it); return the stored record."""
        if channel not in self._messages:
            raise ValueError(f"unknown channel {channel!r}; use one of {CHANNELS}.")
        text = text[:MAX_TEXT_CHARS]
        now = time.time()
        message = {
            "channel": channel,
            "received_at": datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds"),
            "received_ts": now,
            **parse_alert_text((parse_from or text)[: 2 * MAX_TEXT_CHARS]),
            "text": text,
            **extra,
        }
        with self._lock:
            message["id"] = next(self._ids)
            self._messages[channel].append(message)
            self._received[channel] += 1
        return message

    def messages(
        self,
        channel: str | None = None,
        *,
        since: float | None = None,
        limit: int | None = None,
        **match: str | None,
    ) -> list[dict[str, Any]]:
        """Newest first; ``match`` keeps messages whose field equals the value
        (``alertname`` also matches any of a grouped notification's ``alertnames``)."""
        channels: Iterable[str] = [channel] if channel else CHANNELS
        with self._lock:
            found = [dict(m) for c in channels for m in self._messages[c]]
        found.sort(key=lambda m: m["id"], reverse=True)
        if since is not None:
            found = [m for m in found if m["received_ts"] >= since]
        for field, value in match.items():
            if value is None:
                continue
            if field == "alertname":
                found = [m for m in found if value in m["alertnames"]]
            else:
                found = [m for m in found if m.get(field) == value]
        return found[:limit] if limit is not None else found

    def clear(self, channel: str | None = None) -> None:
        with self._lock:
            for c in [channel] if channel else CHANNELS:
                self._messages[c].clear()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "received": dict(self._received),
                "stored": {c: len(m) for c, m in self._messages.items()},
                "sms_failures": self._sms_failures,
                "sms_fail": dict(self._sms_fail),
                "watchdog_pings": self.watchdog_pings,
                "last_watchdog_ping": self.last_watchdog_ping,
            }

    def watchdog_ping(self) -> None:
        """The dead man's switch: Alertmanager pings it while the pipeline works."""
        with self._lock:
            self.watchdog_pings += 1
            self.last_watchdog_ping = time.time()

    def set_sms_fail(self, enabled: bool, status: int = 503, count: int | None = None) -> dict[str, Any]:
        """Make the next SMS sends fail with ``status`` (all of them, or ``count``)."""
        if not 400 <= status <= 599:
            raise ValueError(f"status must be an HTTP error status (400-599), got {status}.")
        if count is not None and count < 1:
            raise ValueError(f"count must be at least 1 or null, got {count}.")
        with self._lock:
            self._sms_fail = {"enabled": bool(enabled), "status": status, "count": count}
            return dict(self._sms_fail)

    def sms_fail_state(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._sms_fail)

    def take_sms_failure(self) -> int | None:
        """The status to fail this SMS send with, or None to accept it."""
        with self._lock:
            state = self._sms_fail
            if not state["enabled"]:
                return None
            if state["count"] is not None:
                state["count"] -= 1
                if state["count"] <= 0:
                    state["enabled"], state["count"] = False, None
            self._sms_failures += 1
            return state["status"]


# ------------------------------------------------------------------------------ Slack


def _slack_text(payload: dict[str, Any]) -> str:
    """All human-readable text of a Slack message: text, attachments, blocks."""
    parts: list[str] = []

    def add(value: Any) -> None:
        if isinstance(value, str) and value.strip() and value not in parts:
            parts.append(value)

    def walk_block(node: Any, depth: int = 0) -> None:
        if depth > 8:
            return
        if isinstance(node, dict):
            if isinstance(node.get("text"), str):
                add(node["text"])
            for value in node.values():
                if isinstance(value, (dict, list)):
                    walk_block(value, depth + 1)
        elif isinstance(node, list):
            for item in node[:100]:
                walk_block(item, depth + 1)

    add(payload.get("text"))
    for attachment in (payload.get("attachments") or [])[:100]:
        if not isinstance(attachment, dict):
            continue
        for key in ("pretext", "title", "text"):
            add(attachment.get(key))
        for field in (attachment.get("fields") or [])[:100]:
            if isinstance(field, dict):
                add(f"{field.get('title', '')}: {field.get('value', '')}")
        if not any(attachment.get(k) for k in ("pretext", "title", "text")):
            add(attachment.get("fallback"))
        walk_block(attachment.get("blocks"))
    walk_block(payload.get("blocks"))
    return "\n".join(parts)


# ------------------------------------------------------------------------------ email


def _email_part_text(message: email.message.EmailMessage, subtype: str) -> str:
    """The text of a mail's text/<subtype> body part ('' if none); HTML loses its tags."""
    part = message.get_body(preferencelist=(subtype,))
    if part is None:
        return ""
    try:
        content = part.get_content()
    except (LookupError, UnicodeError):
        content = (part.get_payload(decode=True) or b"").decode("utf-8", "replace")
    if subtype == "html":
        content = re.sub(r"(?is)<(script|style)\b.*?</\1>", " ", content)
        content = re.sub(r"(?is)<br\s*/?>|</(p|div|tr|li|h\d)>", "\n", content)
        content = html.unescape(re.sub(r"(?s)<[^>]+>", " ", content))
        content = "\n".join(" ".join(line.split()) for line in content.splitlines() if line.strip())
    return content


class _SMTPHandler:
    """aiosmtpd handler: every mail delivered becomes an ``email`` message."""

    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        try:
            parsed = email.message_from_bytes(envelope.original_content or envelope.content,
                                              policy=email.policy.default)
            subject = str(parsed.get("Subject", ""))
            plain, rich = _email_part_text(parsed, "plain"), _email_part_text(parsed, "html")
        except Exception:  # a malformed mail is still a mail that arrived
            log.exception("could not parse a mail; keeping it raw")
            subject, plain, rich = "", (envelope.content or b"").decode("utf-8", "replace"), ""
        self.inbox.record(
            "email",
            f"{subject}\n{plain or rich}".strip(),
            parse_from=f"{subject}\n{plain}\n{rich}",
            subject=subject,
            mail_from=envelope.mail_from,
            rcpt_to=list(envelope.rcpt_tos),
        )
        return "250 Message accepted for delivery"


def start_smtp(inbox: Inbox, host: str = "127.0.0.1", port: int = 2525) -> Any:
    """Start the SMTP server in its own thread; return the controller (``.port``, ``.stop()``).

    ``port=0`` picks a free port (read it from the returned controller's ``port``).
    """
    from aiosmtpd.controller import Controller

    # aiosmtpd logs every SMTP command at INFO, AUTH lines (credentials) included.
    logging.getLogger("mail.log").setLevel(logging.WARNING)

    class _Controller(Controller):
        def _trigger_server(self) -> None:  # learn the real port before the self-test
            if self.port == 0 and self.server is not None:
                self.port = self.server.sockets[0].getsockname()[1]
            super()._trigger_server()

    controller = _Controller(_SMTPHandler(inbox), hostname=host, port=port, data_size_limit=1 << 20)
    controller.start()
    return controller


# ------------------------------------------------------------------------------- SMS


def _twilio_error(code: int, message: str, status: int) -> tuple[Response, int]:
    body = {"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status}
    return jsonify(body), status


def _at_recipients(numbers: list[str]) -> tuple[list[dict[str, Any]], int]:
    recipients, sent = [], 0
    for number in numbers:
        if _RE_PHONE.match(number):
            sent += 1
            recipients.append(
                {
                    "statusCode": 101,
                    "number": number,
                    "status": "Success",
                    "cost": "KES 0.8000",
                    "messageId": "ATXid_" + secrets.token_hex(16),
                }
            )
        else:
            recipients.append(
                {"statusCode": 403, "number": number, "status": "InvalidPhoneNumber", "cost": "0", "messageId": "None"}
            )
    return recipients, sent


# ----------------------------------------------------------------------------- views

_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><meta http-equiv="refresh" content="5">
<title>demo inbox</title>
<style>body{{font-family:sans-serif;margin:1em}}table{{border-collapse:collapse;width:100%;table-layout:fixed}}
td,th{{border:1px solid #ccc;padding:4px;vertical-align:top;font-size:13px;overflow-wrap:anywhere}}
th:last-child{{width:55%}}nav a{{margin-right:1em}}
pre{{white-space:pre-wrap;overflow-wrap:anywhere;margin:0;max-height:8em;overflow:auto}}
.firing{{color:#b00}}.resolved{{color:#070}}</style></head>
<body>{nav}<h1>demo inbox</h1><p>Newest first; refreshes every 5 s. JSON: <a href="/api/messages">/api/messages</a></p>
{sections}</body></html>"""


def _page(inbox: Inbox, per_channel: int = 50) -> str:
    sections = []
    for channel in CHANNELS:
        rows = []
        for m in inbox.messages(channel, limit=per_channel):
            cells = [
                m["received_at"],
                m["alertname"] or "",
                f'<span class="{html.escape(m["status"] or "")}">{html.escape(m["status"] or "")}</span>',
                m["severity"] or "",
                m["organization"] or "",
                f"<pre>{html.escape(m['text'][:2000])}</pre>",
            ]
            escaped = [c if i in (2, 5) else html.escape(str(c)) for i, c in enumerate(cells)]
            rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in escaped) + "</tr>")
        head = ("<tr><th>received</th><th>alert</th><th>status</th><th>severity</th><th>organization</th>"
                "<th>text</th></tr>")
        body = "".join(rows) or '<tr><td colspan="6">nothing yet</td></tr>'
        sections.append(f"<h2>{channel}</h2><table>{head}{body}</table>")
    return _PAGE.format(sections="".join(sections), nav=NAV)


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the inbox's HTTP app. ``config``: ``{"max_per_channel": 500}``, and for the
    dashboards and Alertmanager pages ``prometheus_url``, ``alertmanager_url``,
    ``organizations``, ``rate_interval``, ``range_``, ``job``.

    The store is ``app.extensions["demo_inbox"]`` (pass it to ``start_smtp``).
    """
    config = dict(config or {})
    inbox = config.pop("inbox", None) or Inbox(int(config.pop("max_per_channel", 500)))
    views = {key: config.pop(key) for key in _VIEW_SETTINGS if key in config}
    if config:
        raise ValueError(f"unknown inbox settings: {sorted(config)}; known: max_per_channel, inbox, "
                         f"{', '.join(_VIEW_SETTINGS)}.")
    app = Flask(__name__)
    app.json.sort_keys = False
    app.extensions["demo_inbox"] = inbox
    init_views(app, **views)

    @app.post("/slack/<path:hook>")
    def slack(hook: str) -> Any:
        payload = request.get_json(silent=True)
        if payload is None and "payload" in request.form:
            try:
                payload = json.loads(request.form["payload"])
            except ValueError:
                payload = None
        if not isinstance(payload, dict):
            return Response("invalid_payload", status=400, mimetype="text/plain")
        text = _slack_text(payload)
        if not text:
            return Response("no_text", status=400, mimetype="text/plain")
        inbox.record("slack", text, hook=hook[:200], slack_channel=payload.get("channel"))
        return Response("ok", status=200, mimetype="text/plain")

    def _record_sms(provider: str, message: str, numbers: list[str], sender: Any, **extra: Any) -> None:
        inbox.record(
            "sms",
            message,
            provider=provider,
            to=[mask_phone(n) for n in numbers],
            sender=sender,
            **extra,
        )

    @app.post("/version1/messaging")
    @app.post("/version1/messaging/bulk")
    def africastalking() -> Any:
        if not request.headers.get("apiKey"):
            return Response("The supplied authentication is invalid", status=401, mimetype="text/plain")
        failure = inbox.take_sms_failure()
        if failure is not None:
            return Response("Internal Server Error", status=failure, mimetype="text/plain")
        if request.path.endswith("/bulk"):
            data = request.get_json(silent=True) or {}
            numbers = [str(n).strip() for n in data.get("phoneNumbers") or [] if str(n).strip()]
            username, message, sender = data.get("username"), data.get("message"), data.get("senderId")
        else:
            form = request.form
            numbers = [n.strip() for n in form.get("to", "").split(",") if n.strip()]
            username, message, sender = form.get("username"), form.get("message"), form.get("from")
        for name, value in (("username", username), ("to", numbers), ("message", message)):
            if not value:
                return Response(f"Request is missing required form field '{name}'", status=400, mimetype="text/plain")
        recipients, sent = _at_recipients(numbers)
        if sent:
            _record_sms("africastalking", str(message), [r["number"] for r in recipients if r["statusCode"] == 101],
                        sender, username=username)
        return jsonify(
            {
                "SMSMessageData": {
                    "Message": f"Sent to {sent}/{len(numbers)} Total Cost: KES {0.8 * sent:.4f}",
                    "Recipients": recipients,
                }
            }
        ), 201

    @app.post("/2010-04-01/Accounts/<sid>/Messages.json")
    def twilio(sid: str) -> Any:
        auth = request.authorization
        if not auth or auth.type != "basic" or auth.username != sid or not auth.password:
            return _twilio_error(20003, "Authenticate", 401)
        failure = inbox.take_sms_failure()
        if failure is not None:
            return _twilio_error(20500, "Internal Server Error", failure)
        form = request.form
        to, body = form.get("To", "").strip(), form.get("Body", "")
        sender, service = form.get("From"), form.get("MessagingServiceSid")
        if not to:
            return _twilio_error(21604, "A 'To' phone number is required.", 400)
        if not body:
            return _twilio_error(21602, "Message body is required.", 400)
        if not sender and not service:
            return _twilio_error(21603, "A 'From' phone number is required.", 400)
        if not _RE_PHONE.match(to):
            return _twilio_error(21211, f"The 'To' number {mask_phone(to)} is not a valid phone number.", 400)
        _record_sms("twilio", body, [to], sender or service)
        message_sid = "SM" + secrets.token_hex(16)
        now = format_datetime(datetime.now(UTC), usegmt=False)
        uri = f"/2010-04-01/Accounts/{sid}/Messages/{message_sid}"
        return jsonify(
            {
                "sid": message_sid,
                "date_created": now,
                "date_updated": now,
                "date_sent": None,
                "account_sid": sid,
                "to": to,
                "from": sender,
                "messaging_service_sid": service,
                "body": body,
                "status": "queued",
                "num_segments": str(max(1, -(-len(body) // 160))),
                "num_media": "0",
                "direction": "outbound-api",
                "api_version": "2010-04-01",
                "price": None,
                "price_unit": "USD",
                "error_code": None,
                "error_message": None,
                "uri": uri + ".json",
                "subresource_uris": {"media": uri + "/Media.json"},
            }
        ), 201

    @app.route("/sms/fail", methods=["GET", "POST"])
    def sms_fail() -> Any:
        if request.method == "GET":
            return jsonify(inbox.sms_fail_state())
        data = request.get_json(silent=True) or {}
        if not isinstance(data, dict):
            return jsonify({"error": "send a JSON object"}), 400
        try:
            state = inbox.set_sms_fail(
                bool(data.get("enabled", True)), int(data.get("status", 503)),
                None if data.get("count") is None else int(data["count"]),
            )
        except (TypeError, ValueError) as exc:
            return jsonify({"error": str(exc)}), 400
        return jsonify(state)

    @app.get("/api/messages")
    def api_messages() -> Any:
        args = request.args
        channel = args.get("channel")
        if channel and channel not in CHANNELS:
            return jsonify({"error": f"channel must be one of {', '.join(CHANNELS)}"}), 400
        try:
            since = float(args["since"]) if "since" in args else None
            limit = int(args["limit"]) if "limit" in args else None
        except ValueError:
            return jsonify({"error": "since is epoch seconds, limit an integer"}), 400
        found = inbox.messages(
            channel,
            since=since,
            limit=limit,
            alertname=args.get("alertname"),
            status=args.get("status"),
            severity=args.get("severity"),
            organization=args.get("organization"),
        )
        return jsonify({"count": len(found), "messages": found})

    @app.delete("/api/messages")
    def api_clear() -> Any:
        channel = request.args.get("channel")
        if channel and channel not in CHANNELS:
            return jsonify({"error": f"channel must be one of {', '.join(CHANNELS)}"}), 400
        inbox.clear(channel)
        return jsonify({"cleared": channel or "all"})

    @app.post("/watchdog")
    def watchdog() -> Any:
        inbox.watchdog_ping()
        return Response("ok", status=200, mimetype="text/plain")

    @app.get("/api/stats")
    def api_stats() -> Any:
        return jsonify(inbox.stats())

    @app.get("/")
    def index() -> Any:
        return Response(_page(inbox), mimetype="text/html")

    return app


# ------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    """Serve the HTTP side and the SMTP server until Ctrl-C or SIGTERM."""
    from werkzeug.serving import make_server

    parser = argparse.ArgumentParser(prog="python -m examples.demo.inbox", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--http-port", type=int, default=8025)
    parser.add_argument("--smtp-port", type=int, default=2525)
    parser.add_argument("--max-per-channel", type=int, default=500)
    parser.add_argument("--quiet", action="store_true", help="no request log lines")
    parser.add_argument("--prometheus-url", help="Prometheus for the dashboards view's graph links")
    parser.add_argument("--alertmanager-url", help="Alertmanager whose alerts and silences to show")
    parser.add_argument("--organizations", default="", help="comma-separated choices for $organization")
    parser.add_argument("--job", default=DEFAULT_JOB, help="the app's scrape job, for $job (default %(default)s)")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.quiet:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
    app = create_app({"max_per_channel": args.max_per_channel, "prometheus_url": args.prometheus_url,
                      "alertmanager_url": args.alertmanager_url, "job": args.job,
                      "organizations": tuple(o for o in args.organizations.split(",") if o)})
    smtp = start_smtp(app.extensions["demo_inbox"], args.host, args.smtp_port)
    server = make_server(args.host, args.http_port, app, threaded=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"inbox listening on http://{args.host}:{server.server_port} and smtp://{args.host}:{smtp.port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        smtp.stop()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
