"""The SMS relay texts once per incident: fingerprint and ``startsAt``.

A retry of the same notification (a failed webhook, a group re-sent, the second
Alertmanager of a pair) is not texted twice; a new incident of the same alert (the same
labels, a later ``startsAt``) is always texted, however soon after the first.
"""

from __future__ import annotations

import pytest

from flask_mpesa_monitor.sms_relay import create_app
from flask_mpesa_monitor.sms_relay.dedup import DedupStore, incident_key
from tests.test_sms_relay import (
    Clock,
    FakeAfricasTalking,
    alert,
    at_settings,
    notification,
)


@pytest.fixture
def africastalking(http_recorder) -> FakeAfricasTalking:
    return FakeAfricasTalking(http_recorder(default_status=404, default_body={"error": "no route"}))


def _incident(starts_at: str) -> dict:
    return {**alert(fingerprint="fp-acme"), "startsAt": starts_at}


def test_sms_relay_texts_a_new_incident_of_the_same_alert_within_the_window(africastalking):
    clock = Clock()
    app = create_app(at_settings(africastalking.url, dedup_seconds=3600), clock=clock)
    client = app.test_client()

    first = notification(_incident("2026-12-01T10:00:00Z"))
    assert client.post("/alerts", json=first).get_json()["sent"] == 2
    # Resolved, then firing again 2.5 minutes later: a second incident.
    clock.now += 150
    second = notification(_incident("2026-12-01T10:02:30Z"))
    answer = client.post("/alerts", json=second).get_json()
    assert (answer["sent"], answer["deduplicated"]) == (2, 0)
    assert len(africastalking.requests) == 2


def test_sms_relay_does_not_text_a_retry_of_the_same_incident_twice(africastalking):
    clock = Clock()
    app = create_app(at_settings(africastalking.url, dedup_seconds=3600), clock=clock)
    client = app.test_client()
    body = notification(_incident("2026-12-01T10:00:00Z"))

    assert client.post("/alerts", json=body).get_json()["sent"] == 2
    for _ in range(3):  # Alertmanager's retries and re-sends of the group
        clock.now += 300
        answer = client.post("/alerts", json=body).get_json()
        assert (answer["sent"], answer["deduplicated"]) == (0, 2)
    assert len(africastalking.requests) == 1


def test_incident_key_tells_incidents_and_recipients_apart():
    store = DedupStore(3600, Clock())
    store.record(incident_key("fp", "2026-12-01T10:00:00Z", "firing", "+447700900001"))
    assert store.seen(incident_key("fp", "2026-12-01T10:00:00Z", "firing", "+447700900001"))
    assert not store.seen(incident_key("fp", "2026-12-01T10:02:30Z", "firing", "+447700900001"))
    assert not store.seen(incident_key("fp", "2026-12-01T10:00:00Z", "firing", "+447700900002"))
    assert not store.seen(incident_key("fp", "2026-12-01T10:00:00Z", "resolved", "+447700900001"))
