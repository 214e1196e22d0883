"""What a health check is and what it answers: statuses, checks, results.

A check is a plain callable with a name, a timeout and a ``critical`` flag. It may
answer in whatever shape is natural for the app (``True``, ``"degraded"``, a dict of
details, nothing at all) or raise; :func:`normalize` turns every answer into an
:class:`Outcome`, and the runner adds the timing to make a :class:`CheckResult`.

>>> normalize(False).status
'unhealthy'
>>> normalize({"status": "degraded", "lag_s": 3}).details
{'lag_s': 3}
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

HEALTHY = "healthy"
DEGRADED = "degraded"
UNHEALTHY = "unhealthy"
STATUSES = (HEALTHY, DEGRADED, UNHEALTHY)

#: ``mpesa_health_check_status`` values (the DatabaseDown alert compares with 0).
STATUS_VALUES = {HEALTHY: 1.0, DEGRADED: 0.5, UNHEALTHY: 0.0}


@dataclass(frozen=True)
class Outcome:
    """A check's verdict before timing: status, an error message, details for operators.

    ``observed`` is the one number that best describes the check (with its unit), used
    by the ``application/health+json`` rendering.
    """

    status: str = HEALTHY
    error: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    observed: tuple[float, str] | None = None


@dataclass
class HealthCheck:
    """A named check: ``func()`` bounded by ``timeout`` seconds.

    ``critical`` checks make ``/health/detailed`` answer 503 when unhealthy;
    ``component_type`` is the IETF health draft's ``componentType`` (``datastore``,
    ``system``, ``component``).
    """

    name: str
    func: Callable[[], Any]
    timeout: float
    critical: bool = False
    component_type: str = "component"


@dataclass(frozen=True)
class CheckResult:
    """One run of one check."""

    name: str
    status: str
    response_time_ms: float
    critical: bool
    timeout: float
    error: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    observed: tuple[float, str] | None = None
    component_type: str = "component"
    checked_at: float = field(default_factory=time.time)

    @property
    def value(self) -> float:
        """The gauge value: 1 healthy, 0.5 degraded, 0 unhealthy."""
        return STATUS_VALUES[self.status]


def normalize(answer: Any) -> Outcome:
    """Turn whatever a check returned into an :class:`Outcome`.

    ``None``/``True`` -> healthy; ``False`` -> unhealthy; one of the status strings;
    a mapping with an optional ``status`` (and ``error``), the rest being details.
    """
    if isinstance(answer, Outcome):
        return answer
    if answer is None or answer is True:
        return Outcome(HEALTHY)
    if answer is False:
        return Outcome(UNHEALTHY, error="check returned False")
    if isinstance(answer, str):
        if answer in STATUSES:
            return Outcome(answer)
        raise ValueError(f"a health check returned {answer!r}: use one of {', '.join(STATUSES)}.")
    if isinstance(answer, Mapping):
        details = dict(answer)
        status = details.pop("status", HEALTHY)
        if status is True:
            status = HEALTHY
        elif status is False:
            status = UNHEALTHY
        if status not in STATUSES:
            raise ValueError(f"a health check returned status {status!r}: use one of {', '.join(STATUSES)}.")
        error = details.pop("error", None)
        return Outcome(status, None if error is None else str(error), details)
    raise TypeError(
        f"a health check returned a {type(answer).__name__}: return None/True/False, a status "
        "string or a dict with 'status'."
    )


def worst(statuses: list[str]) -> str:
    """The worst of several statuses (healthy when there are none)."""
    for status in (UNHEALTHY, DEGRADED):
        if status in statuses:
            return status
    return HEALTHY
