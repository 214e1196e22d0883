"""A local stand-in for Safaricom Daraja: OAuth, M-Pesa Express (STK push), STK query.

Why: the demo app, the local stack and the end-to-end tests need a Daraja that answers
with the real shapes and codes, posts the real STK callback after a delay, and can be
broken on purpose while traffic flows (down, slow, ``500.003.02`` spike arrest, lost
callbacks) so that alerts fire for the right reasons. Nothing here reaches the internet.

Daraja endpoints (the real paths: point the client's base URL at this server)::

    GET  /oauth/v1/generate?grant_type=client_credentials   basic auth consumer key:secret
         200 {"access_token": "...", "expires_in": "3599"}
         400 {"requestId", "errorCode": "400.008.01", "errorMessage": "Invalid Authentication passed"}
    POST /mpesa/stkpush/v1/processrequest                     Authorization: Bearer <token>
         200 {"MerchantRequestID", "CheckoutRequestID", "ResponseCode": "0",
              "ResponseDescription", "CustomerMessage"}
         then, after ``callback_delay_s``, POST {"Body": {"stkCallback": {...}}} to CallBackURL
    POST /mpesa/stkpushquery/v1/query                         Authorization: Bearer <token>
         200 {"ResponseCode": "0", "ResponseDescription", "MerchantRequestID",
              "CheckoutRequestID", "ResultCode": "1032", "ResultDesc"}
         500 {"requestId", "errorCode": "500.001.1001", "errorMessage": "The transaction is being processed"}

Errors use Daraja's shape ``{"requestId", "errorCode", "errorMessage"}``: an invalid or
expired token is HTTP 404 ``404.001.03``; a bad field is 400 ``400.002.02``; spike arrest
is HTTP 500 ``500.003.02`` (the status Daraja's own error table gives). ``down`` answers
503 with a plain-text body, as a load balancer in front of a dead service does.

Control endpoints (not Daraja)::

    GET  /sim/config            the current settings
    POST /sim/config            merge a partial JSON object (see DEFAULTS and ORG_KEYS)
    POST /sim/reset             back to the start settings; forget tokens, pushes, counts
    POST /sim/flush             make every pending push complete now (callbacks go out)
    POST /sim/tokens/expire     every issued token becomes invalid (clients must refresh)
    GET  /sim/stats             counts

Per-organization settings: ``{"orgs": {"acme": {"spike_arrest_ratio": 0.3}}}``. A push
belongs to the override named by its ``AccountReference`` (the demo app sends the
organization there) or, failing that, by its ``BusinessShortCode``; ``{"orgs": {"acme":
null}}`` removes an override.

All state is in memory in one process: run one process, not several gunicorn workers.
With ``seed`` set, result codes, fault decisions and delays repeat for the same sequence
of requests. Phone numbers appear only where the request carried them (the success
callback echoes ``PhoneNumber`` as Daraja does) and never in a log line.

Run::

    python -m examples.demo.daraja_sim --port 8081 --seed 7
    curl -s -X POST localhost:8081/sim/config -d '{"spike_arrest_ratio": 0.3}' \\
         -H 'Content-Type: application/json'
"""

from __future__ import annotations

import argparse
import base64
import copy
import heapq
import itertools
import json
import logging
import queue
import random
import re
import secrets
import signal
import string
import sys
import threading
import time
from collections import OrderedDict
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import requests
from flask import Flask, Response, jsonify, request

__all__ = ["create_app", "DarajaSimulator", "ConfigError", "DEFAULTS", "main"]

log = logging.getLogger(__name__)

#: Settings that can change at run time (``POST /sim/config``) and their defaults.
DEFAULTS: dict[str, Any] = {
    # Weights per final ResultCode of the STK callback; they need not sum to 1.
    "result_mix": {"0": 0.8, "1032": 0.1, "1": 0.05, "1037": 0.05},
    "latency_ms": [20, 80],  # added to every Daraja answer, uniform in [min, max]
    "down": False,  # every Daraja endpoint answers 503
    "slow": 0.0,  # extra seconds on every Daraja answer
    "spike_arrest_ratio": 0.0,  # share of push/query answered 500 "500.003.02"
    "callbacks_lost": 0.0,  # share of pushes whose callback is never sent
    "callback_delay_s": [1.0, 4.0],  # seconds from push to result (and callback)
    "orgs": {},  # per-organization overrides of ORG_KEYS
    "credentials": {},  # consumer key -> secret; empty: any non-empty pair is accepted
    "reject_consumer_keys": [],  # OAuth refuses these keys whatever the secret
    "passkeys": {},  # BusinessShortCode -> passkey; when set, Password is checked
    "token_ttl_s": 3599,  # lifetime of issued tokens (reported as expires_in)
    "seed": None,  # int: deterministic results, faults and delays
}

#: Settings fixed when the app is created (they size threads and memory).
STRUCTURAL: dict[str, Any] = {
    "callback_workers": 4,
    "callback_queue_size": 1000,
    "max_scheduled_callbacks": 10000,
    "max_checkouts": 20000,
    "callback_timeout_s": 5.0,
}

#: Settings an organization override may carry.
ORG_KEYS = (
    "result_mix",
    "latency_ms",
    "down",
    "slow",
    "spike_arrest_ratio",
    "callbacks_lost",
    "callback_delay_s",
)

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

_MAX_ORGS = 1000
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


class ConfigError(ValueError):
    """A simulator setting has a wrong type or value; the message names the key."""


# --------------------------------------------------------------------------- settings


def _number(key: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key} must be a number between {low} and {high}, got {value!r}.")
    if not low <= value <= high:
        raise ConfigError(f"{key} must be between {low} and {high}, got {value!r}.")
    return float(value)


def _range(key: str, value: Any, low: float, high: float) -> list[float]:
    """Accept ``n``, ``[min, max]`` or ``{"min", "max"}``; return ``[min, max]``."""
    if isinstance(value, dict):
        if set(value) - {"min", "max"} or "min" not in value:
            raise ConfigError(f"{key} as an object takes the keys min and max, got {sorted(value)}.")
        value = [value["min"], value.get("max", value["min"])]
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ConfigError(f"{key} must be [min, max], got {value!r}.")
        lo, hi = (_number(key, v, low, high) for v in value)
        if lo > hi:
            raise ConfigError(f"{key} min ({lo}) is above its max ({hi}).")
        return [lo, hi]
    n = _number(key, value, low, high)
    return [n, n]


def _result_mix(key: str, value: Any) -> dict[str, float]:
    if not isinstance(value, dict) or not value:
        raise ConfigError(f"{key} must be an object of ResultCode -> weight, got {value!r}.")
    mix = {}
    for code, weight in value.items():
        code = str(code).strip()
        if not code or len(code) > 20:
            raise ConfigError(f"{key} has an invalid ResultCode {code!r}.")
        mix[code] = _number(f"{key}[{code}]", weight, 0.0, 1e9)
    if sum(mix.values()) <= 0:
        raise ConfigError(f"{key} weights must not all be zero.")
    return mix


def _str_map(key: str, value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ConfigError(f"{key} must be an object of strings, got {type(value).__name__}.")
    return {str(k): v for k, v in value.items()}


def _validate_value(key: str, value: Any, where: str | None = None) -> Any:
    """Check and normalize one run-time setting; ``where`` names it in messages."""
    where = where or key
    try:
        return _validate_named(key, value)
    except ConfigError as exc:
        if where == key:
            raise
        raise ConfigError(f"{where}: {exc}") from None


def _validate_named(key: str, value: Any) -> Any:
    if key == "result_mix":
        return _result_mix(key, value)
    if key == "latency_ms":
        return _range(key, value, 0, 60000)
    if key == "callback_delay_s":
        return _range(key, value, 0, 3600)
    if key == "down":
        if not isinstance(value, bool):
            raise ConfigError(f"down must be true or false, got {value!r}.")
        return value
    if key == "slow":
        return _number(key, value, 0, 120)
    if key in ("spike_arrest_ratio", "callbacks_lost"):
        return _number(key, value, 0, 1)
    if key in ("credentials", "passkeys"):
        return _str_map(key, value)
    if key == "reject_consumer_keys":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError("reject_consumer_keys must be a list of strings.")
        return list(value)
    if key == "token_ttl_s":
        return int(_number(key, value, 0, 86400))
    if key == "seed":
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ConfigError(f"seed must be an integer or null, got {value!r}.")
        return value
    raise ConfigError(f"unknown setting {key!r}; known: {', '.join(sorted(DEFAULTS))}.")


def _merge_config(current: dict[str, Any], partial: Any) -> dict[str, Any]:
    """Return ``current`` with ``partial`` applied; ``current`` is left untouched."""
    if not isinstance(partial, dict):
        raise ConfigError("the settings must be a JSON object.")
    merged = copy.deepcopy(current)
    for key, value in partial.items():
        if key != "orgs":
            merged[key] = _validate_value(key, value)
            continue
        if not isinstance(value, dict):
            raise ConfigError("orgs must be an object of organization -> settings.")
        orgs = merged["orgs"]
        for org, override in value.items():
            org = str(org)
            if override is None:
                orgs.pop(org, None)
                continue
            if not isinstance(override, dict):
                raise ConfigError(f"orgs[{org!r}] must be an object or null.")
            unknown = set(override) - set(ORG_KEYS)
            if unknown:
                raise ConfigError(
                    f"orgs[{org!r}] has unknown settings {sorted(unknown)}; "
                    f"an organization may set {', '.join(ORG_KEYS)}."
                )
            entry = orgs.setdefault(org, {})
            for k, v in override.items():
                entry[k] = _validate_value(k, v, where=f"orgs[{org!r}]")
        if len(orgs) > _MAX_ORGS:
            raise ConfigError(f"at most {_MAX_ORGS} organization overrides.")
    return merged


def _split_config(config: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split the factory's config into (run-time settings, structural settings)."""
    config = dict(config or {})
    structural = dict(STRUCTURAL)
    for key in STRUCTURAL:
        if key in config:
            structural[key] = config.pop(key)
    for key in ("callback_workers", "callback_queue_size", "max_scheduled_callbacks", "max_checkouts"):
        value = structural[key]
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1_000_000:
            raise ConfigError(f"{key} must be an integer from 1 to 1000000, got {value!r}.")
    structural["callback_timeout_s"] = _number("callback_timeout_s", structural["callback_timeout_s"], 0.1, 120)
    runtime = _merge_config(_merge_config({"orgs": {}}, DEFAULTS), config)
    return runtime, structural


# --------------------------------------------------------------------- callback worker


class CallbackDispatcher:
    """Posts STK callbacks when they are due, from a few threads, with bounded memory.

    A scheduler thread keeps a heap of (due time, job); due jobs go to a bounded queue
    that ``workers`` threads drain with their own ``requests.Session``. When the heap or
    the queue is full the job is dropped and ``on_event("dropped")`` is called, so a
    flood of pushes costs counted losses, not memory.
    """

    def __init__(
        self,
        *,
        workers: int,
        queue_size: int,
        max_scheduled: int,
        timeout: float,
        on_event: Callable[[str, str], None],
    ) -> None:
        self._heap: list[tuple[float, int, str, dict[str, Any]]] = []
        self._cond = threading.Condition()
        self._queue: queue.Queue[tuple[str, dict[str, Any]] | None] = queue.Queue(queue_size)
        self._max_scheduled = max_scheduled
        self._timeout = timeout
        self._on_event = on_event
        self._seq = itertools.count()
        self._stopping = False
        self._threads = [threading.Thread(target=self._schedule_loop, name="daraja-sim-scheduler", daemon=True)]
        self._threads += [
            threading.Thread(target=self._work_loop, name=f"daraja-sim-callback-{i}", daemon=True)
            for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def schedule(self, due: float, url: str, payload: dict[str, Any]) -> bool:
        """Queue a callback for ``due`` (``time.monotonic()`` seconds); False if dropped."""
        with self._cond:
            if self._stopping or len(self._heap) >= self._max_scheduled:
                return False
            heapq.heappush(self._heap, (due, next(self._seq), url, payload))
            self._cond.notify()
        return True

    def flush(self) -> None:
        """Make every scheduled callback due now."""
        with self._cond:
            self._heap = [(0.0, seq, url, payload) for _, seq, url, payload in self._heap]
            heapq.heapify(self._heap)
            self._cond.notify()

    def clear(self) -> None:
        """Forget every callback not yet posted."""
        with self._cond:
            self._heap.clear()
        self._drain()

    def scheduled(self) -> int:
        with self._cond:
            return len(self._heap)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the threads; callbacks not yet posted are discarded."""
        with self._cond:
            if self._stopping:
                return
            self._stopping = True
            self._heap.clear()
            self._cond.notify_all()
        self._drain()
        for _ in self._threads[1:]:
            try:
                self._queue.put(None, timeout=timeout)
            except queue.Full:
                break
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _drain(self) -> None:
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return

    def _schedule_loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopping:
                    now = time.monotonic()
                    if self._heap and self._heap[0][0] <= now:
                        break
                    wait = (self._heap[0][0] - now) if self._heap else None
                    self._cond.wait(wait)
                if self._stopping:
                    return
                now = time.monotonic()
                due = []
                while self._heap and self._heap[0][0] <= now:
                    _, _, url, payload = heapq.heappop(self._heap)
                    due.append((url, payload))
            for job in due:
                try:
                    self._queue.put_nowait(job)
                except queue.Full:
                    self._on_event("dropped", "")

    def _work_loop(self) -> None:
        with requests.Session() as session:
            session.trust_env = False  # callbacks go where CallBackURL says, never via a proxy
            while True:
                job = self._queue.get()
                if job is None:
                    return
                url, payload = job
                try:
                    response = session.post(url, json=payload, timeout=self._timeout)
                    ok = 200 <= response.status_code < 300
                    response.close()
                except requests.RequestException:
                    ok = False
                except Exception:  # a worker must survive anything a callback target does
                    log.exception("callback worker failed")
                    ok = False
                self._on_event("sent" if ok else "failed", payload_checkout_id(payload))


def payload_checkout_id(payload: dict[str, Any]) -> str:
    """The CheckoutRequestID of an STK callback payload ('' if absent)."""
    try:
        return str(payload["Body"]["stkCallback"]["CheckoutRequestID"])
    except (KeyError, TypeError):
        return ""


# ------------------------------------------------------------------------- simulator


def _error(code: str, message: str, request_id: str) -> dict[str, str]:
    return {"requestId": request_id, "errorCode": code, "errorMessage": message}


class DarajaSimulator:
    """The state and rules behind the Flask views: tokens, pushes, faults, counts.

    Thread-safe: one lock guards state and the random generators; sleeps and network
    calls happen outside it.
    """

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        self._start_config, self._structural = _split_config(config)
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
            merged = _merge_config(self._config, partial)
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
                return _error("400.008.01", "Invalid Authentication passed", self._request_id()), 400
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
            return _error("400.002.02", "Bad Request - Invalid payload", self.request_id()), 400
        for field in _REQUIRED_PUSH_FIELDS:
            if body.get(field) in (None, ""):
                return _error("400.002.02", f"Bad Request - Invalid {field}", self.request_id()), 400
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
            return _error("400.002.02", f"Bad Request - Invalid {problems[0]}", self.request_id()), 400
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
        return _error("500.001.1001", "Wrong credentials", self.request_id()), 500

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
            return _error("400.002.02", "Bad Request - Invalid CheckoutRequestID", self.request_id()), 400
        if found["due"] > time.monotonic():
            self.count("stk_query", "pending", found["org"])
            return _error("500.001.1001", "The transaction is being processed", self.request_id()), 500
        self.count("stk_query", "complete", found["org"])
        return {
            "ResponseCode": "0",
            "ResponseDescription": "The service request has been accepted successsfully",
            "MerchantRequestID": found["merchant_request_id"],
            "CheckoutRequestID": str(checkout_id),
            "ResultCode": found["result_code"],  # a string here, a number in the callback
            "ResultDesc": found["result_desc"],
        }, 200


# ----------------------------------------------------------------------------- views


def _unavailable() -> Response:
    return Response("Service Unavailable", status=503, mimetype="text/plain")


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the simulator app; ``config`` takes DEFAULTS and STRUCTURAL keys.

    The simulator object is ``app.extensions["daraja_sim"]``; call its ``close()`` when
    done (tests) to stop the callback threads.

    Example::

        app = create_app({"seed": 1, "callback_delay_s": 0.1, "result_mix": {"0": 1}})
    """
    sim = DarajaSimulator(config)
    app = Flask(__name__)
    app.json.sort_keys = False  # keep Daraja's field order
    app.extensions["daraja_sim"] = sim

    @app.get("/oauth/v1/generate")
    def oauth_generate() -> Any:
        eff = sim.effective(None)
        if eff["down"]:
            sim.count("oauth", "down")
            return _unavailable()
        sim.sleep_latency(eff)
        if request.args.get("grant_type") != "client_credentials":
            sim.count("oauth", "bad_grant_type")
            return jsonify(_error("400.008.02", "Invalid grant type passed", sim.request_id())), 400
        auth = request.authorization
        key, secret = (auth.username, auth.password) if auth and auth.type == "basic" else (None, None)
        body, status = sim.issue_token(key, secret)
        return jsonify(body), status

    def _guard(section: str, org: str | None, label: str) -> tuple[Any, dict[str, Any] | None]:
        """Faults and token check shared by push and query: (error response, settings)."""
        eff = sim.effective(org)
        if eff["down"]:
            sim.count(section, "down", label)
            return _unavailable(), None
        sim.sleep_latency(eff)
        if not sim.token_valid(request.headers.get("Authorization")):
            sim.count(section, "invalid_token", label)
            return (jsonify(_error("404.001.03", "Invalid Access Token", sim.request_id())), 404), None
        if sim.spike_arrested(eff):
            sim.count(section, "spike_arrest", label)
            return (jsonify(_error("500.003.02", "Spike Arrest Violation", sim.request_id())), 500), None
        return None, eff

    @app.post("/mpesa/stkpush/v1/processrequest")
    def stk_push() -> Any:
        body = request.get_json(silent=True)
        org, label = sim.organization_of(body)
        sim.count("stk_push", "requests", label)
        if sim.effective(None)["down"]:
            sim.count("stk_push", "down", label)
            return _unavailable()
        failure, eff = _guard("stk_push", org, label)
        if failure is not None:
            return failure
        assert eff is not None
        invalid = sim.validate_push(body)
        if invalid is not None:
            sim.count("stk_push", "bad_request", label)
            return jsonify(invalid[0]), invalid[1]
        wrong = sim.check_password(body)
        if wrong is not None:
            sim.count("stk_push", "wrong_credentials", label)
            return jsonify(wrong[0]), wrong[1]
        return jsonify(sim.accept_push(body, label, eff))

    @app.post("/mpesa/stkpushquery/v1/query")
    def stk_query() -> Any:
        body = request.get_json(silent=True)
        found = sim.checkout(body.get("CheckoutRequestID")) if isinstance(body, dict) else None
        if found is not None and found["org"] in sim.config["orgs"]:
            org, label = found["org"], found["org"]
        else:
            org, label = sim.organization_of(body)
            label = found["org"] if found else label
        sim.count("stk_query", "requests", label)
        if sim.effective(None)["down"]:
            sim.count("stk_query", "down", label)
            return _unavailable()
        failure, _ = _guard("stk_query", org, label)
        if failure is not None:
            return failure
        result, status = sim.query(body)
        return jsonify(result), status

    @app.route("/sim/config", methods=["GET", "POST"])
    def sim_config() -> Any:
        if request.method == "GET":
            return jsonify(sim.config)
        partial = request.get_json(silent=True)
        try:
            return jsonify(sim.update_config(partial if partial is not None else "not JSON"))
        except ConfigError as exc:
            return jsonify({"error": str(exc)}), 400

    @app.post("/sim/reset")
    def sim_reset() -> Any:
        sim.reset()
        return jsonify(sim.config)

    @app.post("/sim/flush")
    def sim_flush() -> Any:
        return jsonify({"completed": sim.flush()})

    @app.post("/sim/tokens/expire")
    def sim_expire_tokens() -> Any:
        return jsonify({"expired": sim.expire_tokens()})

    @app.get("/sim/stats")
    def sim_stats() -> Any:
        return jsonify(sim.stats())

    return app


# ------------------------------------------------------------------------------- CLI


def _delay_arg(text: str) -> list[float]:
    parts = [float(p) for p in text.split(",")]
    if len(parts) not in (1, 2):
        raise argparse.ArgumentTypeError("use S or MIN,MAX (seconds)")
    return [parts[0], parts[-1]]


def main(argv: list[str] | None = None) -> int:
    """Serve the simulator until Ctrl-C or SIGTERM."""
    from werkzeug.serving import make_server

    parser = argparse.ArgumentParser(prog="python -m examples.demo.daraja_sim", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--callback-delay", type=_delay_arg, default=None, metavar="S|MIN,MAX")
    parser.add_argument("--config", default=None, help="a JSON file of start settings")
    parser.add_argument("--quiet", action="store_true", help="no request log lines")
    args = parser.parse_args(argv)

    config: dict[str, Any] = {}
    if args.config:
        with open(args.config, encoding="utf-8") as handle:
            config.update(json.load(handle))
    if args.seed is not None:
        config["seed"] = args.seed
    if args.callback_delay is not None:
        config["callback_delay_s"] = args.callback_delay
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.quiet:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
    try:
        app = create_app(config)
    except ConfigError as exc:
        parser.error(str(exc))
    server = make_server(args.host, args.port, app, threaded=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"daraja-sim listening on http://{args.host}:{server.server_port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        app.extensions["daraja_sim"].close()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
