"""A run's results and how ``/health/detailed`` renders them.

Two shapes:

- the seed's JSON: ``{"status": {"application", "database", "mpesa_api", "security"},
  "checks": {name: {"status", "response_time_ms", ...}}, "timestamp"}``;
- the IETF draft "Health Check Response Format for HTTP APIs"
  (``application/health+json``): ``status`` pass/warn/fail and ``checks`` keyed
  ``"component:measurement"``, each a list of ``{componentType, observedValue,
  observedUnit, status, time[, output]}``.

Statuses are public; details (error messages, thresholds, pool figures) are rendered
only for an authorized caller, and even then pass through :func:`redact.redact`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..redact import mask_phones, redact
from .result import DEGRADED, HEALTHY, UNHEALTHY, CheckResult

#: Components always present in the ``status`` map, even when not configured.
COMPONENTS = ("database", "mpesa_api", "security")
NOT_CONFIGURED = "not_configured"
IETF_STATUS = {HEALTHY: "pass", DEGRADED: "warn", UNHEALTHY: "fail"}
HEALTH_JSON = "application/health+json"


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class HealthReport:
    """The results of one run of every check."""

    results: Mapping[str, CheckResult]
    timestamp: float

    @property
    def critical_failure(self) -> bool:
        """True when a critical check is unhealthy (the endpoint answers 503)."""
        return any(r.critical and r.status == UNHEALTHY for r in self.results.values())

    @property
    def status(self) -> str:
        """``unhealthy`` on a critical failure; ``degraded`` when anything else is not healthy."""
        if self.critical_failure:
            return UNHEALTHY
        if any(r.status != HEALTHY for r in self.results.values()):
            return DEGRADED
        return HEALTHY

    @property
    def http_status(self) -> int:
        return 503 if self.critical_failure else 200

    def component_statuses(self) -> dict[str, str]:
        statuses = {"application": self.status}
        for name in COMPONENTS:
            result = self.results.get(name)
            statuses[name] = result.status if result is not None else NOT_CONFIGURED
        return statuses

    def to_dict(self, details: bool = False) -> dict[str, Any]:
        """The seed's body; ``details`` adds errors, thresholds and figures (redacted)."""
        checks: dict[str, Any] = {}
        for name, result in self.results.items():
            entry: dict[str, Any] = {"status": result.status, "response_time_ms": result.response_time_ms}
            if details:
                entry["critical"] = result.critical
                entry["timeout_s"] = result.timeout
                if result.error:
                    entry["error"] = mask_phones(result.error)
                if result.details:
                    entry["details"] = redact(dict(result.details))
            checks[name] = entry
        return {"status": self.component_statuses(), "checks": checks, "timestamp": iso(self.timestamp)}

    def to_health_json(self, details: bool = False, version: str = "") -> dict[str, Any]:
        """The IETF ``application/health+json`` body."""
        checks: dict[str, list[dict[str, Any]]] = {}
        for name, result in self.results.items():
            if result.observed is not None and result.observed[1] == "percent":
                key, (value, unit) = f"{name}:utilization", result.observed
            else:
                key, value, unit = f"{name}:responseTime", result.response_time_ms, "ms"
            entry: dict[str, Any] = {
                "componentType": result.component_type,
                "observedValue": value,
                "observedUnit": unit,
                "status": IETF_STATUS[result.status],
                "time": iso(result.checked_at),
            }
            if details and result.error and result.status != HEALTHY:
                entry["output"] = mask_phones(result.error)
            checks[key] = [entry]
        overall = "fail" if self.critical_failure else IETF_STATUS[self.status]
        body: dict[str, Any] = {
            "status": overall,
            "version": version.split(".", 1)[0] if version else "",
            "releaseId": version,
            "serviceId": "mpesa-mcp",
            "description": "flask-mpesa-monitor readiness",
            "checks": checks,
        }
        return body
