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
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from prometheus_client import REGISTRY

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


def callback_body(checkout_id: str, amount: int, code: int = 0) -> dict[str, Any]:
    items = [{"Name": "Amount", "Value": amount}, {"Name": "MpesaReceiptNumber", "Value": "NLJ7RT61SV"},
             {"Name": "PhoneNumber", "Value": 254708374149}]
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
    check_quick_start, check_resolver, check_decorators, check_callbacks, check_security, check_gunicorn_config]


def test_every_python_block_of_the_readme_has_a_check():
    assert len(python_blocks()) == len(CHECKS)


@pytest.mark.parametrize("index", range(len(CHECKS)), ids=[c.__name__ for c in CHECKS])
def test_readme_python_block_runs_as_pasted(index, tmp_path):
    blocks = python_blocks()
    if index >= len(blocks):
        pytest.fail(f"the README has {len(blocks)} Python blocks, the checks expect {len(CHECKS)}")
    CHECKS[index](load(blocks[index], tmp_path, index))
