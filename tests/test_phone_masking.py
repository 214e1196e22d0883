"""One masking rule everywhere we emit text: generated numbers in every shape people write.

Each test draws Kenyan subscriber numbers, writes them the way a customer, an app or a
URL would (spaces, dashes, dots, brackets, ``+254 (0)``, pairs, percent-encoding, glued to
a word) and searches what the package emits for the 9 subscriber digits.
"""

from __future__ import annotations

import io
import logging
import re
import urllib.parse

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flask_mpesa_monitor import MPesaMonitor
from flask_mpesa_monitor.alerts import AlertSender, alert_name
from flask_mpesa_monitor.health.database import describe_error
from flask_mpesa_monitor.redact import RedactingFormatter, get_logger, mask_phones, redact
from flask_mpesa_monitor.tenancy import BoundedLabel

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

subscribers = st.from_regex(r"\A[17][0-9]{8}\Z")


def _groups(digits: str, sizes: tuple[int, ...], sep: str) -> str:
    out, at = [], 0
    for size in sizes:
        out.append(digits[at:at + size])
        at += size
    return sep.join(part for part in out if part)


SHAPES = {
    "plain": lambda s: "254" + s,
    "plus": lambda s: "+254" + s,
    "trunk": lambda s: "0" + s,
    "spaces": lambda s: "254 " + _groups(s, (3, 3, 3), " "),
    "dashes_trunk": lambda s: "0" + _groups(s, (3, 3, 3), "-"),
    "brackets": lambda s: f"(0{s[:3]}) {s[3:6]} {s[6:]}",
    "dots": lambda s: "254." + _groups(s, (3, 3, 3), "."),
    "plus_dashes": lambda s: "+254-" + _groups(s, (3, 3, 3), "-"),
    "plus_zero": lambda s: f"+254 (0) {s[:3]} {s[3:6]} {s[6:]}",
    "pairs": lambda s: "0" + s[0] + " " + _groups(s[1:], (2, 2, 2, 2), " "),
    "underscores": lambda s: "254_" + _groups(s, (3, 3, 3), "_"),
    "url_plus": lambda s: urllib.parse.quote("+254" + s),
    "url_spaces": lambda s: urllib.parse.quote("+254 " + _groups(s, (3, 3, 3), " ")),
    "form": lambda s: urllib.parse.quote_plus("254 " + _groups(s, (3, 3, 3), " ")),
    "msisdn": lambda s: "msisdn254" + s,
    "tel": lambda s: "tel254" + s,
}
shapes = st.sampled_from(sorted(SHAPES))
contexts = st.sampled_from(["{}", "paid by {}.", "Refund to {}", "phone={}&amount=10", "x{}y", "[{}]", "id:{} ok"])


def written(subscriber: str, shape: str, context: str) -> str:
    return context.format(SHAPES[shape](subscriber))


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_every_listed_shape_is_masked(shape):
    text = written("712345678", shape, "pay {} now")
    masked = mask_phones(text)
    assert "712345678" not in re.sub(r"[^0-9*]", "", masked), (text, masked)
    assert masked.startswith("pay ") and masked.endswith(" now")


@PROPERTY
@given(subscribers, shapes, contexts)
def test_mask_phones_hides_the_subscriber_digits(subscriber, shape, context):
    text = written(subscriber, shape, context)
    masked = mask_phones(text)
    assert subscriber not in re.sub(r"[^0-9*]", "", masked), (text, masked)


@PROPERTY
@given(subscribers, shapes, contexts)
def test_alert_names_never_carry_the_digits(subscriber, shape, context):
    name = alert_name(written(subscriber, shape, context))
    assert re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", name)
    assert not re.search(r"\d{5,}", name), name


@PROPERTY
@given(subscribers, shapes, contexts)
def test_labels_holding_a_number_are_unknown(subscriber, shape, context):
    guard = BoundedLabel("organization_property_test", 1000)
    value = written(subscriber, shape, context)
    assert guard(value) in ("unknown",) or subscriber not in re.sub(r"\D", "", guard(value))


@PROPERTY
@given(subscribers, shapes)
def test_log_lines_and_tracebacks_are_masked(subscriber, shape):
    number = SHAPES[shape](subscriber)
    log = get_logger("flask_mpesa_monitor.property_test")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    try:
        log.info("callback from %s", number)
        try:
            payload = {"PhoneNumber": number}
            raise RuntimeError(f"bad payload {payload}")
        except RuntimeError:
            log.exception("callback failed for %s", number)
        log.warning("stack for %s", number, stack_info=True)
    finally:
        log.removeHandler(handler)
    text = stream.getvalue()
    assert "RuntimeError" in text and "Traceback" in text
    assert subscriber not in re.sub(r"[^0-9*]", "", text), text


def test_formatter_masks_other_loggers_records():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(RedactingFormatter("%(message)s"))
    other = logging.getLogger("some.app")
    other.addHandler(handler)
    try:
        try:
            raise ValueError("for 0712-345-678")
        except ValueError:
            other.error("paying 254 712 345 678", exc_info=True)
    finally:
        other.removeHandler(handler)
    assert "712345678" not in re.sub(r"[^0-9*]", "", stream.getvalue())
    assert "ValueError" in stream.getvalue()


@PROPERTY
@given(subscribers, shapes)
def test_redact_masks_daraja_items_and_nested_text(subscriber, shape):
    number = SHAPES[shape](subscriber)
    out = redact({"Body": {"stkCallback": {"CallbackMetadata": {"Item": [
        {"Name": "PhoneNumber", "Value": int("254" + subscriber)},
        {"Name": "Amount", "Value": 10},
        {"Name": "Note", "Value": f"from {number}"}]}}}, "list": [number], number: "key"})
    assert subscriber not in re.sub(r"[^0-9*]", "", repr(out)), out
    assert out["Body"]["stkCallback"]["CallbackMetadata"]["Item"][1]["Value"] == 10


def test_daraja_phone_item_given_as_int_is_masked():
    out = redact({"Name": "PhoneNumber", "Value": 254722000111})
    assert "722000111" not in str(out["Value"]) and out["Name"] == "PhoneNumber"


@PROPERTY
@given(subscribers, shapes)
def test_health_error_text_is_masked(subscriber, shape):
    number = SHAPES[shape](subscriber)
    text = describe_error(RuntimeError(f"connect to postgresql://app:pw@db/x failed for {number}"))
    assert subscriber not in re.sub(r"[^0-9*]", "", text) and "pw@" not in text


@PROPERTY
@given(subscribers, shapes, contexts)
def test_alerts_built_for_alertmanager_hold_no_number(subscriber, shape, context):
    text = written(subscriber, shape, context)
    sender = AlertSender(())
    alert = sender.build("high", text, f"message {text}", details={"phone": text, "n": int("254" + subscriber)},
                         organization=text, annotations={"note": text, text: "x"})
    dumped = repr(alert)
    assert subscriber not in re.sub(r"[^0-9*]", "", dumped), dumped
    assert alert["labels"]["organization"] == "unknown"


def test_amounts_ids_and_dates_are_left_alone():
    text = "amount 1500.00 receipt NLJ7RT61SV shortcode 174379 on 2026-12-01 20:24:24 ws_CO_191220191020"
    assert mask_phones(text) == text


def test_cli_check_output_is_masked(tmp_path):
    app = Flask(__name__)
    app.config["MPESA_MONITOR_HEALTH_BACKGROUND"] = False
    monitor = MPesaMonitor(app)

    @monitor.health_check("payments")
    def payments():
        raise RuntimeError("last payer +254 (0) 712 345 678 via postgresql://u:secretpw@db/x")

    result = app.test_cli_runner().invoke(args=["monitor", "check"])
    assert "payments" in result.output
    assert "712345678" not in re.sub(r"[^0-9*]", "", result.output) and "secretpw" not in result.output
