"""App-side alert levels (and, with issue 3, the sender to Alertmanager)."""

from __future__ import annotations

import enum


class AlertLevel(str, enum.Enum):
    """Severity of an app-side alert; the value is Alertmanager's ``severity`` label."""

    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    INFO = "info"
