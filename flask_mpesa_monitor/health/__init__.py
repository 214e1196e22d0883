"""Health checks: the built-in ones, the runner that bounds and caches them, the report.

See :mod:`.runner` for why checks run in threads with timeouts and a background refresh.
"""

from .checks import EncryptionCheck, MPesaAPICheck, SecurityCheck, SystemCheck
from .database import DatabaseCheck
from .report import HEALTH_JSON, HealthReport
from .result import DEGRADED, HEALTHY, UNHEALTHY, CheckResult, HealthCheck, Outcome
from .runner import HealthRunner

__all__ = [
    "DEGRADED",
    "HEALTHY",
    "HEALTH_JSON",
    "UNHEALTHY",
    "CheckResult",
    "DatabaseCheck",
    "EncryptionCheck",
    "HealthCheck",
    "HealthReport",
    "HealthRunner",
    "MPesaAPICheck",
    "Outcome",
    "SecurityCheck",
    "SystemCheck",
]
