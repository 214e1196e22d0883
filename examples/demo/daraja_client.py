"""A Daraja client for the demo app, instrumented the way a real one should be.

Each call is a plain function of the organization (``org_id`` is the first argument), so
``monitor_mpesa_operation`` finds the tenant and classifies Daraja's answer. Tokens are
cached per organization and refreshed (a ``token_refresh`` operation) when they are
about to expire or when Daraja says the token is invalid.
"""

from __future__ import annotations

import base64
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import requests

from flask_mpesa_monitor import monitor_mpesa_operation

EAT = timezone(timedelta(hours=3))  # Daraja timestamps are Nairobi time


@dataclass(frozen=True)
class Credentials:
    """One organization's Daraja app: consumer key/secret, shortcode and passkey."""

    consumer_key: str
    consumer_secret: str
    shortcode: str = "174379"
    passkey: str = "demo-passkey"


class DarajaClient:
    """STK push and query against ``base_url`` (the simulator, the sandbox or production)."""

    def __init__(self, base_url: str, credentials: dict[str, Credentials], timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.credentials = credentials
        self.timeout = timeout
        self.session = requests.Session()
        self._tokens: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    @monitor_mpesa_operation("token_refresh")
    def refresh_token(self, org_id: str) -> dict[str, Any]:
        creds = self.credentials[org_id]
        response = self.session.get(
            f"{self.base_url}/oauth/v1/generate",
            params={"grant_type": "client_credentials"},
            auth=(creds.consumer_key, creds.consumer_secret),
            timeout=self.timeout,
        )
        response.raise_for_status()
        body = response.json()
        with self._lock:
            self._tokens[org_id] = (body["access_token"], time.time() + float(body["expires_in"]) - 60)
        return body

    def token(self, org_id: str) -> str:
        with self._lock:
            cached = self._tokens.get(org_id)
        if cached is None or cached[1] <= time.time():
            self.refresh_token(org_id)
            cached = self._tokens[org_id]
        return cached[0]

    def _post(self, org_id: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        for attempt in range(2):  # one retry with a fresh token when Daraja refuses ours
            response = self.session.post(
                f"{self.base_url}{path}", json=body, timeout=self.timeout,
                headers={"Authorization": f"Bearer {self.token(org_id)}"},
            )
            if response.status_code == 404 and "404.001.03" in response.text and attempt == 0:
                with self._lock:
                    self._tokens.pop(org_id, None)
                continue
            response.raise_for_status()
            return response.json()
        raise AssertionError("unreachable")

    def _password(self, creds: Credentials) -> tuple[str, str]:
        timestamp = datetime.now(EAT).strftime("%Y%m%d%H%M%S")
        raw = f"{creds.shortcode}{creds.passkey}{timestamp}".encode()
        return base64.b64encode(raw).decode(), timestamp

    @monitor_mpesa_operation("stk_push")
    def stk_push(self, org_id: str, phone: str, amount: int, callback_url: str) -> dict[str, Any]:
        creds = self.credentials[org_id]
        password, timestamp = self._password(creds)
        return self._post(org_id, "/mpesa/stkpush/v1/processrequest", {
            "BusinessShortCode": creds.shortcode,
            "Password": password,
            "Timestamp": timestamp,
            "TransactionType": "CustomerPayBillOnline",
            "Amount": amount,
            "PartyA": phone,
            "PartyB": creds.shortcode,
            "PhoneNumber": phone,
            "CallBackURL": callback_url,
            "AccountReference": org_id,
            "TransactionDesc": "Payment",
        })

    @monitor_mpesa_operation("stk_query")
    def stk_query(self, org_id: str, checkout_request_id: str) -> dict[str, Any]:
        creds = self.credentials[org_id]
        password, timestamp = self._password(creds)
        return self._post(org_id, "/mpesa/stkpushquery/v1/query", {
            "BusinessShortCode": creds.shortcode,
            "Password": password,
            "Timestamp": timestamp,
            "CheckoutRequestID": checkout_request_id,
        })

    def stk_query_answer(self, org_id: str, checkout_request_id: str) -> dict[str, Any]:
        """STK Query's answer as Daraja sent it, errors included: "the transaction is being
        processed" comes as HTTP 500 with an ``errorCode`` body, which reconciliation reads
        as "not final yet" (``monitor.record_stk_query``), not as a failure to raise."""
        try:
            return self.stk_query(org_id, checkout_request_id)
        except requests.HTTPError as exc:
            try:
                body = exc.response.json() if exc.response is not None else {}
            except ValueError:
                body = {}
            return body if isinstance(body, dict) else {}
