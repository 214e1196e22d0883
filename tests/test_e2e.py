"""End to end, on the local stack with short intervals: faults in, notifications out.

The stack (examples/demo/localstack.py) runs the demo app under gunicorn on PostgreSQL,
the Daraja simulator, the inbox, the SMS relay, Prometheus and Alertmanager, all from
the same deploy/ configs as production with 1 s intervals and shortened ``for:``.
Each scenario injects a fault and asserts what reached the inbox; it prints the seconds
from fault to notification.

Organizations: acme/jambo carry the normal background traffic; safari gets Daraja spike
arrests, duka customer cancellations (side by side, so the negative case is watched
for as long as the positive one took), kilele has a tiny rate limit, pwani a rejected
consumer key.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import requests

from examples.demo.localstack import LocalStack
from examples.demo.servers import http_json, wait_until
from examples.demo.traffic import TrafficConfig, _Runner

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

ORGS = "acme,jambo,duka,safari,kilele,pwani"
CHANNELS = ("slack", "email", "sms")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    stack = LocalStack(tmp_path_factory.mktemp("local-stack"), fast=True, database="postgres", app_env={
        "DEMO_ORGANIZATIONS": ORGS, "DEMO_RATE_LIMITS": "kilele=3"})
    with stack:
        runner = _Runner(TrafficConfig(stack.url("app"), duration=600, rps=4, orgs=("acme", "jambo"), seed=5,
                                       wrong_password_ratio=0.0))
        background = threading.Thread(target=runner.run, daemon=True)
        background.start()
        try:
            yield stack
        finally:
            runner.stop()
            background.join(10)


class Demo:
    """A logged-in client of the demo app for one organization."""

    def __init__(self, stack: LocalStack, org: str) -> None:
        self.base, self.org = stack.url("app"), org
        self.session = requests.Session()
        token = self.session.post(f"{self.base}/login", json={
            "username": "demo", "password": "demo-password", "organization": org}, timeout=10).json()["token"]
        self.session.headers["Authorization"] = f"Bearer {token}"

    def get(self, path: str) -> requests.Response:
        return self.session.get(self.base + path, timeout=10)

    def push(self, n: int = 1) -> list[int]:
        return [self.session.post(f"{self.base}/orgs/{self.org}/stk-push",
                                  json={"phone": "254700000042", "amount": 100}, timeout=15).status_code
                for _ in range(n)]


def messages(stack: LocalStack, **filters: str) -> list[dict[str, Any]]:
    query = "&".join(f"{k}={v}" for k, v in filters.items())
    body = http_json("GET", f"{stack.url('inbox')}/api/messages?{query}&limit=500", timeout=5)
    return body["messages"] if isinstance(body, dict) else body


def about(message: dict[str, Any], alertname: str, organization: str | None = None) -> bool:
    names = message.get("alertnames") or [message.get("alertname")]
    return alertname in names and (organization is None or message.get("organization") == organization)


def wait_for_notification(stack, channels, alertname, organization=None, status="firing", timeout=60.0,
                          since=0.0) -> dict[str, float]:
    """Seconds from ``since`` until each channel got the notification."""
    arrived: dict[str, float] = {}

    def all_arrived():
        for channel in channels:
            if channel in arrived:
                continue
            for m in messages(stack, channel=channel, status=status):
                if about(m, alertname, organization) and m["received_ts"] >= since:
                    arrived[channel] = round(m["received_ts"] - since, 1)
        return len(arrived) == len(channels)

    try:
        wait_until(all_arrived, timeout=timeout, interval=0.5, description=f"{alertname} {status} on {channels}")
    except TimeoutError:
        firing = [a["labels"] for a in stack.prometheus.alerts()]
        raise AssertionError(f"{alertname} ({organization}) {status}: arrived {arrived}; Prometheus alerts: {firing}") from None
    return arrived


def simulator(stack: LocalStack, settings: dict[str, Any]) -> None:
    http_json("POST", stack.url("simulator") + "/sim/config", settings, timeout=5)


def test_e2e_cross_tenant_attempt_pages_on_all_three_channels(stack):
    fault = time.time()
    assert Demo(stack, "acme").get("/orgs/jambo/transactions").status_code == 403
    seconds = wait_for_notification(stack, CHANNELS, "CrossTenantAccessAttempt", "acme", since=fault)
    print(f"\nCrossTenantAccessAttempt: fault -> notification {seconds} s")


def test_e2e_spike_arrest_pages_for_that_organization_but_cancellations_page_nobody(stack):
    simulator(stack, {"orgs": {"safari": {"spike_arrest_ratio": 0.3},
                               "duka": {"result_mix": {"0": 0.5, "1032": 0.5}}}})
    safari, duka = Demo(stack, "safari"), Demo(stack, "duka")
    stop = threading.Event()

    def pushes(client):
        for _ in range(600):  # bounded: at most 600 pushes, stopped as soon as the alert arrived
            if stop.wait(0.1):
                return
            client.push()

    threads = [threading.Thread(target=pushes, args=(c,), daemon=True) for c in (safari, duka)]
    fault = time.time()
    for thread in threads:
        thread.start()
    try:
        seconds = wait_for_notification(stack, CHANNELS, "MPesaAPIFailures", "safari", since=fault, timeout=90)
        print(f"\nMPesaAPIFailures (safari, 30% 500.003.02): fault -> notification {seconds} s")
        time.sleep(3)  # a little longer than the positive case needed
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
        simulator(stack, {"orgs": {"safari": None, "duka": None}})
    assert stack.prometheus.value('sum(mpesa_transactions_total{organization="duka",outcome="customer_cancelled"})') > 5
    for alertname in ("MPesaAPIFailures", "TransactionFailureSpike"):
        assert not [a for a in stack.prometheus.alerts() if a["labels"].get("alertname") == alertname
                    and a["labels"].get("organization") == "duka"]
        assert not [m for m in messages(stack) if about(m, alertname, "duka")]
    assert not [m for m in messages(stack, channel="sms") if m.get("organization") == "duka"]


def test_e2e_medium_alert_goes_to_slack_only(stack):
    kilele = Demo(stack, "kilele")
    fault = time.time()
    statuses = [kilele.get("/orgs/kilele/balance").status_code for _ in range(25)]  # 3 per minute per worker
    assert statuses.count(429) >= 11
    seconds = wait_for_notification(stack, ["slack"], "RateLimitWarnings", "kilele", since=fault)
    print(f"\nRateLimitWarnings (medium): fault -> Slack {seconds} s")
    time.sleep(3)  # group_wait and group_interval are 1 s: anything else would have arrived
    for channel in ("email", "sms"):
        assert not [m for m in messages(stack, channel=channel) if about(m, "RateLimitWarnings")]


def test_e2e_alert_survives_an_alertmanager_restart_and_arrives_once(stack):
    simulator(stack, {"reject_consumer_keys": ["pwani-consumer-key"]})
    stack.alertmanager.stop()
    fault = time.time()
    try:
        statuses = Demo(stack, "pwani").push(4)
        assert statuses == [502] * 4  # no token: the app answers "M-Pesa is not available"
        wait_until(lambda: any(a["labels"].get("alertname") == "TokenRefreshFailures" and a["state"] == "firing"
                               for a in stack.prometheus.alerts()), timeout=30, interval=0.5)
    finally:
        stack.alertmanager.start()
        simulator(stack, {"reject_consumer_keys": []})
    seconds = wait_for_notification(stack, CHANNELS, "TokenRefreshFailures", "pwani", since=fault)
    print(f"\nTokenRefreshFailures across an Alertmanager restart: fault -> notification {seconds} s")
    time.sleep(5)  # resends every second, group_interval 1 s: a duplicate would show now
    for channel in CHANNELS:
        firing = [m for m in messages(stack, channel=channel, status="firing") if about(m, "TokenRefreshFailures", "pwani")]
        assert len(firing) == 1, (channel, firing)


def test_e2e_tampered_audit_entry_pages(stack):
    Demo(stack, "acme").push(1)
    fault = time.time()
    stack.postgres.admin_execute("UPDATE transactions SET status = 'refunded' WHERE checkout_id IN "
                                 "(SELECT checkout_id FROM transactions LIMIT 1)", database=stack.postgres.database)
    seconds = wait_for_notification(stack, CHANNELS, "AuditLogTampering", since=fault)
    print(f"\nAuditLogTampering: fault -> notification {seconds} s")
    stack.postgres.admin_execute("UPDATE transactions SET status = 'success' WHERE status = 'refunded'",
                                 database=stack.postgres.database)


def test_e2e_database_down_pages_then_resolves(stack):
    fault = time.time()
    stack.postgres.stop()
    try:
        seconds = wait_for_notification(stack, CHANNELS, "DatabaseDown", since=fault, timeout=60)
        print(f"\nDatabaseDown: fault -> notification {seconds} s")
        assert requests.get(stack.url("app") + "/health/detailed", timeout=10).status_code == 503
    finally:
        stack.postgres.start()
    back = time.time()
    seconds = wait_for_notification(stack, ["slack"], "DatabaseDown", status="resolved", since=back, timeout=60)
    print(f"DatabaseDown resolved: database back -> Slack {seconds} s")


def test_e2e_every_dashboard_panel_shows_data(stack):
    """With demo traffic flowing, every panel's query returns something from the real Prometheus."""
    from tests.dashboard_queries import dashboard_queries

    Demo(stack, "acme").push(3)
    queries = list(dashboard_queries(organization="acme", rate_interval="1m", range_="1h"))
    assert len(queries) >= 30

    def empty_panels():
        return [(q.dashboard, q.panel, q.expr) for q in queries if not stack.prometheus.query(q.expr)]

    try:
        wait_until(lambda: not empty_panels(), timeout=30, interval=2)
    except TimeoutError:
        pytest.fail("panels without data:\n" + "\n".join(map(str, empty_panels())))
