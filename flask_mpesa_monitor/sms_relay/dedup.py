"""Remember which (alert, status, recipient) was texted recently.

Alertmanager retries a webhook that failed, and re-sends a group every group_interval
when it changes. The relay records a delivery only once the provider accepted it, so a
retry after a partial failure reaches only the numbers that did not get the text, and a
repeat inside the window costs nothing.

The store is in memory and per process: run the relay as one process (gunicorn with
one worker and threads, as the Dockerfile does). A restart forgets the window, which can
cause one duplicate text, never a lost one. Size is bounded: expired entries are dropped
on every call, and past ``max_entries`` the oldest go first.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Callable, Hashable


class DedupStore:
    """Thread-safe ``key -> time sent`` map with a time window."""

    def __init__(
        self,
        window_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = 10_000,
    ) -> None:
        self.window = window_seconds
        self._clock = clock
        self._max = max_entries
        self._sent: OrderedDict[Hashable, float] = OrderedDict()
        self._lock = threading.Lock()

    def seen(self, key: Hashable) -> bool:
        """True when ``key`` was recorded less than ``window`` seconds ago."""
        if self.window <= 0:
            return False
        with self._lock:
            self._expire(self._clock())
            return key in self._sent

    def record(self, key: Hashable) -> None:
        """Note that ``key`` was delivered now."""
        if self.window <= 0:
            return
        with self._lock:
            now = self._clock()
            self._expire(now)
            self._sent.pop(key, None)
            self._sent[key] = now
            while len(self._sent) > self._max:
                self._sent.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._sent)

    def _expire(self, now: float) -> None:
        # Entries are kept in insertion (= time) order, so expired ones are at the front.
        while self._sent:
            key, sent_at = next(iter(self._sent.items()))
            if now - sent_at < self.window:
                break
            del self._sent[key]
