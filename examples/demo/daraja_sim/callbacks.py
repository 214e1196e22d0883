"""Posting STK callbacks when they are due, from a few threads, with bounded memory.

Why threads and a heap rather than a timer per push: a load test makes thousands of
pushes, each with a callback due seconds later; one scheduler and a fixed pool of
senders keep the cost (threads, sockets, memory) bounded, and what does not fit is
dropped and counted instead of piling up.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import requests

__all__ = ["CallbackDispatcher", "payload_checkout_id"]

log = logging.getLogger(__name__)


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
