"""No phone number reaches a real Alertmanager: app-side alerts built from generated
numbers in every shape, read back from Alertmanager's own API."""

from __future__ import annotations

import json
import re

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_phone_masking import SHAPES, contexts, written

from flask_mpesa_monitor import MPesaMonitor

pytestmark = pytest.mark.slow

CONFIG = {"route": {"receiver": "null", "group_wait": "1h"}, "receivers": [{"name": "null"}]}


def test_alerts_received_by_a_real_alertmanager_hold_no_phone_number(alertmanager_factory):
    am = alertmanager_factory(CONFIG)
    app = Flask(__name__)
    app.config["MPESA_MONITOR_ALERTMANAGER_URL"] = am.url
    monitor = MPesaMonitor(app)
    sent: list[tuple[str, str]] = []

    @settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.from_regex(r"\A[17][0-9]{8}\Z"), st.sampled_from(sorted(SHAPES)), contexts)
    def send(subscriber, shape, context):
        text = written(subscriber, shape, context)
        case = f"case {chr(ord('a') + len(sent) % 26)}{len(sent)}"
        assert monitor.send_alert("high", f"{text} {case}", f"B2C payout to {text} failed",
                                  details={"PhoneNumber": text, "Item": [{"Name": "PhoneNumber",
                                                                          "Value": int("254" + subscriber)}]},
                                  organization=text)
        sent.append((subscriber, text))

    send()
    state = app.extensions["mpesa_monitor"]
    assert state.alerts.flush(20), state.alerts.status()
    received = am.alerts(labels={"source": "app"})
    assert len(received) == len(sent) > 0
    dumped = json.dumps([{k: a[k] for k in ("labels", "annotations")} for a in received])
    digits = re.sub(r"[^0-9*]", "", dumped)
    leaks = [text for subscriber, text in sent if subscriber in digits]
    assert not leaks, leaks
    assert all(a["labels"]["organization"] == "unknown" for a in received)
