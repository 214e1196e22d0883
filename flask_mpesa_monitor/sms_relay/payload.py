"""Parse and check Alertmanager's webhook body (version 4) before anything is sent.

A body that is not what Alertmanager sends is refused with a reason (HTTP 400), not
half-processed: a retry would not fix it, and Alertmanager does not retry 4xx answers.

Shape (the fields the relay reads)::

    {"version": "4", "status": "firing", "truncatedAlerts": 0,
     "alerts": [{"status": "firing", "labels": {...}, "annotations": {...},
                 "fingerprint": "c2d1...", "startsAt": "..."}]}
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

#: JSON nesting allowed: a notification is 4 levels deep; Python's parser recurses once
#: per level and would hit the interpreter's recursion limit (a 500) long before a
#: hostile body ends.
MAX_DEPTH = 32


class PayloadError(ValueError):
    """The request body is not an Alertmanager webhook notification; says why.

    ``reason`` is a short fixed word for the refusal counter (``invalid_json``,
    ``too_deep``, ``not_a_notification``)."""

    def __init__(self, message: str, reason: str = "not_a_notification") -> None:
        super().__init__(message)
        self.reason = reason


def _depth_exceeds(body: str, limit: int) -> bool:
    """True when brackets nest deeper than ``limit`` (strings skipped), without parsing."""
    depth = 0
    in_string = escaped = False
    for char in body:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


@dataclass(frozen=True)
class Alert:
    """One alert of a notification, reduced to what an SMS needs."""

    status: str
    labels: dict[str, str]
    annotations: dict[str, str] = field(default_factory=dict)
    fingerprint: str = ""
    #: When the incident began (Alertmanager's ``startsAt``): with the fingerprint, the
    #: incident the de-duplication remembers. Empty when the sender leaves it out.
    starts_at: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "labels": self.labels, "annotations": self.annotations}


@dataclass(frozen=True)
class Notification:
    alerts: tuple[Alert, ...]
    truncated_alerts: int = 0


def parse_notification(body: bytes) -> Notification:
    """Decode and check a webhook body; raise :class:`PayloadError` on anything else."""
    try:
        text = body.decode("utf-8") if isinstance(body, (bytes, bytearray)) else body
    except UnicodeDecodeError:
        raise PayloadError("body is not valid JSON: not UTF-8", "invalid_json") from None
    if _depth_exceeds(text, MAX_DEPTH):
        raise PayloadError(f"body nests deeper than {MAX_DEPTH} levels", "too_deep")
    try:
        data = json.loads(text)
    except RecursionError:
        raise PayloadError(f"body nests deeper than {MAX_DEPTH} levels", "too_deep") from None
    except ValueError as exc:
        raise PayloadError(f"body is not valid JSON: {exc}", "invalid_json") from None
    if not isinstance(data, dict):
        raise PayloadError("body must be a JSON object (an Alertmanager webhook notification)")
    version = data.get("version")
    if version != "4":
        raise PayloadError(f"unsupported webhook version {version!r}; expected \"4\"")
    alerts = data.get("alerts")
    if not isinstance(alerts, list):
        raise PayloadError("'alerts' must be a list")
    truncated = data.get("truncatedAlerts", 0)
    if not isinstance(truncated, int) or isinstance(truncated, bool) or truncated < 0:
        raise PayloadError("'truncatedAlerts' must be a whole number >= 0")
    return Notification(
        alerts=tuple(_alert(item, index) for index, item in enumerate(alerts)),
        truncated_alerts=truncated,
    )


def _alert(item: Any, index: int) -> Alert:
    where = f"alerts[{index}]"
    if not isinstance(item, dict):
        raise PayloadError(f"{where} must be an object")
    status = item.get("status")
    if status not in ("firing", "resolved"):
        raise PayloadError(f"{where}.status must be 'firing' or 'resolved'")
    labels = _string_map(item.get("labels"), f"{where}.labels", required=True)
    if not labels.get("alertname"):
        raise PayloadError(f"{where}.labels has no alertname")
    annotations = _string_map(item.get("annotations"), f"{where}.annotations", required=False)
    fingerprint = item.get("fingerprint")
    if fingerprint is not None and not isinstance(fingerprint, str):
        raise PayloadError(f"{where}.fingerprint must be a string")
    starts_at = item.get("startsAt")
    if starts_at is not None and not isinstance(starts_at, str):
        raise PayloadError(f"{where}.startsAt must be a string")
    return Alert(status, labels, annotations, fingerprint or _fingerprint(labels), starts_at or "")


def _string_map(value: Any, where: str, *, required: bool) -> dict[str, str]:
    if value is None and not required:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise PayloadError(f"{where} must be an object of strings")
    return dict(value)


def _fingerprint(labels: dict[str, str]) -> str:
    """A stable stand-in when a sender leaves out Alertmanager's own fingerprint."""
    canonical = json.dumps(sorted(labels.items()), separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()[:16]
