"""deploy/alertmanager: the config is valid for Alertmanager 0.25, routes as the table in
deploy/alertmanager/tests/routes.yml says, inhibits as that table says (played against a
real /usr/bin/prometheus-alertmanager), and delivers: a critical alert reaches Slack (a
local fake), email (a local SMTP sink) and SMS (the real relay, in front of a fake
Africa's Talking) with the templates' content.

The real-Alertmanager tests run the committed config with only its endpoints, secret
paths and group timers rewritten (see ``render_config``): routes, receivers' integrations,
templates and inhibitions are the committed ones.
"""

from __future__ import annotations

import email
import email.policy
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from werkzeug.serving import make_server

from examples.demo.servers import AlertmanagerServer, SMTPSink, free_port, wait_until
from flask_mpesa_monitor.sms_relay import RelaySettings, create_app

REPO = Path(__file__).resolve().parents[1]
AM_DIR = REPO / "deploy" / "alertmanager"
CONFIG = AM_DIR / "alertmanager.yml"
CHECK = AM_DIR / "check-config.sh"
TABLE = yaml.safe_load((AM_DIR / "tests" / "routes.yml").read_text())
SMS_RELAY_URL = "http://sms-relay:9099/alerts"
WATCHDOG_URL = "http://deadmans-switch.invalid/ping"
ONCALL = ("+447700900001",)  # Ofcom drama range: never a real phone

# --- offline checks ----------------------------------------------------------------------
def test_alertmanager_check_script_passes_config_and_route_table():
    result = subprocess.run([str(CHECK)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = len(TABLE["routes"])
    assert f"{rows}/{rows} route rows match" in result.stdout
    assert "SUCCESS" in result.stdout


def test_alertmanager_check_script_fails_on_a_wrong_route_row(tmp_path):
    table = tmp_path / "routes.yml"
    table.write_text(yaml.safe_dump({"routes": [
        {"name": "right", "labels": {"alertname": "A", "severity": "medium"}, "receivers": ["medium"]},
        {"name": "wrong", "labels": {"alertname": "B", "severity": "high"}, "receivers": ["critical"]},
    ]}))
    result = subprocess.run([str(CHECK), str(table)], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "FAIL wrong" in result.stdout and "ok   right" in result.stdout
    assert "1/2 route rows match" in result.stdout


def test_alertmanager_check_script_fails_on_a_field_0_25_does_not_know(tmp_path):
    # webhook `url_file` arrived after 0.25: the config must not use it, and the check
    # must catch a config that does.
    copy_dir = tmp_path / "alertmanager"
    shutil.copytree(AM_DIR, copy_dir)
    config = copy_dir / "alertmanager.yml"
    text = config.read_text()
    assert f"url: {SMS_RELAY_URL}" in text
    config.write_text(text.replace(f"url: {SMS_RELAY_URL}", "url_file: /etc/alertmanager/secrets/sms_url"))
    result = subprocess.run([str(copy_dir / "check-config.sh")], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "url_file" in result.stdout + result.stderr


def _walk(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield f"{path}.{key}", value
            yield from _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, f"{path}[{index}]")


def test_alertmanager_config_reads_secrets_only_from_files():
    config = yaml.safe_load(CONFIG.read_text())
    keys = {path.rsplit(".", 1)[-1] for path, _ in _walk(config)}
    for inline in ("slack_api_url", "api_url", "smtp_auth_password", "auth_password", "auth_secret",
                   "smtp_auth_secret", "password", "bearer_token", "credentials"):
        assert inline not in keys, f"{inline} must come from a *_file field"
    assert config["global"]["slack_api_url_file"] == "/etc/alertmanager/secrets/slack_api_url"
    assert config["global"]["smtp_auth_password_file"] == "/etc/alertmanager/secrets/smtp_password"
    assert config["templates"] == ["/etc/alertmanager/templates/*.tmpl"]
    assert "hooks.slack.com" not in CONFIG.read_text()


def test_alertmanager_config_rendered_lines_are_one_keyed_value_each():
    # The deploy script replaces these by key; each must be alone on its line.
    rendered = [line for line in CONFIG.read_text().splitlines() if line.rstrip().endswith("# rendered")]
    keys = sorted(re.match(r"\s*(\w+):", line).group(1) for line in rendered)
    assert keys == ["smtp_auth_username", "smtp_from", "smtp_require_tls", "smtp_smarthost", "to", "to"]


def test_alertmanager_receivers_have_the_integrations_of_the_contract():
    receivers = {r["name"]: r for r in yaml.safe_load(CONFIG.read_text())["receivers"]}
    integrations = {name: sorted(k for k in r if k.endswith("_configs")) for name, r in receivers.items()}
    assert integrations == {
        "critical": ["email_configs", "slack_configs", "webhook_configs"],
        "high": ["email_configs", "slack_configs"],
        "medium": ["slack_configs"],
        "watchdog": ["webhook_configs"],
        "null": [],
    }
    sms = receivers["critical"]["webhook_configs"][0]
    assert (sms["url"], sms["send_resolved"]) == (SMS_RELAY_URL, False)
    assert receivers["watchdog"]["webhook_configs"][0]["url"] == WATCHDOG_URL
    assert all(c["send_resolved"] for n in ("critical", "high", "medium") for c in receivers[n]["slack_configs"])


# --- a real Alertmanager -------------------------------------------------------------
def render_config(tmp: Path, *, slack_url: str, smtp: str, relay_url: str, watchdog_url: str) -> dict:
    """The committed config with endpoints and secret paths pointed at local fakes and
    group timers shortened; nothing else changed."""
    config = yaml.safe_load(CONFIG.read_text())
    secrets = tmp / "secrets"
    secrets.mkdir(exist_ok=True)
    (secrets / "slack_api_url").write_text(slack_url + "\n")
    (secrets / "smtp_password").write_text("placeholder\n")
    config["global"].update(
        slack_api_url_file=str(secrets / "slack_api_url"),
        smtp_auth_password_file=str(secrets / "smtp_password"),
        smtp_smarthost=smtp,
        smtp_require_tls=False,
    )
    config["templates"] = [str(AM_DIR / "templates" / "*.tmpl")]
    replaced = set()
    for receiver in config["receivers"]:
        for webhook in receiver.get("webhook_configs", []):
            target = {SMS_RELAY_URL: relay_url, WATCHDOG_URL: watchdog_url}[webhook["url"]]
            replaced.add(webhook["url"])
            webhook["url"] = target
            if "http_config" in webhook:  # the relay's bearer token, from a file
                (secrets / "sms_relay_token").write_text("relay-token\n")
                webhook["http_config"]["authorization"]["credentials_file"] = str(secrets / "sms_relay_token")
    assert replaced == {SMS_RELAY_URL, WATCHDOG_URL}

    def shorten(route: dict) -> None:
        route["group_wait"] = "0s"
        route["group_interval"] = "1s"
        for child in route.get("routes", []):
            shorten(child)

    shorten(config["route"])
    return config


def fingerprint(alertmanager: AlertmanagerServer, labels: dict[str, str]) -> tuple[str, list[str]]:
    """(fingerprint, inhibitedBy) of the alert with exactly these labels."""
    matches = [a for a in alertmanager.alerts(labels=labels) if a["labels"] == labels]
    assert len(matches) == 1, (labels, matches)
    return matches[0]["fingerprint"], matches[0]["status"]["inhibitedBy"]


def _case_labels(case: dict, side: str, index: int, *, as_stored: bool = True) -> dict[str, str]:
    """The labels of one side of a case, with a cluster and organizations of its own, so
    the cases cannot inhibit each other while they all fire in one Alertmanager: most
    inhibit rules compare `cluster`, the app's alert rule compares `organization` only
    (the app does not know its cluster). ``as_stored``: without empty values, which
    Alertmanager drops."""
    assert "cluster" not in case[side], "route table cases must not set cluster"
    labels = {**case[side], "cluster": f"case-{index}"}
    if labels.get("organization"):  # equal within a case, different from every other case
        labels["organization"] = f"{labels['organization']}-case-{index}"
    return {k: v for k, v in labels.items() if v != ""} if as_stored else labels


@pytest.fixture(scope="module")
def inhibition_alertmanager(tmp_path_factory) -> Iterator[AlertmanagerServer]:
    """One Alertmanager with every inhibition case of the table firing at once."""
    tmp = tmp_path_factory.mktemp("am-inhibit")
    nowhere = f"http://127.0.0.1:{free_port()}"  # deliveries are not under test here
    config = render_config(tmp, slack_url=nowhere + "/slack", smtp=f"127.0.0.1:{free_port()}",
                           relay_url=nowhere + "/sms", watchdog_url=nowhere + "/ping")
    server = AlertmanagerServer(config, base_dir=tmp / "am", extra_args=["--log.level=error"])
    try:
        server.start()
        alerts = []
        for index, case in enumerate(TABLE["inhibitions"]):
            for side in ("source", "target"):
                alerts.append({"labels": _case_labels(case, side, index, as_stored=False),
                               "annotations": {"summary": case["name"]}})
        sentinel = {"severity": "critical", "organization": "sentinel", "alertname": "Sentinel",
                    "service": "mpesa-mcp", "cluster": "sentinel"}
        sentinel_target = {**sentinel, "severity": "high", "alertname": "SentinelTarget"}
        server.post_alerts(alerts + [{"labels": sentinel}, {"labels": sentinel_target}])
        # The inhibitor reads new alerts from a subscription, in order: once the last
        # one posted is inhibited, every source posted before it is known to it.
        server.wait_for(lambda: fingerprint(server, sentinel_target)[1], timeout=15,
                        description="sentinel inhibited")
        yield server
    finally:
        server.cleanup()


@pytest.mark.slow
@pytest.mark.parametrize(
    "index", range(len(TABLE["inhibitions"])), ids=[c["name"] for c in TABLE["inhibitions"]]
)
def test_alertmanager_inhibition_matches_table(inhibition_alertmanager, index):
    case = TABLE["inhibitions"][index]
    source_fp, _ = fingerprint(inhibition_alertmanager, _case_labels(case, "source", index))
    _, inhibited_by = fingerprint(inhibition_alertmanager, _case_labels(case, "target", index))
    assert inhibited_by == ([source_fp] if case["inhibited"] else []), case["name"]


def test_alertmanager_inhibition_table_covers_every_rule_both_ways():
    config = yaml.safe_load(CONFIG.read_text())
    for rule in config["inhibit_rules"]:
        sources = [c for c in TABLE["inhibitions"]
                   if all(_matches(m, c["source"]) for m in rule["source_matchers"])]
        assert {c["inhibited"] for c in sources} == {True, False}, rule["source_matchers"]


def _matches(matcher: str, labels: dict[str, str]) -> bool:
    name, op, value = re.match(r'(\w+)(=~|!~|!=|=)"(.*)"$', matcher).groups()
    actual = labels.get(name, "")
    return {"=": actual == value, "!=": actual != value, "=~": re.fullmatch(value, actual) is not None,
            "!~": re.fullmatch(value, actual) is None}[op]


class RelayServer:
    """The real SMS relay app served by werkzeug in a thread on 127.0.0.1."""

    def __init__(self, settings: RelaySettings) -> None:
        self.app = create_app(settings)
        self.server = make_server("127.0.0.1", free_port(), self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def count(self, result: str) -> float:
        relay = self.app.extensions["sms_relay"]
        return relay.registry.get_sample_value(
            "sms_relay_messages_total", {"provider": relay.provider.name, "result": result}) or 0.0

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def smtp_without_auth() -> Iterator[SMTPSink]:
    """An SMTP sink that offers no AUTH, so Alertmanager sends without logging in.

    (The shared ``smtp_sink`` offers AUTH LOGIN first, whose challenge Go's client does
    not accept, and aiosmtpd's AUTH path raises a DeprecationWarning under
    ``filterwarnings = error``.)
    """
    with SMTPSink(accept_auth=False) as sink:
        yield sink


@pytest.fixture
def delivery_stack(tmp_path, alertmanager_factory, http_recorder, smtp_without_auth):
    """Alertmanager (committed config) -> fake Slack, SMTP sink, real relay -> fake
    Africa's Talking; and a recorder for the dead man's switch."""
    slack = http_recorder()
    provider = http_recorder()
    provider.set_handler("/version1/messaging", lambda request: (201, {"SMSMessageData": {
        "Message": "Sent", "Recipients": [
            {"statusCode": 101, "number": n, "status": "Success"} for n in request.form()["to"].split(",")
        ]}}), method="POST")
    watchdog = http_recorder()
    relay = RelayServer(RelaySettings(provider="africastalking", recipients=ONCALL, base_url=provider.url,
                                      at_username="sandbox", at_api_key="placeholder",
                                      auth_token="relay-token"))  # as render_config's token file
    try:
        config = render_config(tmp_path, slack_url=slack.url + "/services/T0/B0/PLACEHOLDER",
                               smtp=f"{smtp_without_auth.host}:{smtp_without_auth.port}",
                               relay_url=relay.url + "/alerts", watchdog_url=watchdog.url + "/ping")
        alertmanager = alertmanager_factory(config, extra_args=["--log.level=warn"])
        yield {"am": alertmanager, "slack": slack, "smtp": smtp_without_auth, "relay": relay,
               "provider": provider, "watchdog": watchdog}
    finally:
        relay.close()


CRITICAL = {
    "labels": {"alertname": "MPesaAPIFailures", "severity": "critical", "service": "mpesa-mcp",
               "organization": "acme"},
    "annotations": {
        "summary": "M-Pesa API failing for acme",
        "description": "12.5% of M-Pesa API calls for acme failed (provider or system errors) over 5m.",
        "value": "12.5%",
        "runbook_url": "https://example.com/docs/runbooks.md#mpesaapifailures",
        "dashboard_url": "https://grafana.example.com/d/mpesa-organization?var-organization=acme",
    },
}


def _now() -> str:
    return datetime.now(UTC).isoformat()


@pytest.mark.slow
def test_alertmanager_critical_alert_reaches_slack_email_and_sms(delivery_stack):
    stack = delivery_stack
    stack["am"].post_alerts([CRITICAL])

    [message] = stack["slack"].wait_for(1, path="/services/T0/B0/PLACEHOLDER", timeout=20)
    attachment = message.json()["attachments"][0]
    assert attachment["title"] == "[FIRING:1] CRITICAL MPesaAPIFailures (acme)"
    assert attachment["color"] == "danger"
    text = attachment["text"]
    for expected in ("*FIRING* M-Pesa API failing for acme", "12.5% of M-Pesa API calls for acme failed",
                     "*Severity:* critical", "*Organization:* acme", "*Value:* 12.5%",
                     "<https://example.com/docs/runbooks.md#mpesaapifailures|Runbook>",
                     "<https://grafana.example.com/d/mpesa-organization?var-organization=acme|Dashboard>"):
        assert expected in text, text

    [mail] = stack["smtp"].wait_for(1, timeout=20)
    assert mail.rcpt_tos == ["oncall@example.com"]
    assert mail.subject == "[FIRING:1] CRITICAL MPesaAPIFailures (acme): M-Pesa API failing for acme"
    for expected in ("Organization: acme", "Value:        12.5%", "Severity:     critical",
                     "Runbook:      https://example.com/docs/runbooks.md#mpesaapifailures",
                     "Dashboard:    https://grafana.example.com/d/mpesa-organization?var-organization=acme"):
        assert expected in mail.body, mail.body
    html = email.message_from_bytes(mail.raw, policy=email.policy.default).get_body(("html",)).get_content()
    for expected in ('<a href="https://example.com/docs/runbooks.md#mpesaapifailures">Runbook</a>',
                     '<a href="https://grafana.example.com/d/mpesa-organization?var-organization=acme">Dashboard</a>',
                     "<td>acme</td>", "<td>12.5%</td>", "M-Pesa API failing for acme"):
        assert expected in html, html

    [sms] = stack["provider"].wait_for(1, path="/version1/messaging", timeout=20)
    assert sms.form()["message"] == "CRITICAL MPesaAPIFailures org=acme: M-Pesa API failing for acme"
    assert sms.form()["to"] == ONCALL[0]

    # Resolution: Slack and email say so; nobody is texted about it.
    stack["am"].post_alerts([{**CRITICAL, "endsAt": _now()}])
    messages = stack["slack"].wait_for(2, path="/services/T0/B0/PLACEHOLDER", timeout=20)
    resolved = messages[1].json()["attachments"][0]
    assert resolved["title"] == "[RESOLVED] CRITICAL MPesaAPIFailures (acme)"
    assert resolved["color"] == "good" and "*RESOLVED* M-Pesa API failing for acme" in resolved["text"]
    mails = stack["smtp"].wait_for(2, timeout=20)
    assert mails[1].subject.startswith("[RESOLVED] CRITICAL MPesaAPIFailures (acme)")
    assert len(stack["provider"].received()) == 1
    assert stack["relay"].count("sent") == 1


@pytest.mark.slow
def test_alertmanager_each_severity_reaches_only_its_integrations(delivery_stack):
    stack = delivery_stack

    def alert(name: str, severity: str, **labels: str) -> dict:
        return {"labels": {"alertname": name, "severity": severity, "service": "mpesa-mcp", **labels},
                "annotations": {"summary": f"{name} summary"}}

    stack["am"].post_alerts([
        alert("HighResponseTime", "high"),
        alert("HighResourceUsage", "medium"),
        alert("SomethingWorthKnowing", "info"),
        alert("Watchdog", "none"),
        alert("DatabaseDown", "critical"),
    ])
    slack = stack["slack"].wait_for(3, timeout=20)
    titles = sorted(m.json()["attachments"][0]["title"] for m in slack)
    assert titles == ["[FIRING:1] CRITICAL DatabaseDown", "[FIRING:1] HIGH HighResponseTime",
                      "[FIRING:1] MEDIUM HighResourceUsage"]
    mails = stack["smtp"].wait_for(2, timeout=20)
    assert sorted(m.subject.split(":")[0] for m in mails) == ["[FIRING", "[FIRING"]
    assert sorted(m.subject.split("] ")[1].split(":")[0] for m in mails) == [
        "CRITICAL DatabaseDown", "HIGH HighResponseTime"]
    [ping] = stack["watchdog"].wait_for(1, path="/ping", timeout=20)
    assert ping.json()["version"] == "4" and ping.json()["commonLabels"]["alertname"] == "Watchdog"
    [sms] = stack["provider"].wait_for(1, timeout=20)
    assert sms.form()["message"] == "CRITICAL DatabaseDown: DatabaseDown summary"

    # By the time the critical group's deliveries arrived, the others had theirs: the
    # info alert went to no one, and only the critical one was texted.
    groups = {g["labels"].get("alertname"): g["receiver"]["name"] for g in stack["am"].groups()}
    assert groups["SomethingWorthKnowing"] == "null"
    assert all("SomethingWorthKnowing" not in m.text for m in stack["slack"].received())
    assert len(stack["provider"].received()) == 1


# --- one page for one cause: DatabaseDown and HighErrorRate -------------------------
def _page(name: str, **labels: str) -> dict:
    return {"labels": {"alertname": name, "severity": "critical", "service": "mpesa-mcp", **labels},
            "annotations": {"summary": f"{name} summary"}}


DATABASE_DOWN = _page("DatabaseDown", instance="app:5000", check="database", cluster="c1", environment="prod")
HIGH_ERROR_RATE = _page("HighErrorRate", cluster="c1", environment="prod")


def _database_outage(stack: dict, *, source_resolves_first: bool) -> list[str]:
    """Play a database outage as Prometheus sends it and return the Slack titles.

    DatabaseDown fires first (`for: 1m` against HighErrorRate's 2m), then HighErrorRate.
    After the recovery the error ratio still holds the outage for its window: with
    DatabaseDown's keep_firing_for (the rules), HighErrorRate resolves while DatabaseDown
    is still firing; ``source_resolves_first`` plays the order without it.
    """
    am, slack = stack["am"], stack["slack"]
    am.post_alerts([DATABASE_DOWN])
    slack.wait_for(1, timeout=20)
    am.post_alerts([HIGH_ERROR_RATE])
    wait_until(lambda: fingerprint(am, HIGH_ERROR_RATE["labels"])[1], timeout=20,
               description="HighErrorRate inhibited by DatabaseDown")
    if source_resolves_first:
        am.post_alerts([{**DATABASE_DOWN, "endsAt": _now()}])
        # HighErrorRate, still firing, is no longer inhibited: its next flush pages.
        slack.wait_for(3, timeout=20)
        am.post_alerts([{**HIGH_ERROR_RATE, "endsAt": _now()}])
        slack.wait_for(4, timeout=20)
    else:
        am.post_alerts([{**HIGH_ERROR_RATE, "endsAt": _now()}])
        # Alertmanager drops a resolved alert from its group once a flush has handled it.
        wait_until(lambda: not any(a["labels"].get("alertname") == "HighErrorRate"
                                   for g in am.groups() for a in g["alerts"]),
                   timeout=20, description="the resolved HighErrorRate flushed")
        am.post_alerts([{**DATABASE_DOWN, "endsAt": _now()}])
        slack.wait_for(2, timeout=20)
    wait_until(lambda: not am.groups() or all(not g["alerts"] for g in am.groups()), timeout=20,
               description="every group flushed")
    return [m.json()["attachments"][0]["title"] for m in slack.received()]


@pytest.mark.slow
def test_alertmanager_database_recovery_is_followed_by_no_second_critical_page(delivery_stack):
    titles = _database_outage(delivery_stack, source_resolves_first=False)
    assert titles == ["[FIRING:1] CRITICAL DatabaseDown", "[RESOLVED] CRITICAL DatabaseDown"]
    [sms] = delivery_stack["provider"].received()
    assert sms.form()["message"].startswith("CRITICAL DatabaseDown")


@pytest.mark.slow
def test_alertmanager_database_resolving_before_the_error_ratio_would_page_twice(delivery_stack):
    """Why DatabaseDown has keep_firing_for: without it the symptom outlives its cause."""
    titles = _database_outage(delivery_stack, source_resolves_first=True)
    assert "[FIRING:1] CRITICAL HighErrorRate" in titles
