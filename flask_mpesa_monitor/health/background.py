"""Background threads that are safe under gunicorn: started lazily, per process.

Threads do not survive ``fork()``: a thread started in gunicorn's master (or at import
time, with ``preload_app``) would leave every worker believing it has one when it has
none, and locks held at the moment of the fork stay held forever in the child. So:

- :class:`Ticker` starts its daemon thread on first use (the first request of a worker,
  the first alert sent), never at ``init_app``;
- after a fork, the child's objects forget the parent's thread and re-create their
  locks (``os.register_at_fork``), so the first use in the worker starts a fresh one;
- at interpreter exit every live object gets a bounded last call (``atexit``), e.g. to
  flush queued alerts, and its thread is told to stop.

Objects are held weakly: an app that is garbage collected (tests create many) takes
its threads with it at their next wake-up.
"""

from __future__ import annotations

import atexit
import os
import threading
import weakref
from typing import Any

from ..redact import get_logger

log = get_logger(__name__)

_fork_aware: weakref.WeakSet[Any] = weakref.WeakSet()
_exit_aware: weakref.WeakSet[Any] = weakref.WeakSet()


def after_fork_in_child(obj: Any) -> None:
    """Call ``obj._after_fork()`` in a forked child (weakly held)."""
    _fork_aware.add(obj)


def at_exit(obj: Any) -> None:
    """Call ``obj._at_exit()`` at interpreter exit (weakly held)."""
    _exit_aware.add(obj)


def _run_fork_hooks() -> None:
    for obj in list(_fork_aware):
        try:
            obj._after_fork()
        except Exception:  # never break the child over monitoring
            log.exception("could not reset %r after fork", obj)


def _run_exit_hooks() -> None:
    for obj in list(_exit_aware):
        try:
            obj._at_exit()
        except Exception:
            log.exception("could not stop %r at exit", obj)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_run_fork_hooks)
atexit.register(_run_exit_hooks)


class Ticker:
    """A daemon thread calling ``owner.<method>()`` repeatedly; the method returns how
    many seconds to sleep before the next call (``wake()`` cuts the sleep short).

    ``ensure_started()`` is cheap enough for a request hook: one attribute test once the
    thread runs in this process.
    """

    def __init__(self, owner: Any, method: str, name: str) -> None:
        self._owner = weakref.ref(owner)
        self._method = method
        self.name = name
        self._thread: threading.Thread | None = None
        self._reset()
        after_fork_in_child(self)

    def _reset(self) -> None:
        self._thread = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()

    def _after_fork(self) -> None:
        self._reset()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def ensure_started(self) -> None:
        """Start the thread in this process unless it runs (or was stopped)."""
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is not None or self._stop.is_set():
                return
            thread = threading.Thread(
                target=_loop, args=(self._owner, self._method, self._stop, self._wake),
                name=self.name, daemon=True,
            )
            thread.start()
            self._thread = thread

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 0.0) -> None:
        """Ask the thread to stop; wait up to ``timeout`` s for it (never forever)."""
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and timeout > 0 and thread is not threading.current_thread():
            thread.join(timeout)


def _loop(owner_ref: weakref.ref[Any], method: str, stop: threading.Event, wake: threading.Event) -> None:
    while not stop.is_set():
        owner = owner_ref()
        if owner is None:
            return
        wake.clear()  # before the call: a wake-up during it is not lost
        try:
            delay = getattr(owner, method)()
        except Exception:
            log.exception("background task %s failed; retrying", method)
            delay = 1.0
        del owner
        if delay is None:
            return
        wake.wait(max(0.0, delay))

