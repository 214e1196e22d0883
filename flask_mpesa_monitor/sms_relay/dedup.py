"""Remember which incident was texted to which number: one text per incident.

An incident is one alert (Alertmanager's fingerprint: its label set) from the time it
started (``startsAt``): a retry of a webhook that failed, a group re-sent every
group_interval because another alert of it changed, or the second Alertmanager of a pair
carry the same fingerprint and ``startsAt`` and are not texted again; the same alert
firing again later is a new incident (a new ``startsAt``) and is always texted, however
soon after the first. The window only bounds how long an incident is remembered (a
reminder after repeat_interval past the window is texted again).

The relay records a delivery only once the provider accepted it, so a retry after a
partial failure reaches only the numbers that did not get the text.

The store is in memory and per process: run the relay as one process (gunicorn with
one worker and threads, as the Dockerfile does). A restart forgets the window, which can
cause one duplicate text, never a lost one. Size is bounded: expired entries are dropped
on every call, and past ``max_entries`` the oldest go first.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable


def incident_key(fingerprint: str, starts_at: str, status: str, recipient: str) -> Hashable:
    """The key of one text: this incident (fingerprint, ``startsAt``), in this status,
    to this number. Without ``startsAt`` (a sender that omits it) the fingerprint alone
    stands for the incident, within the window."""
    return (fingerprint, starts_at.strip(), status, recipient)


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
