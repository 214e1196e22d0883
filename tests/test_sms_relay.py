"""The SMS relay (flask_mpesa_monitor.sms_relay) against fake Africa's Talking and Twilio
servers: the shared ``http_recorder`` (127.0.0.1) with handlers that answer like the
real APIs (201 with per-recipient statuses, or errors on demand). Two tests also run the
relay as a process: ``python -m flask_mpesa_monitor.sms_relay`` and gunicorn with the
image's command line.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from examples.demo.servers import ServerError, free_port, http_request, wait_http
from flask_mpesa_monitor.sms_relay import ConfigError, RelaySettings, create_app
from flask_mpesa_monitor.sms_relay.dedup import DedupStore
from flask_mpesa_monitor.sms_relay.masking import mask_phone, mask_phones
from flask_mpesa_monitor.sms_relay.message import format_sms, gsm_length, to_gsm

REPO = Path(__file__).resolve().parents[1]
# Ofcom's range reserved for drama (+44 7700 900xxx): never a real phone.
NUMBERS = ("+447700900001", "+447700900002")
AT_KEY = "test-api-key-not-a-secret"
TWILIO_SID = "AC00000000000000000000000000000000"
TWILIO_TOKEN = "test-token-not-a-secret"


# --- fake providers -----------------------------------------------------------------
class _FakeProvider:
    """A fake SMS provider on a RecordingHTTPServer: numbers in ``fail`` are refused,
    ``http_status`` (when set) answers every request."""

    path = ""

    def __init__(self, recorder) -> None:
        self.recorder = recorder
        self.url = recorder.url
        self.fail: set[str] = set()
        self.http_status: int | None = None
        recorder.set_handler(self.path, self.answer, method="POST")

    @property
    def requests(self) -> list:
        return self.recorder.received()

    def answer(self, request) -> tuple[int, dict]:
        raise NotImplementedError


class FakeAfricasTalking(_FakeProvider):
    """Answers ``POST /version1/messaging`` like Africa's Talking: 201 with one status per
    number (101 Success, or 405 InsufficientBalance for numbers in ``fail``), or
    ``http_status`` for every request when set."""

    path = "/version1/messaging"

    def answer(self, request) -> tuple[int, dict]:
        if self.http_status:
            return self.http_status, {"error": "gateway trouble"}
        recipients = []
        for number in request.form()["to"].split(","):
            failed = number in self.fail
            recipients.append({
                "statusCode": 405 if failed else 101,
                "number": number,
                "status": "InsufficientBalance" if failed else "Success",
                "cost": "0" if failed else "KES 0.8000",
                "messageId": "None" if failed else "ATXid_test",
            })
        sent = sum(1 for r in recipients if r["statusCode"] == 101)
        return 201, {"SMSMessageData": {
            "Message": f"Sent to {sent}/{len(recipients)} Total Cost: KES 0.8000",
            "Recipients": recipients,
        }}


class FakeTwilio(_FakeProvider):
    """Answers ``POST /2010-04-01/Accounts/{sid}/Messages.json`` like Twilio: 201 with the
    message, 400 with error 21211 for numbers in ``fail``, or ``http_status`` when set."""

    path = f"/2010-04-01/Accounts/{TWILIO_SID}/Messages.json"

    def answer(self, request) -> tuple[int, dict]:
        if self.http_status:
            return self.http_status, {"code": 20500, "message": "Internal Server Error"}
        to = request.form()["To"]
        if to in self.fail:
            # Twilio's real error text names the number: the relay must not log it.
            return 400, {"code": 21211, "status": 400,
                         "message": f"The 'To' number {to} is not a valid phone number."}
        return 201, {"sid": "SM0000", "status": "queued", "to": to}


@pytest.fixture
def africastalking(http_recorder) -> FakeAfricasTalking:
    return FakeAfricasTalking(http_recorder(default_status=404, default_body={"error": "no route"}))


@pytest.fixture
def twilio(http_recorder) -> FakeTwilio:
    return FakeTwilio(http_recorder(default_status=404, default_body={"error": "no route"}))


class Clock:
    """A monotonic clock the test moves by hand, for the dedup window."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def at_settings(url: str, **overrides) -> RelaySettings:
    values = dict(provider="africastalking", recipients=NUMBERS, base_url=url,
                  at_username="sandbox", at_api_key=AT_KEY, sender="MPESAMON",
                  timeout_seconds=5.0)
    values.update(overrides)
    return RelaySettings(**values)


def twilio_settings(url: str, **overrides) -> RelaySettings:
    values = dict(provider="twilio", recipients=NUMBERS, base_url=url,
                  twilio_sid=TWILIO_SID, twilio_token=TWILIO_TOKEN, sender="+15005550006",
                  timeout_seconds=5.0)
    values.update(overrides)
    return RelaySettings(**values)


def alert(name: str = "MPesaAPIFailures", *, status: str = "firing", fingerprint: str = "fp1",
          severity: str = "critical", organization: str | None = "acme",
          summary: str = "M-Pesa API failing for acme") -> dict:
    labels = {"alertname": name, "severity": severity, "service": "mpesa-mcp"}
    if organization:
        labels["organization"] = organization
    return {
        "status": status,
        "labels": labels,
        "annotations": {"summary": summary, "description": "12% of calls failed",
                        "runbook_url": "https://example.com/runbooks.md#x"},
        "startsAt": "2024-01-01T00:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph",
        "fingerprint": fingerprint,
    }


def notification(*alerts: dict) -> dict:
    """An Alertmanager webhook body, version 4, as Alertmanager 0.25 sends it."""
    return {
        "version": "4",
        "groupKey": '{}/{severity="critical"}:{alertname="MPesaAPIFailures"}',
        "truncatedAlerts": 0,
        "status": "firing" if any(a["status"] == "firing" for a in alerts) else "resolved",
        "receiver": "critical",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": list(alerts),
    }


def sample(app, result: str) -> float:
    relay = app.extensions["sms_relay"]
    value = relay.registry.get_sample_value(
        "sms_relay_messages_total", {"provider": relay.provider.name, "result": result}
    )
    return value or 0.0


# --- message -------------------------------------------------------------------------
def test_format_sms_names_severity_alert_organization_and_summary():
    assert format_sms(alert()) == "CRITICAL MPesaAPIFailures org=acme: M-Pesa API failing for acme"
    assert format_sms(alert("DatabaseDown", organization=None, summary="Database down")) == (
        "CRITICAL DatabaseDown: Database down"
    )
    assert format_sms(alert(status="resolved")).startswith("RESOLVED CRITICAL MPesaAPIFailures")


def test_format_sms_long_summary_is_cut_at_a_word_within_160():
    summary = "the STK push success ratio of this tenant fell far below its objective " * 4
    text = format_sms(alert(summary=summary))
    assert gsm_length(text) <= 160
    assert len(text) > 140  # cut near the limit, not somewhere early
    assert text.startswith("CRITICAL MPesaAPIFailures org=acme: the STK push")
    assert text.endswith("...")
    assert text[:-3].split(" ")[-1] in summary.split(" ")  # ends on a whole word


def test_format_sms_non_gsm_characters_are_folded_so_one_sms_holds_160():
    text = format_sms(alert(summary="Caf\u00e9 \u201cacme\u201d \u2014 payments down \U0001F525\u2026"))
    assert text == 'CRITICAL MPesaAPIFailures org=acme: Cafe "acme" - payments down ...'
    assert text.isascii()
    # GSM extension characters take two septets each.
    assert gsm_length("[x]") == 5
    long = format_sms(alert(summary="{" * 200))
    assert gsm_length(long) <= 160
    assert to_gsm("a\n\tb   c") == "a b c"


# --- masking -------------------------------------------------------------------------
def test_mask_phone_keeps_prefix_and_last_two_digits():
    assert mask_phone("254700000089") == "2547******89"
    assert mask_phone("+254700000089") == "+2547******89"
    assert mask_phone("+447700900001") == "+44********01"
    assert mask_phones("number +447700900001 refused") == "number +44********01 refused"
    assert mask_phones("error 21211 at 12:00") == "error 21211 at 12:00"


# --- sending -------------------------------------------------------------------------
def test_sms_relay_africastalking_sends_one_request_per_firing_alert(africastalking):
    app = create_app(at_settings(africastalking.url))
    body = notification(alert(fingerprint="a"), alert("TokenRefreshFailures", fingerprint="b"))
    response = app.test_client().post("/alerts", json=body)

    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "sent": 4, "failed": 0, "deduplicated": 0,
                                   "skipped_resolved": 0, "summarized": 0}
    assert len(africastalking.requests) == 2
    first = africastalking.requests[0]
    assert first.path == "/version1/messaging"
    assert first.headers["apikey"] == AT_KEY
    assert first.headers["accept"] == "application/json"
    assert first.form() == {
        "username": "sandbox",
        "to": ",".join(NUMBERS),
        "message": "CRITICAL MPesaAPIFailures org=acme: M-Pesa API failing for acme",
        "from": "MPESAMON",
    }
    assert africastalking.requests[1].form()["message"].startswith("CRITICAL TokenRefreshFailures")


def test_sms_relay_africastalking_without_sender_leaves_from_out(africastalking):
    app = create_app(at_settings(africastalking.url, sender=""))
    assert app.test_client().post("/alerts", json=notification(alert())).status_code == 200
    assert "from" not in africastalking.requests[0].form()


def test_sms_relay_twilio_sends_one_request_per_recipient(twilio):
    app = create_app(twilio_settings(twilio.url))
    response = app.test_client().post("/alerts", json=notification(alert()))

    assert response.status_code == 200
    assert response.get_json()["sent"] == 2
    assert [r.form()["To"] for r in twilio.requests] == list(NUMBERS)
    request = twilio.requests[0]
    assert request.path == f"/2010-04-01/Accounts/{TWILIO_SID}/Messages.json"
    expected = base64.b64encode(f"{TWILIO_SID}:{TWILIO_TOKEN}".encode()).decode()
    assert request.headers["authorization"] == f"Basic {expected}"
    assert request.form() == {
        "To": NUMBERS[0],
        "From": "+15005550006",
        "Body": "CRITICAL MPesaAPIFailures org=acme: M-Pesa API failing for acme",
    }


def test_sms_relay_twilio_messaging_service_is_sent_as_such(twilio):
    app = create_app(twilio_settings(twilio.url, sender="MG00000000000000000000000000000000"))
    assert app.test_client().post("/alerts", json=notification(alert())).status_code == 200
    form = twilio.requests[0].form()
    assert form["MessagingServiceSid"].startswith("MG") and "From" not in form


# --- bad requests --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (json.dumps({"alerts": []}).encode(), "unsupported webhook version"),
        (json.dumps({"version": "3", "alerts": []}).encode(), "unsupported webhook version"),
        (json.dumps({"version": "4", "alerts": {}}).encode(), "'alerts' must be a list"),
        (json.dumps({"version": "4", "alerts": ["x"]}).encode(), "alerts[0] must be an object"),
        (json.dumps({"version": "4", "alerts": [{"status": "firing"}]}).encode(),
         "alerts[0].labels must be an object of strings"),
        (json.dumps({"version": "4", "alerts": [{"status": "burning", "labels": {"alertname": "X"}}]}).encode(),
         "alerts[0].status must be"),
        (json.dumps({"version": "4", "alerts": [{"status": "firing", "labels": {"severity": "critical"}}]}).encode(),
         "has no alertname"),
        (json.dumps({"version": "4", "alerts": [{"status": "firing", "labels": {"alertname": 5}}]}).encode(),
         "must be an object of strings"),
    ],
)
def test_sms_relay_malformed_body_is_400_with_reason(africastalking, body, reason):
    app = create_app(at_settings(africastalking.url))
    response = app.test_client().post("/alerts", data=body, content_type="application/json")
    assert response.status_code == 400
    assert response.get_json()["status"] == "error"
    assert reason in response.get_json()["error"]
    assert africastalking.requests == []
    relay = app.extensions["sms_relay"]
    assert relay.registry.get_sample_value("sms_relay_requests_total", {"code": "400"}) == 1


# --- provider failures and retries ---------------------------------------------------
def test_sms_relay_africastalking_recipient_failure_is_502_and_retry_reaches_only_it(africastalking):
    app = create_app(at_settings(africastalking.url))
    client = app.test_client()
    body = notification(alert())
    africastalking.fail = {NUMBERS[1]}

    first = client.post("/alerts", json=body)
    assert first.status_code == 502
    assert first.get_json() == {"status": "error", "sent": 1, "failed": 1, "deduplicated": 0,
                                "skipped_resolved": 0, "summarized": 0}

    africastalking.fail = set()
    retry = client.post("/alerts", json=body)  # what Alertmanager does after a 5xx
    assert retry.status_code == 200
    assert retry.get_json()["sent"] == 1 and retry.get_json()["deduplicated"] == 1
    assert [r.form()["to"] for r in africastalking.requests] == [",".join(NUMBERS), NUMBERS[1]]


def test_sms_relay_twilio_recipient_failure_is_502_and_retry_reaches_only_it(twilio):
    app = create_app(twilio_settings(twilio.url))
    client = app.test_client()
    body = notification(alert())
    twilio.fail = {NUMBERS[0]}

    assert client.post("/alerts", json=body).status_code == 502
    twilio.fail = set()
    assert client.post("/alerts", json=body).status_code == 200
    assert [r.form()["To"] for r in twilio.requests] == [NUMBERS[0], NUMBERS[1], NUMBERS[0]]


@pytest.mark.parametrize("status", [500, 503, 401])
def test_sms_relay_provider_error_status_is_502_for_every_recipient(africastalking, twilio, status):
    for fake, settings in ((africastalking, at_settings(africastalking.url)),
                           (twilio, twilio_settings(twilio.url))):
        fake.http_status = status
        app = create_app(settings)
        response = app.test_client().post("/alerts", json=notification(alert()))
        assert response.status_code == 502, fake
        assert response.get_json()["failed"] == 2
        assert sample(app, "failed") == 2 and sample(app, "sent") == 0


def test_sms_relay_unreachable_provider_is_502():
    app = create_app(at_settings(f"http://127.0.0.1:{free_port()}", timeout_seconds=2.0))
    response = app.test_client().post("/alerts", json=notification(alert()))
    assert response.status_code == 502
    assert response.get_json()["failed"] == 2


def test_sms_relay_unreadable_provider_answer_is_502(africastalking):
    africastalking.recorder.set_handler(
        africastalking.path, lambda request: (201, {"unexpected": True}), method="POST"
    )
    app = create_app(at_settings(africastalking.url))
    assert app.test_client().post("/alerts", json=notification(alert())).status_code == 502


# --- dedup ---------------------------------------------------------------------------
def test_sms_relay_same_alert_within_window_is_not_sent_twice(africastalking):
    clock = Clock()
    app = create_app(at_settings(africastalking.url, dedup_seconds=300), clock=clock)
    client = app.test_client()
    body = notification(alert())

    assert client.post("/alerts", json=body).get_json()["sent"] == 2
    clock.now += 299
    second = client.post("/alerts", json=body)
    assert second.status_code == 200
    assert second.get_json()["sent"] == 0 and second.get_json()["deduplicated"] == 2
    assert len(africastalking.requests) == 1

    # Another alert (other fingerprint) in the same window is texted.
    assert client.post("/alerts", json=notification(alert(fingerprint="fp2"))).get_json()["sent"] == 2
    clock.now += 2  # the first alert's window is over
    assert client.post("/alerts", json=body).get_json()["sent"] == 2
    assert len(africastalking.requests) == 3


def test_sms_relay_dedup_zero_window_sends_every_time(africastalking):
    app = create_app(at_settings(africastalking.url, dedup_seconds=0))
    client = app.test_client()
    for _ in range(2):
        assert client.post("/alerts", json=notification(alert())).get_json()["sent"] == 2
    assert len(africastalking.requests) == 2


def test_dedup_store_forgets_oldest_past_its_bound():
    clock = Clock()
    store = DedupStore(300, clock, max_entries=3)
    for key in "abcd":
        store.record(key)
    assert len(store) == 3
    assert not store.seen("a") and store.seen("d")


# --- resolved alerts -----------------------------------------------------------------
def test_sms_relay_resolved_alert_is_not_texted_by_default(africastalking):
    app = create_app(at_settings(africastalking.url))
    response = app.test_client().post("/alerts", json=notification(alert(status="resolved")))
    assert response.status_code == 200
    assert response.get_json()["skipped_resolved"] == 1 and response.get_json()["sent"] == 0
    assert africastalking.requests == []


def test_sms_relay_resolved_alert_is_texted_when_enabled(africastalking):
    app = create_app(at_settings(africastalking.url, send_resolved=True))
    client = app.test_client()
    assert client.post("/alerts", json=notification(alert())).get_json()["sent"] == 2
    # Same fingerprint, other status: a different text, not a duplicate.
    resolved = client.post("/alerts", json=notification(alert(status="resolved")))
    assert resolved.get_json()["sent"] == 2
    assert africastalking.requests[1].form()["message"].startswith("RESOLVED CRITICAL MPesaAPIFailures")


# --- metrics, health, privacy ----------------------------------------------------------
def test_sms_relay_metrics_count_messages_by_provider_and_result(africastalking):
    clock = Clock()
    app = create_app(at_settings(africastalking.url), clock=clock)
    client = app.test_client()
    for result in ("sent", "failed", "deduplicated"):
        assert sample(app, result) == 0  # exported before the first text

    africastalking.fail = {NUMBERS[0]}
    client.post("/alerts", json=notification(alert()))
    africastalking.fail = set()
    client.post("/alerts", json=notification(alert()))

    assert (sample(app, "sent"), sample(app, "failed"), sample(app, "deduplicated")) == (2, 1, 1)
    text = client.get("/metrics").get_data(as_text=True)
    assert 'sms_relay_messages_total{provider="africastalking",result="sent"} 2.0' in text
    assert 'sms_relay_requests_total{code="502"} 1.0' in text
    # Its own registry: none of the extension's (default registry) metrics leak in.
    assert "mpesa_" not in text and "python_gc" not in text


def test_sms_relay_two_apps_in_one_process_do_not_collide(africastalking):
    first, second = create_app(at_settings(africastalking.url)), create_app(at_settings(africastalking.url))
    first.test_client().post("/alerts", json=notification(alert()))
    assert sample(first, "sent") == 2 and sample(second, "sent") == 0


def test_sms_relay_healthy_endpoint_answers(africastalking):
    client = create_app(at_settings(africastalking.url)).test_client()
    assert client.get("/-/healthy").status_code == 200
    assert client.get("/-/ready").status_code == 200


def test_sms_relay_never_logs_or_exports_phone_numbers(twilio, caplog):
    caplog.set_level(logging.DEBUG)
    app = create_app(twilio_settings(twilio.url))
    client = app.test_client()
    twilio.fail = {NUMBERS[1]}
    answers = [client.post("/alerts", json=notification(alert())) for _ in range(2)]
    twilio.fail = set()
    answers.append(client.post("/alerts", json=notification(alert())))
    answers.append(client.post("/alerts", data=b"{", content_type="application/json"))
    exposed = caplog.text + client.get("/metrics").get_data(as_text=True)
    exposed += "".join(a.get_data(as_text=True) for a in answers)

    assert "texted firing MPesaAPIFailures to +44********01" in caplog.text  # it did log
    assert "+44********02 via twilio: HTTP 400, Twilio error 21211" in caplog.text
    for number in NUMBERS:
        assert number.lstrip("+") not in exposed
        assert number[-9:] not in exposed


# --- settings ------------------------------------------------------------------------
def test_relay_settings_from_env_reads_secrets_from_files(tmp_path):
    key_file = tmp_path / "at_api_key"
    key_file.write_text(AT_KEY + "\n")
    settings = RelaySettings.from_env({
        "SMS_RELAY_PROVIDER": "africastalking",
        "SMS_RELAY_RECIPIENTS": "+44 7700 900001, 447700900002",
        "SMS_RELAY_AT_USERNAME": "sandbox",
        "SMS_RELAY_AT_API_KEY_FILE": str(key_file),
    })
    assert settings.at_api_key == AT_KEY
    assert settings.recipients == NUMBERS
    assert settings.base_url == "https://api.africastalking.com"
    assert (settings.dedup_seconds, settings.port, settings.send_resolved) == (300, 9099, False)
    assert AT_KEY not in repr(settings)

    token_file = tmp_path / "twilio_token"
    token_file.write_text(TWILIO_TOKEN)
    twilio = RelaySettings.from_env({
        "SMS_RELAY_PROVIDER": "twilio",
        "SMS_RELAY_RECIPIENTS": NUMBERS[0],
        "SMS_RELAY_TWILIO_SID": TWILIO_SID,
        "SMS_RELAY_TWILIO_TOKEN_FILE": str(token_file),
        "SMS_RELAY_FROM": "+15005550006",
        "SMS_RELAY_BASE_URL": "http://127.0.0.1:1/",
        "SMS_RELAY_DEDUP_SECONDS": "60",
        "SMS_RELAY_SEND_RESOLVED": "true",
        "SMS_RELAY_PORT": "9100",
    })
    assert (twilio.twilio_token, twilio.base_url, twilio.dedup_seconds) == (TWILIO_TOKEN, "http://127.0.0.1:1", 60)
    assert twilio.send_resolved is True and twilio.port == 9100


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SMS_RELAY_PROVIDER": "pigeon"}, "SMS_RELAY_PROVIDER is 'pigeon'"),
        ({"SMS_RELAY_RECIPIENTS": ""}, "SMS_RELAY_RECIPIENTS is empty"),
        ({"SMS_RELAY_RECIPIENTS": "+447700900001,07009"}, "entry #2 is not a phone number"),
        ({"SMS_RELAY_AT_API_KEY_FILE": "/nonexistent/at_api_key"}, "SMS_RELAY_AT_API_KEY_FILE points at"),
        ({"SMS_RELAY_AT_API_KEY_FILE": ""}, "SMS_RELAY_AT_API_KEY_FILE is not set"),
        ({"SMS_RELAY_AT_USERNAME": ""}, "SMS_RELAY_AT_USERNAME is required"),
        ({"SMS_RELAY_DEDUP_SECONDS": "soon"}, "SMS_RELAY_DEDUP_SECONDS is 'soon'"),
        ({"SMS_RELAY_SEND_RESOLVED": "maybe"}, "SMS_RELAY_SEND_RESOLVED is 'maybe'"),
        ({"SMS_RELAY_BASE_URL": "api.africastalking.com"}, "SMS_RELAY_BASE_URL must be"),
    ],
)
def test_relay_settings_invalid_value_names_the_variable(tmp_path, env, message):
    key_file = tmp_path / "key"
    key_file.write_text(AT_KEY)
    base = {
        "SMS_RELAY_PROVIDER": "africastalking",
        "SMS_RELAY_RECIPIENTS": ",".join(NUMBERS),
        "SMS_RELAY_AT_USERNAME": "sandbox",
        "SMS_RELAY_AT_API_KEY_FILE": str(key_file),
    }
    with pytest.raises(ConfigError, match=message) as info:
        RelaySettings.from_env({**base, **env})
    assert "7700900001" not in str(info.value)  # never echo a number back


# --- running it ------------------------------------------------------------------------
GUNICORN_COMMAND = ["gunicorn", "-c", "python:flask_mpesa_monitor.sms_relay.gunicorn_conf",
                    "flask_mpesa_monitor.sms_relay:create_app()"]


def relay_env(tmp_path: Path, provider_url: str, port: int) -> dict[str, str]:
    key_file = tmp_path / "at_api_key"
    key_file.write_text(AT_KEY)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMS_RELAY_")}
    env.update({
        "PYTHONPATH": str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
        "SMS_RELAY_PROVIDER": "africastalking",
        "SMS_RELAY_RECIPIENTS": ",".join(NUMBERS),
        "SMS_RELAY_BASE_URL": provider_url,
        "SMS_RELAY_AT_USERNAME": "sandbox",
        "SMS_RELAY_AT_API_KEY_FILE": str(key_file),
        "SMS_RELAY_HOST": "127.0.0.1",
        "SMS_RELAY_PORT": str(port),
        "SMS_RELAY_WORKER_TMP_DIR": str(tmp_path),
    })
    return env


def run_relay(command: list[str], env: dict[str, str], port: int, africastalking) -> str:
    """Start the relay, text one alert through it, stop it; return its stderr."""
    proc = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        try:
            wait_http(url + "/-/healthy", timeout=20)
        except ServerError:
            proc.kill()
            raise AssertionError(f"relay not healthy: {proc.communicate(timeout=5)[1]}") from None
        status, _, body = http_request("POST", url + "/alerts", json.dumps(notification(alert())),
                                       headers={"Content-Type": "application/json"})
        assert (status, json.loads(body)["sent"]) == (200, 2)
        assert africastalking.requests[0].form()["to"] == ",".join(NUMBERS)
        status, headers, body = http_request("GET", url + "/metrics")
        assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
        assert b'sms_relay_messages_total{provider="africastalking",result="sent"} 2.0' in body
    finally:
        proc.terminate()
        try:
            _, stderr = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, stderr = proc.communicate(timeout=5)
    return stderr


@pytest.mark.slow
def test_sms_relay_module_main_serves_alerts(tmp_path, africastalking):
    port = free_port()
    stderr = run_relay([sys.executable, "-m", "flask_mpesa_monitor.sms_relay"],
                       relay_env(tmp_path, africastalking.url, port), port, africastalking)
    assert "texted firing MPesaAPIFailures to +44********01" in stderr
    assert "7700900001" not in stderr and "7700900002" not in stderr


@pytest.mark.slow
def test_sms_relay_runs_under_gunicorn_as_the_image_does(tmp_path, africastalking):
    port = free_port()
    command = [sys.executable, "-m", *GUNICORN_COMMAND]
    stderr = run_relay(command, relay_env(tmp_path, africastalking.url, port), port, africastalking)
    assert "texted firing MPesaAPIFailures to +44********01" in stderr
    assert "7700900001" not in stderr and "7700900002" not in stderr


def test_sms_relay_dockerfile_runs_the_tested_command_as_non_root():
    lines = (REPO / "deploy" / "sms-relay" / "Dockerfile").read_text().splitlines()
    instructions = [line for line in lines if line and not line.startswith((" ", "#"))]
    assert instructions[0] == "FROM python:3.11-slim"
    [cmd] = [line for line in instructions if line.startswith("CMD ")]
    assert json.loads(cmd[4:]) == GUNICORN_COMMAND
    [user] = [line for line in instructions if line.startswith("USER ")]
    assert user.split()[1].split(":")[0] not in ("root", "0")
    assert any(line.startswith("HEALTHCHECK ") for line in instructions)
    assert "/-/healthy" in "\n".join(lines)


def test_sms_relay_module_main_exits_2_on_bad_settings(tmp_path):
    env = relay_env(tmp_path, "http://127.0.0.1:1", free_port())
    env["SMS_RELAY_RECIPIENTS"] = "+447700900001,12"
    result = subprocess.run([sys.executable, "-m", "flask_mpesa_monitor.sms_relay"], env=env,
                            cwd=REPO, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "SMS_RELAY_RECIPIENTS entry #2" in result.stderr
    assert "7700900001" not in result.stderr
