"""The SMS relay under hostile and stormy input: bad JSON, alert storms, strangers, numbers."""

from __future__ import annotations

import base64
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_phone_masking import SHAPES
from test_sms_relay import (  # noqa: F401 - fixtures below
    NUMBERS,
    africastalking,  # noqa: F401 - the fake provider fixture
    alert,
    at_settings,
    notification,
    sample,
)

from flask_mpesa_monitor.sms_relay import RelaySettings, create_app
from flask_mpesa_monitor.sms_relay.config import ConfigError


def refused(app, reason: str) -> float:
    relay = app.extensions["sms_relay"]
    return relay.registry.get_sample_value("sms_relay_refused_notifications_total", {"reason": reason}) or 0.0


@pytest.mark.parametrize("body, reason, word", [
    (b"[" * 100_000 + b"]" * 100_000, "too_deep", "deeper"),
    (b'{"version": "4", "alerts": ' + b"[" * 5000 + b"]" * 5000 + b"}", "too_deep", "deeper"),
    (b"{" * 3 + b'"x', "invalid_json", "JSON"),
    (b"\xff\xfe", "invalid_json", "JSON"),
    (b'{"version": "4", "alerts": "x"}', "not_a_notification", "alerts"),
])
def test_malformed_or_deeply_nested_json_is_400_with_a_reason_and_counted(africastalking, body, reason, word):
    app = create_app(at_settings(africastalking.url))
    response = app.test_client().post("/alerts", data=body, content_type="application/json")
    assert response.status_code == 400
    assert word in response.get_json()["error"]
    assert refused(app, reason) == 1
    assert africastalking.requests == []


def test_texts_per_notification_are_capped_with_one_summary(africastalking):
    app = create_app(at_settings(africastalking.url, max_texts_per_notification=5))
    storm = notification(*[{"status": "firing", "fingerprint": f"f{i}",
                            "labels": {"alertname": f"Alert{i % 7}", "severity": "critical"}} for i in range(3000)])
    response = app.test_client().post("/alerts", json=storm)
    assert response.status_code == 200
    # Africa's Talking takes every number in one request: 5 texts + 1 summary.
    assert len(africastalking.requests) == 6
    body = response.get_json()
    assert body["sent"] == 6 * len(NUMBERS) and body["summarized"] == 2995 * len(NUMBERS)
    summary = africastalking.requests[-1].form()["message"]
    assert summary.startswith("CRITICAL +2995 more alerts:") and len(summary) <= 160
    # Alertmanager sends the group again: every alert was delivered (or summarized), nothing more goes out.
    again = app.test_client().post("/alerts", json=storm)
    assert again.status_code == 200 and len(africastalking.requests) == 6


def test_cap_setting_is_validated(tmp_path):
    with pytest.raises(ConfigError, match="SMS_RELAY_MAX_TEXTS_PER_NOTIFICATION"):
        at_settings("http://127.0.0.1:1", max_texts_per_notification=0)


def _env(tmp_path, **files):
    key = tmp_path / "key"
    key.write_text("k\n")
    env = {"SMS_RELAY_PROVIDER": "africastalking", "SMS_RELAY_RECIPIENTS": "+254700000001",
           "SMS_RELAY_AT_USERNAME": "sandbox", "SMS_RELAY_AT_API_KEY_FILE": str(key)}
    for name, content in files.items():
        path = tmp_path / name
        path.write_text(content)
        env[f"SMS_RELAY_{name.upper()}_FILE"] = str(path)
    return env


def test_bearer_auth_from_a_file_guards_post_alerts(tmp_path, africastalking):
    settings = RelaySettings.from_env(_env(tmp_path, auth_token="s3cret-token\n"))
    settings = at_settings(africastalking.url, auth_token=settings.auth_token)
    app = create_app(settings)
    client = app.test_client()
    body = notification(alert())
    assert client.post("/alerts", json=body).status_code == 401
    assert client.post("/alerts", json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert refused(app, "unauthorized") == 2 and africastalking.requests == []
    assert client.post("/alerts", json=body, headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
    assert client.get("/-/healthy").status_code == 200  # probes need no credentials


def test_basic_auth_from_a_file_guards_post_alerts(tmp_path, africastalking):
    settings = RelaySettings.from_env(_env(tmp_path, basic_auth="alertmanager:pw:with:colons\n"))
    app = create_app(at_settings(africastalking.url, basic_auth=settings.basic_auth))
    good = base64.b64encode(b"alertmanager:pw:with:colons").decode()
    bad = base64.b64encode(b"alertmanager:nope").decode()
    client = app.test_client()
    assert client.post("/alerts", json=notification(alert()),
                       headers={"Authorization": f"Basic {bad}"}).status_code == 401
    assert client.post("/alerts", json=notification(alert()),
                       headers={"Authorization": "Basic !!"}).status_code == 401
    assert client.post("/alerts", json=notification(alert()),
                       headers={"Authorization": f"Basic {good}"}).status_code == 200


@pytest.mark.parametrize("content", ["nocolon", ":pw", "user:"])
def test_basic_auth_file_must_hold_user_and_password(tmp_path, content):
    with pytest.raises(ConfigError, match="SMS_RELAY_BASIC_AUTH_FILE") as info:
        RelaySettings.from_env(_env(tmp_path, basic_auth=content))
    assert content not in str(info.value) or content == "user:"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.from_regex(r"\A[17][0-9]{8}\Z"), st.sampled_from(sorted(SHAPES)))
def test_relay_masks_numbers_in_texts_and_logs_on_its_own(africastalking, caplog, subscriber, shape):
    number = SHAPES[shape](subscriber)
    africastalking.recorder.clear()
    caplog.clear()
    app = create_app(at_settings(africastalking.url, dedup_seconds=0))
    body = notification(alert(f"RefundTo{number}", fingerprint=subscriber, organization=number,
                              summary=f"Refund to {number} failed"))
    response = app.test_client().post("/alerts", json=body)
    assert response.status_code == 200
    texts = [r.form()["message"] for r in africastalking.requests]
    logs = "\n".join(r.getMessage() for r in caplog.records)
    for text in texts + [logs]:
        assert subscriber not in re.sub(r"[^0-9*]", "", text), text
