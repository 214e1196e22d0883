"""Reading metric values in tests: the registry is per process, so tests compare deltas."""

from __future__ import annotations

from flask_mpesa_monitor import metrics


def value(name: str, **labels: str) -> float:
    """Current value of one sample (0 when the series does not exist yet)."""
    return metrics.registry.get_sample_value(name, labels) or 0.0


class Delta:
    """Remember a sample now; ``.change()`` tells how much it moved since."""

    def __init__(self, name: str, **labels: str) -> None:
        self.name, self.labels = name, labels
        self.start = value(name, **labels)

    def change(self) -> float:
        return value(self.name, **self.labels) - self.start
