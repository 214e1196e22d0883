"""Every Python block of the README runs as pasted: each is a complete module (imports,
routes inside the app factory), executed here on its own, and its app answers as the
text around it says.

A new block needs its check below: the count is compared, so a block cannot be added
without being run.
"""

from __future__ import annotations

import asyncio
import importlib.util
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from flask.testing import FlaskClient
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from flask_mpesa_monitor import get_state

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def load(source: str, tmp_path: Path, index: int) -> ModuleType:
    """The block as a module of its own, as a user's ``app.py`` would be."""
    path = tmp_path / f"readme_block_{index}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(path.stem, None)
    return module


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def scraped(client: FlaskClient, name: str, **labels: str) -> float | None:
    """The sample ``name{labels}`` as ``/metrics`` shows it (None when it is not there),
    after checking that the page holds no phone number."""
    page = client.get("/metrics").text
    assert PHONE not in page and "0" + PHONE[3:] not in page, "a phone number reached /metrics"
    for family in text_string_to_metric_families(page):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return None


#: The customer's number in the bodies below; it must never reach /metrics.
PHONE = "254708374149"


def callback_body(checkout_id: str, amount: int, code: int = 0) -> dict[str, Any]:
    items = [{"Name": "Amount", "Value": amount}, {"Name": "MpesaReceiptNumber", "Value": "NLJ7RT61SV"},
             {"Name": "PhoneNumber", "Value": int(PHONE)}]
    return {"Body": {"stkCallback": {"MerchantRequestID": "29115-34620561-1", "CheckoutRequestID": checkout_id,
                                     "ResultCode": code, "ResultDesc": "The service request is processed.",
                                     "CallbackMetadata": {"Item": items}}}}


def check_quick_start(module: ModuleType) -> None:
    app = module.create_app()
    assert app.config["MPESA_MONITOR_ALERTMANAGER_URL"], "the Quick start shows where alerts go"
    client = app.test_client()
    before = value("mpesa_stk_pushes_total", organization="qs-acme")
    assert client.post("/orgs/qs-acme/pay", json={"phone": "254712345678", "amount": 10}).status_code == 200
    assert value("mpesa_stk_pushes_total", organization="qs-acme") == before + 1
    assert value("mpesa_api_calls_total", operation="stk_push", organization="qs-acme", outcome="success") >= 1
    assert client.get("/metrics").status_code == 401
    metrics = client.get("/metrics", headers={"Authorization": "Bearer a-long-random-token"})
    assert metrics.status_code == 200 and b'endpoint="/orgs/<org_id>/pay"' in metrics.data
    assert b"254712345678" not in metrics.data


def check_resolver(module: ModuleType) -> None:
    client = module.create_app().test_client()
    before = value("mpesa_mcp_requests_total", method="GET", endpoint="unmatched", status="404", organization="acme")
    client.get("/no-such-page")
    assert value("mpesa_mcp_requests_total", method="GET", endpoint="unmatched", status="404",
                 organization="acme") == before + 1


def check_decorators(module: ModuleType) -> None:
    module.create_app()
    before = value("mpesa_db_query_duration_seconds_count", operation="load_transactions")
    assert module.load_transactions("acme") == []
    assert value("mpesa_db_query_duration_seconds_count", operation="load_transactions") == before + 1
    calls = value("mpesa_mcp_tool_calls_total", tool="stk_push", organization="acme", outcome="success")
    asyncio.run(module.stk_push_tool("acme", amount=1))
    assert value("mpesa_mcp_tool_calls_total", tool="stk_push", organization="acme", outcome="success") == calls + 1
    assert value("mpesa_api_quota_limit", organization="acme") == 600


def check_callbacks(module: ModuleType) -> None:
    client = module.create_app().test_client()
    before = value("mpesa_revenue_total", organization="cb-acme", currency="KES")
    assert client.post("/orgs/cb-acme/pay", json={"amount": 100}).status_code == 200
    answer = client.post("/mpesa/callback/cb-acme", json=callback_body("ws_CO_01122026101500002", 100))
    assert answer.status_code == 200 and answer.json["ResultCode"] == 0
    assert value("mpesa_revenue_total", organization="cb-acme", currency="KES") == before + 100
    bad = client.post("/mpesa/callback/cb-acme", json={"not": "a callback"})
    assert bad.status_code == 400 and bad.json["ResultCode"] == 1


def check_reconcile(module: ModuleType) -> None:
    app = module.create_app()
    client, checkout = app.test_client(), "ws_CO_01122026101500003"
    revenue = value("mpesa_revenue_total", organization="rq-acme", currency="KES")
    assert client.post("/orgs/rq-acme/pay", json={"amount": 250}).json["CheckoutRequestID"] == checkout
    # the callback is lost: past the callback timeout the push counts as missing
    assert get_state(app).transactions.expire(now=time.time() + 3600) == 1
    assert client.post(f"/orgs/rq-acme/reconcile/{checkout}").json == {"match": "recovered"}
    assert scraped(client, "mpesa_stk_reconciled_total", organization="rq-acme", result="recovered") == 1
    assert scraped(client, "mpesa_api_calls_total", operation="stk_query", organization="rq-acme",
                   outcome="success") == 1
    # the pushed amount is the revenue, once: a second query and the late callback are duplicates
    assert client.post(f"/orgs/rq-acme/reconcile/{checkout}").json == {"match": "duplicate"}
    with app.app_context():
        assert module.monitor.record_stk_callback(callback_body(checkout, 250), "rq-acme").duplicate
    assert value("mpesa_revenue_total", organization="rq-acme", currency="KES") == revenue + 250
    assert scraped(client, "mpesa_transactions_total", organization="rq-acme", type="stk_push",
                   outcome="success") == 1
    assert scraped(client, "mpesa_stk_callbacks_late_total", organization="rq-acme") is None
    assert client.post("/orgs/rq-acme/reconcile/ws_CO_never_pushed").json == {"match": "unknown"}


def c2b_body(trans_id: str, amount: str, bill_ref: str = "INV-1001") -> dict[str, Any]:
    return {"TransactionType": "Pay Bill", "TransID": trans_id, "TransTime": "20261201101500",
            "TransAmount": amount, "BusinessShortCode": "600984", "BillRefNumber": bill_ref,
            "InvoiceNumber": "", "OrgAccountBalance": "49197.00", "ThirdPartyTransID": "",
            "MSISDN": PHONE, "FirstName": "Jane"}


def check_c2b(module: ModuleType) -> None:
    client = module.create_app().test_client()
    safaricom = {"REMOTE_ADDR": "196.201.214.200"}  # in the shipped list of callback addresses
    assert client.post("/c2b/c2b-readme/validation", json=c2b_body("SLV0000001", "700")).json["ResultCode"] == "0"
    rejected = client.post("/c2b/c2b-readme/validation", json=c2b_body("SLV0000002", "700", bill_ref="nope"))
    assert rejected.json["ResultCode"] == "C2B00012"
    assert scraped(client, "mpesa_c2b_validations_total", organization="c2b-readme", shortcode="600984",
                   result="accepted", reason="none") == 1
    assert scraped(client, "mpesa_c2b_validations_total", organization="c2b-readme", shortcode="600984",
                   result="rejected", reason="invalid_account") == 1
    assert scraped(client, "mpesa_c2b_validation_duration_seconds_count", organization="c2b-readme") == 2
    revenue = value("mpesa_revenue_total", organization="c2b-readme", currency="KES")
    for _ in range(3):  # Daraja retries a confirmation: counted once
        answer = client.post("/c2b/c2b-readme/confirmation", json=c2b_body("SLV0000001", "700"),
                             environ_base=safaricom)
        assert answer.status_code == 200 and answer.json["ResultCode"] == "0"
    assert scraped(client, "mpesa_c2b_confirmations_total", organization="c2b-readme", shortcode="600984") == 1
    assert value("mpesa_revenue_total", organization="c2b-readme", currency="KES") == revenue + 700
    # from an address not in the list: counted, never revenue
    client.post("/c2b/c2b-readme/confirmation", json=c2b_body("SLV0000003", "9000"))
    assert value("mpesa_revenue_total", organization="c2b-readme", currency="KES") == revenue + 700
    assert scraped(client, "mpesa_revenue_unverified_total", organization="c2b-readme", currency="KES",
                   reason="unknown_source") == 9000
    bad = client.post("/c2b/c2b-readme/confirmation", json=c2b_body("SLV0000004", "-5"), environ_base=safaricom)
    assert bad.status_code == 400 and bad.json["ResultCode"] == "1"
    assert scraped(client, "mpesa_security_events_total", event_type="invalid_callback", severity="medium",
                   organization="c2b-readme") == 1


def b2c_result_body(conversation: str, code: int, amount: int | None = None) -> dict[str, Any]:
    parameters = [{"Key": "ReceiverPartyPublicName", "Value": f"{PHONE} - Jane Doe"}]
    if amount is not None:
        parameters += [{"Key": "TransactionAmount", "Value": amount},
                       {"Key": "B2CUtilityAccountAvailableFunds", "Value": 98500.00}]
    return {"Result": {"ResultType": 0, "ResultCode": code, "ResultDesc": "The service request is processed.",
                       "OriginatorConversationID": "29112-34801843-1", "ConversationID": conversation,
                       "TransactionID": "NLJ41HAY6Q", "ResultParameters": {"ResultParameter": parameters}}}


def check_b2c(module: ModuleType) -> None:
    client = module.create_app().test_client()
    revenue = value("mpesa_revenue_total", organization="b2c-acme", currency="KES")
    for _ in range(2):  # Daraja retries a result: counted once
        answer = client.post("/b2c/b2c-acme/result", json=b2c_result_body("AG_20261201_01", 0, amount=1500))
        assert answer.status_code == 200 and answer.json["ResultCode"] == 0
    assert scraped(client, "mpesa_transactions_total", organization="b2c-acme", type="b2c", outcome="success") == 1
    assert scraped(client, "mpesa_payouts_total", organization="b2c-acme", currency="KES") == 1500
    assert value("mpesa_revenue_total", organization="b2c-acme", currency="KES") == revenue  # never revenue
    assert scraped(client, "mpesa_b2c_float_balance", organization="b2c-acme", currency="KES") == 98500
    # 2001 is the business's invalid initiator in the B2C column: a system error, no payout
    client.post("/b2c/b2c-acme/result", json=b2c_result_body("AG_20261201_02", 2001))
    assert scraped(client, "mpesa_transactions_total", organization="b2c-acme", type="b2c",
                   outcome="system_error") == 1
    timeout = {"Result": {"ResultType": 1, "ResultCode": 1, "ResultDesc": "The request timed out in the queue",
                          "OriginatorConversationID": "29112-34801843-3", "ConversationID": "AG_20261201_03"}}
    for _ in range(2):
        assert client.post("/b2c/b2c-acme/timeout", json=timeout).status_code == 200
    assert scraped(client, "mpesa_async_queue_timeouts_total", organization="b2c-acme", api="b2c") == 1
    assert scraped(client, "mpesa_transactions_total", organization="b2c-acme", type="b2c",
                   outcome="system_error") == 1  # a queue timeout is not a failure
    assert client.post("/b2c/b2c-acme/result", json={"Result": {"ResultCode": 0}}).status_code == 400


def check_helpers(module: ModuleType) -> None:
    app = module.create_app()
    client = app.test_client()
    hits = value("mpesa_cache_requests_total", cache="accounts", result="hit")
    misses = value("mpesa_cache_requests_total", cache="accounts", result="miss")
    for _ in range(3):
        assert client.get("/orgs/cache-acme/account").json == {"organization": "cache-acme"}
    assert value("mpesa_cache_requests_total", cache="accounts", result="miss") == misses + 1
    assert value("mpesa_cache_requests_total", cache="accounts", result="hit") == hits + 2
    with app.app_context():
        result = module.monitor.run_health_checks().results["encryption"]
    assert result.status == "healthy" and result.details == {"round_trip": "passed"}
    assert scraped(client, "mpesa_health_check_status", check="encryption") == 1


def check_security(module: ModuleType) -> None:
    client = module.create_app().test_client()
    failures = value("mpesa_auth_attempts_total", organization="sec-acme", result="failure")
    assert client.post("/login", data={"organization": "sec-acme", "password": "wrong"}).status_code == 401
    assert value("mpesa_auth_attempts_total", organization="sec-acme", result="failure") == failures + 1
    crossings = value("mpesa_cross_tenant_attempts_total", organization="acme")
    assert client.get("/orgs/globex/report").status_code == 403
    assert value("mpesa_cross_tenant_attempts_total", organization="acme") == crossings + 1
    events = value("mpesa_security_events_total", event_type="invalid_signature", severity="high",
                   organization="sec-acme")
    assert client.post("/orgs/sec-acme/webhook").status_code == 401
    assert value("mpesa_security_events_total", event_type="invalid_signature", severity="high",
                 organization="sec-acme") == events + 1


def check_gunicorn_config(module: ModuleType) -> None:
    from flask_mpesa_monitor import gunicorn

    assert module.on_starting is gunicorn.on_starting and module.child_exit is gunicorn.child_exit
    assert module.logconfig_dict["loggers"]["gunicorn.error"]["propagate"] is False


CHECKS: list[Callable[[ModuleType], None]] = [
    check_quick_start, check_resolver, check_decorators, check_callbacks, check_reconcile, check_c2b, check_b2c,
    check_helpers, check_security, check_gunicorn_config]


def test_every_python_block_of_the_readme_has_a_check():
    assert len(python_blocks()) == len(CHECKS)


@pytest.mark.parametrize("index", range(len(CHECKS)), ids=[c.__name__ for c in CHECKS])
def test_readme_python_block_runs_as_pasted(index, tmp_path):
    blocks = python_blocks()
    if index >= len(blocks):
        pytest.fail(f"the README has {len(blocks)} Python blocks, the checks expect {len(CHECKS)}")
    CHECKS[index](load(blocks[index], tmp_path, index))
