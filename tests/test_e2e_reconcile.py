"""End to end, callbacks lost: the demo app's STK Query reconciliation recovers them, once.

On the local stack (examples/demo/localstack.py: the demo app under gunicorn, the Daraja
simulator, Prometheus), one organization's callbacks are all lost. Its pushes are counted
missing after the callback timeout; the app's reconciliation (STK Query against the
simulator, answers handed to ``monitor.record_stk_query``) then resolves each one, once:
recovered, its money verified revenue up to the pushed amount, and a second
reconciliation finds nothing left to ask.
"""

from __future__ import annotations

import pytest
import requests

from examples.demo.localstack import LocalStack
from examples.demo.servers import http_json, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

ORG = "kifaru"
PUSHES = 4


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    stack = LocalStack(tmp_path_factory.mktemp("local-stack-reconcile"), fast=True, database="sqlite",
                       app_env={"DEMO_ORGANIZATIONS": f"{ORG},acme"})
    with stack:
        yield stack


def metric(stack: LocalStack, expr: str) -> float:
    return stack.prometheus.value(f"sum({expr}) or vector(0)") or 0.0


def test_e2e_callbacks_lost_are_recovered_by_stk_query_once(stack):
    http_json("POST", stack.url("simulator") + "/sim/config", {"orgs": {ORG: {
        "callbacks_lost": 1.0, "result_mix": {"0": 1.0}, "callback_delay_s": [0.2, 0.5]}}}, timeout=5)
    session = requests.Session()
    base = stack.url("app")
    token = session.post(f"{base}/login", json={"username": "demo", "password": "demo-password",
                                                "organization": ORG}, timeout=10).json()["token"]
    session.headers["Authorization"] = f"Bearer {token}"
    for _ in range(PUSHES):
        response = session.post(f"{base}/orgs/{ORG}/stk-push", json={"phone": "254700000042", "amount": 100},
                                timeout=15)
        assert response.status_code == 202, response.text
    missing = f'mpesa_stk_callbacks_missing_total{{organization="{ORG}"}}'
    wait_until(lambda: metric(stack, missing) >= PUSHES, timeout=90, interval=1.0,
               description="the lost callbacks counted missing")
    revenue = f'mpesa_revenue_total{{organization="{ORG}"}}'
    assert metric(stack, revenue) == 0

    answer = session.post(f"{base}/orgs/{ORG}/reconcile", json={"older_than": 0}, timeout=30).json()
    assert answer["reconciled"] == {"recovered": PUSHES}
    recovered = f'mpesa_stk_reconciled_total{{organization="{ORG}", result="recovered"}}'
    wait_until(lambda: metric(stack, recovered) == PUSHES, timeout=30, interval=1.0,
               description="the recoveries scraped")
    wait_until(lambda: metric(stack, revenue) == 100 * PUSHES, timeout=30, interval=1.0,
               description="the recovered revenue scraped")
    # Nothing is left to ask, and nothing counts twice.
    again = session.post(f"{base}/orgs/{ORG}/reconcile", json={"older_than": 0}, timeout=30).json()
    assert again["reconciled"] == {}
    assert session.get(f"{base}/orgs/{ORG}/balance", timeout=10).json()["balance"] == 100 * PUSHES
    ok = f'mpesa_transactions_total{{organization="{ORG}", type="stk_push", outcome="success"}}'
    assert metric(stack, ok) == PUSHES
    assert metric(stack, f'mpesa_stk_callbacks_late_total{{organization="{ORG}"}}') == 0
    assert metric(stack, missing) == PUSHES


FLOW_METRICS = ("mpesa_c2b_", "mpesa_b2c_", "mpesa_payouts_", "mpesa_stk_reconciled_", "mpesa_async_queue_")


def test_e2e_flow_panels_show_data_on_the_real_prometheus(stack):
    """The C2B, B2C and reconciliation panels answer (a tenant without those flows sees
    0, not "No data") from the stack's Prometheus, after the recovery above."""
    from tests.dashboard_queries import dashboard_queries

    queries = [q for q in dashboard_queries(organization=ORG, rate_interval="1m", range_="1h")
               if any(name in q.expr for name in FLOW_METRICS)]
    assert len(queries) >= 10
    empty = [(q.dashboard, q.panel, q.expr) for q in queries if not stack.prometheus.query(q.expr)]
    assert not empty, "panels without data:\n" + "\n".join(map(str, empty))
