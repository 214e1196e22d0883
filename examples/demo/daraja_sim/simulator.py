"""The state and rules of the simulated Daraja: tokens, pushes, faults, counts.

Kept apart from the Flask views (app.py) so that each decision (which result code,
whether a spike arrest hits, when the callback is due) is made in one place, under one
lock, with its own seeded random generator.
"""

from __future__ import annotations

import base64
import copy
import itertools
import random
import re
import secrets
import string
import threading
import time
from collections import OrderedDict
from datetime import datetime, timedelta, timezone
from typing import Any

from .callbacks import CallbackDispatcher
from .config import ORG_KEYS, merge_config, split_config

__all__ = ["DarajaSimulator", "RESULT_DESCRIPTIONS"]

#: ResultDesc Daraja sends with each ResultCode (unknown codes get a generic text).
RESULT_DESCRIPTIONS: dict[str, str] = {
    "0": "The service request is processed successfully.",
    "1": "The balance is insufficient for the transaction.",
    "2": "Declined due to limit rule: less than the minimum transaction amount.",
    "3": "Declined due to limit rule: greater than the maximum transaction amount.",
    "4": "Declined due to limit rule: would exceed daily transfer limit.",
    "8": "Declined due to limit rule: would exceed the maximum balance.",
    "17": "Rule limited.",
    "26": "System busy. The service request is rejected.",
    "1001": "Unable to lock subscriber, a transaction is already in process for the current subscriber",
    "1019": "Transaction has expired",
    "1025": "An error occurred while sending a push request",
    "1032": "Request cancelled by user",
    "1037": "DS timeout user cannot be reached",
    "2001": "The initiator information is invalid.",
    "2028": "The request is not permitted according to product assignment.",
    "8006": "The security credential is locked",
    "9999": "An error occurred while sending a push request",
    "SFC_IC0003": "Operator does not exist",
}

_MAX_TOKENS = 10000
_MAX_STATS_ORGS = 200
_PHONE_RE = re.compile(r"^254[17]\d{8}$")
_EAT = timezone(timedelta(hours=3))  # Daraja's TransactionDate is Nairobi time
_REQUIRED_PUSH_FIELDS = (
    "BusinessShortCode",
    "Password",
    "Timestamp",
    "TransactionType",
    "Amount",
    "PartyA",
    "PartyB",
    "PhoneNumber",
    "CallBackURL",
    "AccountReference",
)
_TRANSACTION_TYPES = ("CustomerPayBillOnline", "CustomerBuyGoodsOnline")


def daraja_error(code: str, message: str, request_id: str) -> dict[str, str]:
    """An error body in Daraja's shape."""
    return {"requestId": request_id, "errorCode": code, "errorMessage": message}


class DarajaSimulator:
    """The state and rules behind the Flask views: tokens, pushes, faults, counts.

    Thread-safe: one lock guards state and the random generators; sleeps and network
    calls happen outside it.
    """

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        self._start_config, self._structural = split_config(config)
        self._lock = threading.Lock()
        self._dispatcher = CallbackDispatcher(
            workers=self._structural["callback_workers"],
            queue_size=self._structural["callback_queue_size"],
            max_scheduled=self._structural["max_scheduled_callbacks"],
            timeout=self._structural["callback_timeout_s"],
            on_event=self._callback_event,
        )
        self._reset(copy.deepcopy(self._start_config))

    # -- settings and lifecycle

    def _reset(self, config: dict[str, Any]) -> None:
        with self._lock:
            self._config = config
            self._seed_rngs(config["seed"])
            self._tokens: OrderedDict[str, tuple[str, float]] = OrderedDict()
            self._checkouts: OrderedDict[str, dict[str, Any]] = OrderedDict()
            self._ids = itertools.count(1)
            self._stats = self._empty_stats()
        self._dispatcher.clear()

    def _seed_rngs(self, seed: int | None) -> None:
        base = seed if seed is not None else secrets.randbits(64)
        # One generator per purpose, so switching a fault on does not change which
        # result codes the next pushes get.
        self._rng_result = random.Random(f"{base}:result")
        self._rng_fault = random.Random(f"{base}:fault")
        self._rng_delay = random.Random(f"{base}:delay")
        self._rng_id = random.Random(f"{base}:id")

    @staticmethod
    def _empty_stats() -> dict[str, Any]:
        return {
            "oauth": {"issued": 0, "rejected": 0, "bad_grant_type": 0, "down": 0},
            "stk_push": {
                "requests": 0,
                "accepted": 0,
                "invalid_token": 0,
                "bad_request": 0,
                "wrong_credentials": 0,
                "spike_arrest": 0,
                "down": 0,
            },
            "stk_query": {
                "requests": 0,
                "pending": 0,
                "complete": 0,
                "unknown": 0,
                "invalid_token": 0,
                "spike_arrest": 0,
                "down": 0,
            },
            "results": {},
            "callbacks": {"scheduled": 0, "sent": 0, "failed": 0, "lost": 0, "dropped": 0},
            "organizations": {},
        }

    @property
    def config(self) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self._config)

    def update_config(self, partial: Any) -> dict[str, Any]:
        """Merge ``partial`` into the settings (raises ConfigError); return the result."""
        with self._lock:
            merged = merge_config(self._config, partial)
            if "seed" in partial:
                self._seed_rngs(merged["seed"])
            self._config = merged
            return copy.deepcopy(merged)

    def reset(self) -> None:
        """Back to the settings the app was created with; forget all state and counts."""
        self._reset(copy.deepcopy(self._start_config))

    def flush(self) -> int:
        """Complete every pending push now; return how many were pending."""
        now = time.monotonic()
        with self._lock:
            pending = [c for c in self._checkouts.values() if c["due"] > now]
            for checkout in pending:
                checkout["due"] = now
        self._dispatcher.flush()
        return len(pending)

    def expire_tokens(self) -> int:
        with self._lock:
            count = len(self._tokens)
            self._tokens.clear()
            return count

    def close(self) -> None:
        """Stop the callback threads (pending callbacks are discarded)."""
        self._dispatcher.close()

    def stats(self) -> dict[str, Any]:
        now = time.monotonic()
        with self._lock:
            stats = copy.deepcopy(self._stats)
            stats["pending"] = sum(1 for c in self._checkouts.values() if c["due"] > now)
            stats["tokens"] = sum(1 for _, exp in self._tokens.values() if exp > now)
        stats["callbacks"]["queued"] = self._dispatcher.scheduled()
        return stats

    # -- helpers

    def effective(self, org: str | None) -> dict[str, Any]:
        """The settings for one organization: global values with its override applied."""
        with self._lock:
            eff = {k: copy.deepcopy(self._config[k]) for k in ORG_KEYS}
            if org is not None and org in self._config["orgs"]:
                eff.update(copy.deepcopy(self._config["orgs"][org]))
        return eff

    def organization_of(self, body: Any) -> tuple[str | None, str]:
        """(override key or None, stats label) for a push or query body."""
        if not isinstance(body, dict):
            return None, "unknown"
        reference = body.get("AccountReference")
        shortcode = body.get("BusinessShortCode")
        with self._lock:
            orgs = self._config["orgs"]
            for candidate in (reference, str(reference).lower() if reference else None, shortcode):
                if candidate is not None and str(candidate) in orgs:
                    return str(candidate), str(candidate)[:32]
        label = reference if isinstance(reference, str) and reference.strip() else shortcode
        return None, (str(label)[:32] if label not in (None, "") else "unknown")

    def sleep_latency(self, eff: dict[str, Any]) -> None:
        lo, hi = eff["latency_ms"]
        with self._lock:
            if eff["latency_tail_ratio"] and self._rng_delay.random() < eff["latency_tail_ratio"]:
                lo, hi = eff["latency_tail_ms"]
            delay = self._rng_delay.uniform(lo, hi) / 1000.0
        time.sleep(delay + eff["slow"])

    def _count(self, section: str, key: str, org_label: str | None = None) -> None:
        """Add one to ``stats[section][key]`` (and the organization's); hold the lock."""
        self._stats[section][key] = self._stats[section].get(key, 0) + 1
        if org_label is not None:
            orgs = self._stats["organizations"]
            if org_label not in orgs and len(orgs) >= _MAX_STATS_ORGS:
                org_label = "other"
            entry = orgs.setdefault(org_label, {"results": {}})
            name = f"{section}.{key}"
            entry[name] = entry.get(name, 0) + 1

    def count(self, section: str, key: str, org_label: str | None = None) -> None:
        with self._lock:
            self._count(section, key, org_label)

    def _request_id(self) -> str:
        rng = self._rng_id
        return f"{rng.randrange(16**4):04x}-{rng.randrange(16**4):04x}-{rng.randrange(16**6):06x}{next(self._ids)}"

    def request_id(self) -> str:
        with self._lock:
            return self._request_id()

    def _callback_event(self, event: str, _checkout_id: str) -> None:
        with self._lock:
            self._stats["callbacks"][event] += 1

    # -- OAuth

    def issue_token(self, key: str | None, secret: str | None) -> tuple[dict[str, Any], int]:
        with self._lock:
            config = self._config
            expected = config["credentials"].get(key or "") if config["credentials"] else None
            ok = bool(key) and bool(secret) and key not in config["reject_consumer_keys"]
            if config["credentials"]:
                ok = ok and expected is not None and secrets.compare_digest(expected, secret or "")
            if not ok:
                self._count("oauth", "rejected")
                return daraja_error("400.008.01", "Invalid Authentication passed", self._request_id()), 400
            token = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(28))
            ttl = config["token_ttl_s"]
            self._tokens[token] = (key or "", time.monotonic() + ttl)
            while len(self._tokens) > _MAX_TOKENS:
                self._tokens.popitem(last=False)
            self._count("oauth", "issued")
        return {"access_token": token, "expires_in": str(ttl)}, 200

    def token_valid(self, authorization: str | None) -> bool:
        if not authorization or not authorization.startswith("Bearer "):
            return False
        token = authorization[len("Bearer ") :].strip()
        with self._lock:
            entry = self._tokens.get(token)
            return entry is not None and entry[1] > time.monotonic()

    # -- faults

    def spike_arrested(self, eff: dict[str, Any]) -> bool:
        ratio = eff["spike_arrest_ratio"]
        if ratio <= 0:
            return False
        with self._lock:
            return self._rng_fault.random() < ratio

    # -- STK push

    def validate_push(self, body: Any) -> tuple[dict[str, Any], int] | None:
        """A Daraja error for a malformed push, or None when it is acceptable."""
        if not isinstance(body, dict):
            return daraja_error("400.002.02", "Bad Request - Invalid payload", self.request_id()), 400
        for field in _REQUIRED_PUSH_FIELDS:
            if body.get(field) in (None, ""):
                return daraja_error("400.002.02", f"Bad Request - Invalid {field}", self.request_id()), 400
        problems = []
        if not re.fullmatch(r"\d{5,7}", str(body["BusinessShortCode"])):
            problems.append("BusinessShortCode")
        if not re.fullmatch(r"\d{14}", str(body["Timestamp"])):
            problems.append("Timestamp")
        if body["TransactionType"] not in _TRANSACTION_TYPES:
            problems.append("TransactionType")
        try:
            amount = float(body["Amount"])
            if not 1 <= amount <= 250000:
                problems.append("Amount")
        except (TypeError, ValueError):
            problems.append("Amount")
        for field in ("PartyA", "PhoneNumber"):
            if not _PHONE_RE.match(str(body[field])):
                problems.append(field)
        if not re.fullmatch(r"\d{5,7}", str(body["PartyB"])):
            problems.append("PartyB")
        url = str(body["CallBackURL"])
        if not re.match(r"^https?://[^\s/]+", url):
            problems.append("CallBackURL")
        if len(str(body["AccountReference"])) > 12:
            problems.append("AccountReference")
        if len(str(body.get("TransactionDesc") or "")) > 13:
            problems.append("TransactionDesc")
        if problems:
            return daraja_error("400.002.02", f"Bad Request - Invalid {problems[0]}", self.request_id()), 400
        return None

    def check_password(self, body: dict[str, Any]) -> tuple[dict[str, Any], int] | None:
        """500.001.1001 "Wrong credentials" when a passkey is configured and does not match."""
        shortcode = str(body["BusinessShortCode"])
        with self._lock:
            passkey = self._config["passkeys"].get(shortcode)
        if passkey is None:
            return None
        expected = base64.b64encode(f"{shortcode}{passkey}{body['Timestamp']}".encode()).decode()
        if secrets.compare_digest(expected, str(body["Password"])):
            return None
        return daraja_error("500.001.1001", "Wrong credentials", self.request_id()), 500

    def _pick(self, mix: dict[str, float]) -> str:
        codes = list(mix)
        return self._rng_result.choices(codes, weights=[mix[c] for c in codes])[0]

    def _new_ids(self) -> tuple[str, str]:
        rng = self._rng_id
        n = next(self._ids)
        merchant = f"{rng.randrange(10000, 99999)}-{rng.randrange(10**7, 10**8)}-{n}"
        stamp = datetime.now(_EAT).strftime("%d%m%Y%H%M%S%f")[:17]
        checkout = f"ws_CO_{stamp}{rng.randrange(10**5, 10**6)}{n}"
        return merchant, checkout

    def _receipt(self) -> str:
        rng = self._rng_id
        alphabet = string.ascii_uppercase + string.digits
        return rng.choice(string.ascii_uppercase) + "".join(rng.choice(alphabet) for _ in range(9))

    def accept_push(self, body: dict[str, Any], org_label: str, eff: dict[str, Any]) -> dict[str, Any]:
        """Record an accepted push, schedule its callback, return the acknowledgement."""
        with self._lock:
            code = self._pick(eff["result_mix"])
            lost = eff["callbacks_lost"] > 0 and self._rng_fault.random() < eff["callbacks_lost"]
            lo, hi = eff["callback_delay_s"]
            delay = self._rng_delay.uniform(lo, hi)
            merchant_id, checkout_id = self._new_ids()
            due_wall = datetime.now(_EAT) + timedelta(seconds=delay)
            callback: dict[str, Any] = {
                "MerchantRequestID": merchant_id,
                "CheckoutRequestID": checkout_id,
                "ResultCode": int(code) if code.lstrip("-").isdigit() else code,
                "ResultDesc": RESULT_DESCRIPTIONS.get(code, f"Simulated result {code}"),
            }
            if code == "0":
                phone = str(body["PhoneNumber"])
                callback["CallbackMetadata"] = {
                    "Item": [
                        {"Name": "Amount", "Value": float(body["Amount"])},
                        {"Name": "MpesaReceiptNumber", "Value": self._receipt()},
                        {"Name": "TransactionDate", "Value": int(due_wall.strftime("%Y%m%d%H%M%S"))},
                        {"Name": "PhoneNumber", "Value": int(phone) if phone.isdigit() else phone},
                    ]
                }
            self._checkouts[checkout_id] = {
                "merchant_request_id": merchant_id,
                "result_code": code,
                "result_desc": callback["ResultDesc"],
                "due": time.monotonic() + delay,
                "org": org_label,
            }
            while len(self._checkouts) > self._structural["max_checkouts"]:
                self._checkouts.popitem(last=False)
            self._count("stk_push", "accepted", org_label)
            self._stats["results"][code] = self._stats["results"].get(code, 0) + 1
            org_results = self._stats["organizations"].get(org_label, self._stats["organizations"].get("other"))
            if org_results is not None:
                org_results["results"][code] = org_results["results"].get(code, 0) + 1
            if lost:
                self._stats["callbacks"]["lost"] += 1
            due = self._checkouts[checkout_id]["due"]
        if not lost:
            if self._dispatcher.schedule(due, str(body["CallBackURL"]), {"Body": {"stkCallback": callback}}):
                self.count("callbacks", "scheduled")
            else:
                self.count("callbacks", "dropped")
        return {
            "MerchantRequestID": merchant_id,
            "CheckoutRequestID": checkout_id,
            "ResponseCode": "0",
            "ResponseDescription": "Success. Request accepted for processing",
            "CustomerMessage": "Success. Request accepted for processing",
        }

    # -- STK query

    def checkout(self, checkout_id: Any) -> dict[str, Any] | None:
        with self._lock:
            found = self._checkouts.get(str(checkout_id)) if checkout_id else None
            return dict(found) if found else None

    def query(self, body: Any) -> tuple[dict[str, Any], int]:
        checkout_id = body.get("CheckoutRequestID") if isinstance(body, dict) else None
        found = self.checkout(checkout_id)
        if found is None:
            self.count("stk_query", "unknown")
            return daraja_error("400.002.02", "Bad Request - Invalid CheckoutRequestID", self.request_id()), 400
        if found["due"] > time.monotonic():
            self.count("stk_query", "pending", found["org"])
            return daraja_error("500.001.1001", "The transaction is being processed", self.request_id()), 500
        self.count("stk_query", "complete", found["org"])
        return {
            "ResponseCode": "0",
            "ResponseDescription": "The service request has been accepted successsfully",
            "MerchantRequestID": found["merchant_request_id"],
            "CheckoutRequestID": str(checkout_id),
            "ResultCode": found["result_code"],  # a string here, a number in the callback
            "ResultDesc": found["result_desc"],
        }, 200
