"""The demo's stand-ins for the outside world: the Daraja simulator, the inbox, the
traffic generator. Real local HTTP/SMTP servers on 127.0.0.1 where the behaviour crosses
a socket (callbacks, mail, traffic); Flask's test client for request/answer shapes.
"""

from __future__ import annotations

import html
import json
import re
import smtplib
import socket
import threading
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask, jsonify, request

from examples.demo import traffic
from examples.demo.daraja_sim import create_app as create_sim
from examples.demo.inbox import create_app as create_inbox
from examples.demo.inbox import mask_phone, parse_alert_text, start_smtp
from examples.demo.servers import serving

OAUTH = "/oauth/v1/generate?grant_type=client_credentials"
PUSH = "/mpesa/stkpush/v1/processrequest"
QUERY = "/mpesa/stkpushquery/v1/query"
PHONE = "254700000012"  # an obviously fake test number
WAIT_S = 10.0  # upper bound for anything that crosses a socket


# ----------------------------------------------------------------------------- helpers


class Recorder:
    """A callback endpoint that keeps what it is sent."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self.app = Flask("recorder")
        self.url = ""

        @self.app.post("/mpesa/callback")
        def callback() -> Any:
            with self._cond:
                self.received.append(request.get_json())
                self._cond.notify_all()
            return jsonify({"ResultCode": 0, "ResultDesc": "Accepted"})

    def wait_for(self, count: int, timeout: float = WAIT_S) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.received) < count and time.monotonic() < deadline:
                self._cond.wait(deadline - time.monotonic())
            return list(self.received)


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    rec = Recorder()
    with serving(rec.app) as url:
        rec.url = url + "/mpesa/callback"
        yield rec


@pytest.fixture
def make_sim() -> Iterator[Any]:
    """Build simulator apps (no added latency, seeded); close their threads afterwards."""
    apps: list[Flask] = []

    def make(**config: Any) -> Flask:
        config.setdefault("latency_ms", 0)
        config.setdefault("seed", 1)
        app = create_sim(config)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["daraja_sim"].close()


def token(client: Any, key: str = "acme-key", secret: str = "acme-secret") -> str:
    response = client.get(OAUTH, auth=(key, secret))
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.json["access_token"]


def push_body(callback: str = "http://127.0.0.1:9/cb", org: str = "acme", **overrides: Any) -> dict[str, Any]:
    body = {
        "BusinessShortCode": 174379,
        "Password": "cGxhY2Vob2xkZXI=",
        "Timestamp": "20240101120000",
        "TransactionType": "CustomerPayBillOnline",
        "Amount": 10,
        "PartyA": PHONE,
        "PartyB": "174379",
        "PhoneNumber": PHONE,
        "CallBackURL": callback,
        "AccountReference": org,
        "TransactionDesc": "demo",
    }
    body.update(overrides)
    return body


def push(client: Any, tok: str, **kwargs: Any) -> Any:
    return client.post(PUSH, json=push_body(**kwargs), headers={"Authorization": f"Bearer {tok}"})


def query(client: Any, tok: str, checkout_id: str) -> Any:
    body = {"BusinessShortCode": 174379, "Password": "x", "Timestamp": "20240101120000",
            "CheckoutRequestID": checkout_id}
    return client.post(QUERY, json=body, headers={"Authorization": f"Bearer {tok}"})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ----------------------------------------------------------------------- Daraja: OAuth


def test_daraja_oauth_valid_credentials_return_string_expiry(make_sim):
    client = make_sim(credentials={"acme-key": "acme-secret"}).test_client()

    response = client.get(OAUTH, auth=("acme-key", "acme-secret"))

    assert response.status_code == 200
    assert set(response.json) == {"access_token", "expires_in"}
    assert response.json["expires_in"] == "3599"
    assert push(client, response.json["access_token"]).status_code == 200


@pytest.mark.parametrize(
    ("auth", "code"),
    [
        (("acme-key", "wrong"), "400.008.01"),
        (("unknown-key", "acme-secret"), "400.008.01"),
        (None, "400.008.01"),
    ],
)
def test_daraja_oauth_bad_credentials_are_400_with_daraja_error(make_sim, auth, code):
    client = make_sim(credentials={"acme-key": "acme-secret"}).test_client()

    response = client.get(OAUTH, auth=auth)

    assert response.status_code == 400
    assert set(response.json) == {"requestId", "errorCode", "errorMessage"}
    assert response.json["errorCode"] == code


def test_daraja_oauth_rejected_consumer_key_and_bad_grant_type(make_sim):
    client = make_sim(reject_consumer_keys=["duka-key"]).test_client()

    assert client.get(OAUTH, auth=("duka-key", "any")).json["errorCode"] == "400.008.01"
    bad_grant = client.get("/oauth/v1/generate?grant_type=password", auth=("acme-key", "s"))
    assert bad_grant.status_code == 400
    assert bad_grant.json["errorCode"] == "400.008.02"
    assert client.get(OAUTH, auth=("acme-key", "s")).status_code == 200


@pytest.mark.parametrize("authorization", [None, "Bearer not-a-token", "Basic abc"])
def test_daraja_stk_push_without_valid_token_is_404_001_03(make_sim, authorization):
    client = make_sim().test_client()
    headers = {"Authorization": authorization} if authorization else {}

    response = client.post(PUSH, json=push_body(), headers=headers)

    assert response.status_code == 404
    assert response.json["errorCode"] == "404.001.03"
    assert response.json["errorMessage"] == "Invalid Access Token"


def test_daraja_expired_tokens_are_refused_until_refreshed(make_sim):
    app = make_sim()
    client = app.test_client()
    old = token(client)

    assert client.post("/sim/tokens/expire").json == {"expired": 1}

    assert push(client, old).json["errorCode"] == "404.001.03"
    assert push(client, token(client)).status_code == 200
    zero_ttl = make_sim(token_ttl_s=0).test_client()
    issued = zero_ttl.get(OAUTH, auth=("k", "s")).json
    assert issued["expires_in"] == "0"
    assert push(zero_ttl, issued["access_token"]).status_code == 404


# -------------------------------------------------------------------- Daraja: STK push


def test_daraja_stk_push_ack_has_daraja_shape_and_no_phone(make_sim):
    client = make_sim(callbacks_lost=1.0).test_client()

    response = push(client, token(client))

    assert response.status_code == 200
    assert list(response.json) == [
        "MerchantRequestID",
        "CheckoutRequestID",
        "ResponseCode",
        "ResponseDescription",
        "CustomerMessage",
    ]
    assert response.json["ResponseCode"] == "0"
    assert response.json["CheckoutRequestID"].startswith("ws_CO_")
    assert PHONE not in response.get_data(as_text=True)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"PhoneNumber": "0700000012"}, "PhoneNumber"),
        ({"CallBackURL": ""}, "CallBackURL"),
        ({"Amount": 0}, "Amount"),
        ({"AccountReference": "far-too-long-reference"}, "AccountReference"),
        ({"TransactionType": "Nonsense"}, "TransactionType"),
    ],
)
def test_daraja_stk_push_invalid_field_is_400_002_02(make_sim, overrides, field):
    client = make_sim().test_client()

    response = push(client, token(client), **overrides)

    assert response.status_code == 400
    assert response.json["errorCode"] == "400.002.02"
    assert response.json["errorMessage"] == f"Bad Request - Invalid {field}"


def test_daraja_stk_push_checks_password_when_passkey_known(make_sim):
    import base64

    client = make_sim(passkeys={"174379": "test-passkey"}, callbacks_lost=1.0).test_client()
    tok = token(client)
    good = base64.b64encode(b"174379test-passkey20240101120000").decode()

    wrong = push(client, tok, Password="d3Jvbmc=")
    right = push(client, tok, Password=good)

    assert wrong.status_code == 500
    assert wrong.json["errorCode"] == "500.001.1001"
    assert wrong.json["errorMessage"] == "Wrong credentials"
    assert right.status_code == 200


def test_daraja_success_callback_is_posted_with_daraja_shape(make_sim, recorder):
    client = make_sim(result_mix={"0": 1}, callback_delay_s=0).test_client()

    ack = push(client, token(client), callback=recorder.url, Amount=250).json
    received = recorder.wait_for(1)

    assert len(received) == 1
    callback = received[0]["Body"]["stkCallback"]
    assert callback["MerchantRequestID"] == ack["MerchantRequestID"]
    assert callback["CheckoutRequestID"] == ack["CheckoutRequestID"]
    assert callback["ResultCode"] == 0
    assert callback["ResultDesc"] == "The service request is processed successfully."
    items = {item["Name"]: item["Value"] for item in callback["CallbackMetadata"]["Item"]}
    assert list(items) == ["Amount", "MpesaReceiptNumber", "TransactionDate", "PhoneNumber"]
    assert items["Amount"] == 250
    assert re.fullmatch(r"[A-Z][A-Z0-9]{9}", items["MpesaReceiptNumber"])
    assert re.fullmatch(r"20\d{12}", str(items["TransactionDate"]))
    assert items["PhoneNumber"] == int(PHONE)
    phones = set(re.findall(r"254\d{9}", json.dumps(received[0])))
    assert phones == {PHONE}, "the callback carries only the phone number the push sent"


def test_daraja_failed_callback_has_no_metadata(make_sim, recorder):
    client = make_sim(result_mix={"1032": 1}, callback_delay_s=0).test_client()

    push(client, token(client), callback=recorder.url)
    received = recorder.wait_for(1)

    assert received == [
        {
            "Body": {
                "stkCallback": {
                    "MerchantRequestID": received[0]["Body"]["stkCallback"]["MerchantRequestID"],
                    "CheckoutRequestID": received[0]["Body"]["stkCallback"]["CheckoutRequestID"],
                    "ResultCode": 1032,
                    "ResultDesc": "Request cancelled by user",
                }
            }
        }
    ]


def test_daraja_result_mix_is_honoured_and_repeats_with_a_seed(make_sim):
    mix = {"0": 0.7, "1032": 0.2, "1037": 0.1}

    def codes(seed: int) -> list[str]:
        client = make_sim(seed=seed, result_mix=mix, callback_delay_s=0, callbacks_lost=1.0).test_client()
        tok = token(client)
        ids = [push(client, tok).json["CheckoutRequestID"] for _ in range(300)]
        return [query(client, tok, i).json["ResultCode"] for i in ids]

    first, again, other = codes(7), codes(7), codes(8)

    assert first == again
    assert first != other
    assert 180 <= first.count("0") <= 240
    assert 40 <= first.count("1032") <= 80
    assert 15 <= first.count("1037") <= 45


def test_daraja_per_organization_override_wins_for_that_organization(make_sim):
    app = make_sim(result_mix={"0": 1}, callback_delay_s=0, callbacks_lost=1.0)
    client = app.test_client()
    client.post("/sim/config", json={"orgs": {"acme": {"result_mix": {"1032": 1}, "spike_arrest_ratio": 1.0}}})
    tok = token(client)

    acme = push(client, tok, org="acme")
    jambo = push(client, tok, org="jambo")
    client.post("/sim/config", json={"orgs": {"acme": {"spike_arrest_ratio": 0.0}}})
    acme_later = push(client, tok, org="acme")

    assert acme.status_code == 500 and acme.json["errorCode"] == "500.003.02"
    assert query(client, tok, jambo.json["CheckoutRequestID"]).json["ResultCode"] == "0"
    assert query(client, tok, acme_later.json["CheckoutRequestID"]).json["ResultCode"] == "1032"
    stats = client.get("/sim/stats").json["organizations"]
    assert stats["acme"]["stk_push.spike_arrest"] == 1
    assert stats["jambo"]["results"] == {"0": 1}


# ------------------------------------------------------------------------ Daraja: faults


def test_daraja_spike_arrest_ratio_answers_500_003_02(make_sim):
    client = make_sim(spike_arrest_ratio=0.3, callbacks_lost=1.0).test_client()
    tok = token(client)

    responses = [push(client, tok) for _ in range(200)]

    arrested = [r for r in responses if r.status_code == 500]
    assert 40 <= len(arrested) <= 80
    assert all(r.json["errorCode"] == "500.003.02" for r in arrested)
    assert all(set(r.json) == {"requestId", "errorCode", "errorMessage"} for r in arrested)
    assert all(r.status_code == 200 for r in responses if r not in arrested)
    assert client.get("/sim/stats").json["stk_push"]["spike_arrest"] == len(arrested)


def test_daraja_down_switch_answers_503_everywhere_until_cleared(make_sim):
    client = make_sim().test_client()
    tok = token(client)

    client.post("/sim/config", json={"down": True})
    down = [client.get(OAUTH, auth=("k", "s")), push(client, tok), query(client, tok, "ws_CO_1")]
    client.post("/sim/config", json={"down": False})

    assert [r.status_code for r in down] == [503, 503, 503]
    assert push(client, tok).status_code == 200


def test_daraja_slow_switch_is_seen_as_a_client_timeout(make_sim):
    app = make_sim(slow=1.0)
    with serving(app) as url, requests.Session() as session:
        with pytest.raises(requests.Timeout):
            session.get(url + OAUTH, auth=("k", "s"), timeout=0.2)
        app.test_client().post("/sim/config", json={"slow": 0})
        assert session.get(url + OAUTH, auth=("k", "s"), timeout=WAIT_S).status_code == 200


def test_daraja_lost_callbacks_are_counted_not_sent(make_sim, recorder):
    client = make_sim(callbacks_lost=1.0, callback_delay_s=0).test_client()
    tok = token(client)

    for _ in range(5):
        assert push(client, tok, callback=recorder.url).status_code == 200

    callbacks = client.get("/sim/stats").json["callbacks"]
    assert callbacks["lost"] == 5
    assert callbacks["scheduled"] == 0


def test_daraja_full_callback_schedule_drops_and_counts(make_sim):
    client = make_sim(max_scheduled_callbacks=2, callback_delay_s=600).test_client()
    tok = token(client)

    statuses = [push(client, tok).status_code for _ in range(3)]

    assert statuses == [200, 200, 200]
    callbacks = client.get("/sim/stats").json["callbacks"]
    assert (callbacks["scheduled"], callbacks["dropped"]) == (2, 1)


# ----------------------------------------------------------------------- Daraja: query


def test_daraja_query_pending_then_complete_after_flush(make_sim, recorder):
    client = make_sim(result_mix={"1037": 1}, callback_delay_s=600).test_client()
    tok = token(client)
    checkout_id = push(client, tok, callback=recorder.url).json["CheckoutRequestID"]

    pending = query(client, tok, checkout_id)
    assert client.post("/sim/flush").json == {"completed": 1}
    complete = query(client, tok, checkout_id)

    assert pending.status_code == 500
    assert pending.json["errorCode"] == "500.001.1001"
    assert pending.json["errorMessage"] == "The transaction is being processed"
    assert complete.status_code == 200
    assert complete.json["ResponseCode"] == "0"
    assert complete.json["ResultCode"] == "1037"
    assert complete.json["CheckoutRequestID"] == checkout_id
    assert recorder.wait_for(1)[0]["Body"]["stkCallback"]["ResultCode"] == 1037


def test_daraja_query_unknown_checkout_is_400(make_sim):
    client = make_sim().test_client()

    response = query(client, token(client), "ws_CO_unknown")

    assert response.status_code == 400
    assert response.json["errorCode"] == "400.002.02"


# ---------------------------------------------------------------------- Daraja: control


@pytest.mark.parametrize(
    ("partial", "named"),
    [
        ({"spike_arrest_ratio": 2}, "spike_arrest_ratio"),
        ({"result_mix": {"0": 0}}, "result_mix"),
        ({"latency_ms": [50, 10]}, "latency_ms"),
        ({"down": "yes"}, "down"),
        ({"bogus": 1}, "bogus"),
        ({"orgs": {"acme": {"token_ttl_s": 5}}}, "acme"),
        ([1, 2], "JSON object"),
    ],
)
def test_daraja_config_rejects_invalid_values_by_name(make_sim, partial, named):
    client = make_sim().test_client()

    response = client.post("/sim/config", json=partial)

    assert response.status_code == 400
    assert named in response.json["error"]


def test_daraja_config_merges_and_reset_restores(make_sim):
    client = make_sim(callbacks_lost=1.0).test_client()
    push(client, token(client))

    merged = client.post("/sim/config", json={"latency_ms": {"min": 1, "max": 2}, "orgs": {"acme": {"slow": 0.5}}}).json
    removed = client.post("/sim/config", json={"orgs": {"acme": None}}).json
    reset = client.post("/sim/reset").json
    stats = client.get("/sim/stats").json

    assert merged["latency_ms"] == [1.0, 2.0] and merged["orgs"] == {"acme": {"slow": 0.5}}
    assert removed["orgs"] == {}
    assert reset["latency_ms"] == [0.0, 0.0]
    assert stats["stk_push"]["accepted"] == 0 and stats["oauth"]["issued"] == 0


# ---------------------------------------------------------------------------- inbox


@pytest.fixture
def inbox_app() -> Flask:
    return create_inbox({"max_per_channel": 50})


@pytest.fixture
def inbox(inbox_app: Flask) -> Any:
    return inbox_app.test_client()


@pytest.fixture
def smtp(inbox_app: Flask) -> Iterator[Any]:
    controller = start_smtp(inbox_app.extensions["demo_inbox"], port=0)
    try:
        yield controller
    finally:
        controller.stop()


def messages(client: Any, channel: str, **params: str) -> list[dict[str, Any]]:
    response = client.get("/api/messages", query_string={"channel": channel, **params})
    assert response.status_code == 200
    return response.json["messages"]


def test_inbox_slack_webhook_records_alertmanager_attachment(inbox):
    payload = {
        "channel": "#alerts",
        "username": "alertmanager",
        "attachments": [
            {
                "title": "[FIRING:1] CrossTenantAccessAttempt (mpesa-mcp critical)",
                "text": "Cross-tenant read\n*organization*: acme",
                "fallback": "[FIRING:1] CrossTenantAccessAttempt",
                "color": "danger",
            }
        ],
    }

    response = inbox.post("/slack/services/T000/B000/XXXX", json=payload)
    found = messages(inbox, "slack")

    assert (response.status_code, response.get_data(as_text=True)) == (200, "ok")
    assert len(found) == 1
    message = found[0]
    assert message["channel"] == "slack"
    assert (message["alertname"], message["status"], message["severity"], message["organization"]) == (
        "CrossTenantAccessAttempt",
        "firing",
        "critical",
        "acme",
    )
    assert "Cross-tenant read" in message["text"]
    assert message["received_at"].endswith("+00:00")


def test_inbox_slack_accepts_blocks_and_form_payload(inbox):
    blocks = {"blocks": [{"type": "section",
                          "text": {"type": "mrkdwn", "text": "[RESOLVED] DatabaseDown severity=critical"}}]}
    form = {"payload": json.dumps({"text": "RateLimitWarnings firing for organization=duka, severity: medium"})}

    assert inbox.post("/slack/a", json=blocks).status_code == 200
    assert inbox.post("/slack/b", data=form).status_code == 200

    newest, oldest = messages(inbox, "slack")
    assert (oldest["alertname"], oldest["status"]) == ("DatabaseDown", "resolved")
    assert (newest["alertname"], newest["severity"], newest["organization"]) == ("RateLimitWarnings", "medium", "duka")


def test_inbox_slack_rejects_payload_without_text(inbox):
    assert inbox.post("/slack/x", json={"attachments": []}).get_data(as_text=True) == "no_text"
    assert inbox.post("/slack/x", data="not json", content_type="text/plain").status_code == 400
    assert messages(inbox, "slack") == []


def test_inbox_email_via_smtp_is_recorded_and_parsed(inbox, smtp):
    mail = EmailMessage()
    mail["Subject"] = "[FIRING:1] DatabaseDown (mpesa-mcp critical)"
    mail["From"] = "alertmanager@example.test"
    mail["To"] = "oncall@example.test"
    mail.set_content("The database is not answering.")
    mail.add_alternative("<html><body><p>organization = <b>safari</b></p></body></html>", subtype="html")

    with smtplib.SMTP("127.0.0.1", smtp.port, timeout=WAIT_S) as client:
        client.send_message(mail)

    found = messages(inbox, "email")
    assert len(found) == 1
    message = found[0]
    assert (message["alertname"], message["status"], message["severity"], message["organization"]) == (
        "DatabaseDown",
        "firing",
        "critical",
        "safari",
    )
    assert message["subject"] == "[FIRING:1] DatabaseDown (mpesa-mcp critical)"
    assert message["rcpt_to"] == ["oncall@example.test"]
    assert "not answering" in message["text"]


def test_inbox_africastalking_sms_answers_201_and_masks_numbers(inbox):
    form = {
        "username": "sandbox",
        "to": "+254700000012,+254700000013",
        "message": "[FIRING] CRITICAL MPesaAPIFailures org=jambo",
        "from": "ALERTS",
    }

    response = inbox.post("/version1/messaging", data=form,
                          headers={"apiKey": "placeholder", "Accept": "application/json"})

    assert response.status_code == 201
    data = response.json["SMSMessageData"]
    assert data["Message"].startswith("Sent to 2/2")
    assert [r["statusCode"] for r in data["Recipients"]] == [101, 101]
    assert {r["number"] for r in data["Recipients"]} == {"+254700000012", "+254700000013"}
    assert all(r["status"] == "Success" and r["messageId"] for r in data["Recipients"])
    (message,) = messages(inbox, "sms")
    assert message["provider"] == "africastalking"
    assert message["to"] == ["+2547******12", "+2547******13"]
    assert (message["alertname"], message["severity"], message["organization"]) == (
        "MPesaAPIFailures", "critical", "jambo")
    assert "254700000012" not in inbox.get("/").get_data(as_text=True)


def test_inbox_africastalking_requires_api_key(inbox):
    response = inbox.post("/version1/messaging", data={"username": "u", "to": "+254700000012", "message": "m"})

    assert response.status_code == 401
    assert messages(inbox, "sms") == []


def test_inbox_twilio_sms_answers_201_with_message_resource(inbox):
    form = {"To": "+254700000014", "From": "+15005550006", "Body": "[RESOLVED] HighErrorRate severity=critical"}

    response = inbox.post("/2010-04-01/Accounts/AC0123/Messages.json", data=form, auth=("AC0123", "placeholder"))
    refused = inbox.post("/2010-04-01/Accounts/AC0123/Messages.json", data=form, auth=("ACother", "placeholder"))

    assert response.status_code == 201
    assert response.json["sid"].startswith("SM") and len(response.json["sid"]) == 34
    assert (response.json["status"], response.json["account_sid"], response.json["to"]) == (
        "queued", "AC0123", form["To"])
    assert refused.status_code == 401 and refused.json["code"] == 20003
    (message,) = messages(inbox, "sms")
    assert (message["provider"], message["alertname"], message["status"]) == ("twilio", "HighErrorRate", "resolved")


def test_inbox_sms_fail_switch_fails_next_sends_then_recovers(inbox):
    form = {"username": "u", "to": "+254700000012", "message": "DatabaseDown firing"}
    headers = {"apiKey": "placeholder"}
    twilio_form = {"To": "+254700000012", "From": "+15005550006", "Body": "DatabaseDown firing"}

    state = inbox.post("/sms/fail", json={"enabled": True, "status": 503, "count": 2}).json
    first = inbox.post("/version1/messaging", data=form, headers=headers)
    second = inbox.post("/2010-04-01/Accounts/AC1/Messages.json", data=twilio_form, auth=("AC1", "t"))
    third = inbox.post("/version1/messaging", data=form, headers=headers)

    assert state == {"enabled": True, "status": 503, "count": 2}
    assert (first.status_code, second.status_code, third.status_code) == (503, 503, 201)
    assert second.json["code"] == 20500
    assert len(messages(inbox, "sms")) == 1
    assert inbox.get("/api/stats").json["sms_failures"] == 2
    assert inbox.post("/sms/fail", json={"enabled": True}).json["enabled"] is True
    assert inbox.post("/version1/messaging", data=form, headers=headers).status_code == 503
    inbox.post("/sms/fail", json={"enabled": False})
    assert inbox.post("/version1/messaging", data=form, headers=headers).status_code == 201


def test_inbox_keeps_only_the_newest_per_channel(inbox_app):
    client = create_inbox({"max_per_channel": 3}).test_client()

    for i in range(5):
        client.post("/slack/x", json={"text": f"message {i}"})

    assert [m["text"] for m in messages(client, "slack")] == ["message 4", "message 3", "message 2"]
    assert client.get("/api/stats").json["received"]["slack"] == 5


def test_inbox_filters_and_clears(inbox):
    inbox.post("/slack/x", json={"text": "[FIRING:1] DatabaseDown"})
    inbox.post("/slack/x", json={"text": "[RESOLVED] DatabaseDown"})
    inbox.post("/version1/messaging",
               data={"username": "u", "to": "+254700000012", "message": "[FIRING] HighErrorRate"},
               headers={"apiKey": "k"})

    resolved = messages(inbox, "slack", status="resolved")
    by_name = inbox.get("/api/messages", query_string={"alertname": "DatabaseDown"}).json["messages"]
    cleared = inbox.delete("/api/messages", query_string={"channel": "slack"})

    assert [m["status"] for m in resolved] == ["resolved"]
    assert len(by_name) == 2
    assert cleared.status_code == 200
    assert messages(inbox, "slack") == [] and len(messages(inbox, "sms")) == 1
    assert inbox.get("/api/messages", query_string={"channel": "fax"}).status_code == 400


def test_inbox_page_lists_messages_escaped(inbox):
    inbox.post("/slack/x", json={"text": "[FIRING:1] HighErrorRate <script>alert(1)</script>"})

    page = inbox.get("/").get_data(as_text=True)

    assert "HighErrorRate" in page
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;" in page


def test_inbox_serves_the_runbooks_with_a_section_anchor_per_alert(inbox):
    """The local stack's alerts link ``<inbox>/runbooks#<alertname in lower case>``: the
    page answers, and every alert of the rules and of the package has its anchor."""
    import yaml

    repo = Path(__file__).resolve().parent.parent
    alerts = {rule["alert"] for path in (repo / "deploy" / "prometheus" / "rules").glob("*.yml")
              for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"] if "alert" in rule}
    alerts |= {"MPesaMonitorTestAlert", "AuditLogTampering", "CrossTenantAccessAttempt"}  # app-side ones

    answer = inbox.get("/runbooks")

    assert answer.status_code == 200 and answer.mimetype == "text/html"
    page = answer.get_data(as_text=True)
    anchors = set(re.findall(r'<h[1-6] id="([^"]+)"', page))
    assert len(alerts) > 20 and {name.lower() for name in alerts} <= anchors, sorted(
        {name.lower() for name in alerts} - anchors)
    # Markdown shown as text: code blocks kept, nothing of the file runs as markup.
    assert "<pre>" in page and "PROM=http://127.0.0.1:9090" in page
    assert inbox.get("/runbooks/").status_code in (308, 404)  # one address, no duplicate


def test_inbox_dashboards_view_selects_the_job_it_was_given():
    """``$job`` becomes the local stack's scrape job in every graph link, never a fixed one."""
    from urllib.parse import parse_qs, urlsplit

    closed = f"http://127.0.0.1:{free_port()}"  # nothing answers: links fall back to a guessed page
    client = create_inbox({"prometheus_url": closed, "job": "shop-api"}).test_client()

    page = client.get("/dashboards").get_data(as_text=True)

    links = re.findall(r'<a class="graph" href="([^"]+)"', page)
    exprs = [parse_qs(urlsplit(html.unescape(link)).query)["g0.expr"][0] for link in links]
    assert 'sum(up{job="shop-api"}) or on() vector(0)' in exprs
    assert not [e for e in exprs if "$" in e or "mpesa-mcp" in e]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[FIRING:2] MPesaAPIFailures (acme mpesa-mcp high)", ("MPesaAPIFailures", "firing", "high", None)),
        ('alertname="TokenRefreshFailures" status: resolved organization="jambo"',
         ("TokenRefreshFailures", "resolved", None, "jambo")),
        ("[FIRING] CRITICAL CrossTenantAccessAttempt org=acme",
         ("CrossTenantAccessAttempt", "firing", "critical", "acme")),
        ("nothing to see here", (None, None, None, None)),
        # the project's own templates (deploy/alertmanager/templates) and SMS relay
        (
            "[FIRING:1] CRITICAL AppSideAlert (duka)\n*FIRING* something\n*Severity:* critical | *Organization:* duka",
            ("AppSideAlert", "firing", "critical", "duka"),
        ),
        ("[RESOLVED] HIGH TransactionFailureSpike (acme): failures",
         ("TransactionFailureSpike", "resolved", "high", "acme")),
        ("[FIRING:1] DatabaseDown (critical)", ("DatabaseDown", "firing", "critical", None)),
        ("CRITICAL AppSideAlert org=acme: cross-tenant read", ("AppSideAlert", "firing", "critical", "acme")),
        ("RESOLVED HIGH MPesaAPIFailures org=jambo: ok again", ("MPesaAPIFailures", "resolved", "high", "jambo")),
        # an organization at the end of a sentence, and a possessive that names none
        ("HIGH RateLimitWarnings for org=duka.", ("RateLimitWarnings", "firing", "high", "duka")),
        ("HIGH CrossTenantAccessAttempt: reached another organization's data",
         ("CrossTenantAccessAttempt", "firing", "high", None)),
    ],
)
def test_inbox_parse_alert_text_recognises_fields(text, expected):
    parsed = parse_alert_text(text)

    assert (parsed["alertname"], parsed["status"], parsed["severity"], parsed["organization"]) == expected


def test_inbox_mask_phone_hides_the_middle():
    assert mask_phone("+254700000012") == "+2547******12"
    assert mask_phone("254700000012") == "2547******12"


# -------------------------------------------------------------------------- traffic


class StubDemoApp:
    """The demo app's endpoints as the traffic generator assumes them, with a record."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.tokens: dict[str, str] = {}
        self.phones: list[str] = []
        self.orgs_seen: set[str] = set()
        self.cross_tenant = 0
        self.failed_logins = 0
        self.app = Flask("stub-demo")

        self.addresses: list[str] = []
        self.logins = 0

        @self.app.post("/login")
        def login() -> Any:
            data = request.get_json()
            with self.lock:
                self.logins += 1
                self.addresses.append(request.headers.get("X-Forwarded-For", ""))
            if data["password"] != "demo-password":
                with self.lock:
                    self.failed_logins += 1
                return jsonify({"error": "invalid credentials"}), 401
            with self.lock:
                tok = f"t{len(self.tokens)}"
                self.tokens[tok] = data["organization"]
            return jsonify({"token": tok})

        def caller(org: str) -> Any:
            org_of_token = self.tokens.get(request.headers.get("Authorization", "").removeprefix("Bearer "))
            if org_of_token is None:
                return jsonify({"error": "login"}), 401
            with self.lock:
                self.orgs_seen.add(org)
                if org_of_token != org:
                    self.cross_tenant += 1
                    return jsonify({"error": "forbidden"}), 403
            return None

        @self.app.post("/orgs/<org>/stk-push")
        def stk_push(org: str) -> Any:
            denied = caller(org)
            if denied:
                return denied
            with self.lock:
                self.phones.append(request.get_json()["phone"])
            return jsonify({"CheckoutRequestID": "ws_CO_1"})

        @self.app.get("/orgs/<org>/transactions")
        @self.app.get("/orgs/<org>/balance")
        def reads(org: str) -> Any:
            return caller(org) or jsonify({"items": []})


@pytest.fixture
def stub() -> Iterator[tuple[StubDemoApp, str]]:
    app = StubDemoApp()
    with serving(app.app) as url:
        yield app, url


def test_traffic_mix_spans_orgs_and_counts_expected_denials(stub):
    app, url = stub
    config = traffic.TrafficConfig(
        base_url=url, duration=1.0, rps=60, cross_tenant=True, seed=3,
        wrong_password_ratio=0.2, cross_tenant_ratio=0.2, timeout=WAIT_S,
    )

    summary = traffic.run(config)

    assert summary.connection_errors == summary.server_errors == summary.breaches == 0
    assert summary.ok > 0
    assert summary.denied == app.failed_logins + app.cross_tenant
    assert app.failed_logins > 0 and app.cross_tenant > 0
    assert summary.actions["cross_tenant"] == app.cross_tenant
    assert {"stk_push", "transactions", "balance", "wrong_password"} <= set(summary.actions)
    assert len(app.orgs_seen) >= 3
    assert app.phones and all(re.fullmatch(r"2547000000\d\d", p) for p in app.phones)
    actions = sum(v for k, v in summary.actions.items() if k not in ("login", "wrong_password"))
    assert actions + summary.skipped <= 61


def test_traffic_logs_in_per_session_with_few_wrong_passwords_from_many_addresses(stub):
    """Sessions: a login every few actions, not one per action; wrong passwords are a
    few percent of the logins, each followed by the right one; users have addresses of
    their own (X-Forwarded-For), not all one."""
    app, url = stub

    summary = traffic.run(traffic.TrafficConfig(base_url=url, duration=4.0, rps=100, seed=11, users=40,
                                                timeout=WAIT_S, concurrency=8))

    actions = sum(v for k, v in summary.actions.items() if k not in ("login", "wrong_password"))
    assert actions > 200
    assert summary.actions["login"] <= actions / 2  # sessions of 3 to 12 actions (and first logins)
    assert 0 < app.failed_logins <= 0.15 * app.logins
    assert summary.actions["wrong_password"] == app.failed_logins
    assert summary.server_errors == summary.connection_errors == 0
    assert len(set(app.addresses)) >= 20 and all(a.startswith("10.") for a in app.addresses)


def test_traffic_without_flag_never_reads_other_tenants(stub):
    app, url = stub

    config = traffic.TrafficConfig(base_url=url, duration=0.5, rps=60, seed=4, cross_tenant_ratio=1.0, timeout=WAIT_S)

    summary = traffic.run(config)

    assert app.cross_tenant == 0
    assert "cross_tenant" not in summary.actions
    assert summary.ok > 0


def test_traffic_stops_at_max_requests(stub):
    _, url = stub

    summary = traffic.run(traffic.TrafficConfig(base_url=url, duration=30, rps=50, max_requests=5, seed=5,
                                                timeout=WAIT_S))

    assert sum(v for k, v in summary.actions.items() if k not in ("login", "wrong_password")) + summary.skipped == 5


def test_traffic_main_counts_connection_errors_and_prints_one_masked_line(capsys):
    import signal

    before = signal.getsignal(signal.SIGTERM)
    code = traffic.main(["--base-url", f"http://127.0.0.1:{free_port()}", "--duration", "0.3", "--rps", "20",
                         "--timeout", "2"])

    out = capsys.readouterr().out
    assert signal.getsignal(signal.SIGTERM) is before
    assert code == 1
    assert out.count("\n") == 1 and out.startswith("traffic: ")
    errors = int(re.search(r"connection_errors=(\d+)", out).group(1))
    assert errors > 0
    assert not re.search(r"2547\d{8}", out)
    assert traffic.mask_phone("254700000012") == "2547******12"
