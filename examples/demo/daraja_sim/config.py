"""The simulator's settings: defaults, validation, and merging a partial update.

Why a module of its own: every setting arrives as JSON (``POST /sim/config``, the
``--config`` file, the factory's dict) and a wrong one must be refused with a message
that names it, before it changes anything. Run-time settings (``DEFAULTS``) may change
while traffic flows; structural ones (``STRUCTURAL``) size threads and memory and are
fixed when the app is created.
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["DEFAULTS", "STRUCTURAL", "ORG_KEYS", "ConfigError"]

#: Settings that can change at run time (``POST /sim/config``) and their defaults.
DEFAULTS: dict[str, Any] = {
    # Weights per final ResultCode of the STK callback; they need not sum to 1.
    "result_mix": {"0": 0.8, "1032": 0.1, "1": 0.05, "1037": 0.05},
    "latency_ms": [20, 80],  # added to every Daraja answer, uniform in [min, max]
    # The slow tail of a real provider: this share of answers waits latency_tail_ms instead.
    "latency_tail_ratio": 0.0,
    "latency_tail_ms": [500, 3000],
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
    "latency_tail_ratio",
    "latency_tail_ms",
    "down",
    "slow",
    "spike_arrest_ratio",
    "callbacks_lost",
    "callback_delay_s",
)

_MAX_ORGS = 1000


class ConfigError(ValueError):
    """A simulator setting has a wrong type or value; the message names the key."""




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
    if key in ("latency_ms", "latency_tail_ms"):
        return _range(key, value, 0, 60000)
    if key == "callback_delay_s":
        return _range(key, value, 0, 3600)
    if key == "down":
        if not isinstance(value, bool):
            raise ConfigError(f"down must be true or false, got {value!r}.")
        return value
    if key == "slow":
        return _number(key, value, 0, 120)
    if key in ("spike_arrest_ratio", "callbacks_lost", "latency_tail_ratio"):
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


def merge_config(current: dict[str, Any], partial: Any) -> dict[str, Any]:
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


def split_config(config: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
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
    runtime = merge_config(merge_config({"orgs": {}}, DEFAULTS), config)
    return runtime, structural
