"""Dead workers' counter and histogram files, merged into one archive per kind.

Under gunicorn each worker writes its own ``counter_<pid>.db`` and ``histogram_<pid>.db``
in ``PROMETHEUS_MULTIPROC_DIR``. They must outlive the worker (totals never go backwards),
so with ``max_requests`` recycling or crashes the directory grows without end and every
scrape reads every dead worker's files. :func:`archive_dead_worker` runs in the master's
``child_exit`` (before the replacement is forked, so a reused pid starts a fresh file) and
folds the dead worker's two files into ``counter_archive-<generation>.db`` and
``histogram_archive-<generation>.db`` with prometheus_client's own
``MultiProcessCollector.merge(files, accumulate=False)``, written back with its own
``MmapedDict``: the archives are ordinary multiprocess files that every reader (ours and
``MultiProcessCollector``) adds up like any other. Gauges are not archived: every gauge of
the catalogue is ``live*`` and goes with its worker (``mark_process_dead``).

Safety:

- An exclusive ``fcntl`` lock on ``mpesa_monitor_archive.lock`` is held while files move
  (renames and deletions only: the merge itself is written before, under names no reader
  lists); scrapes take it shared (:func:`shared_lock`), so a scrape sees the directory
  before a merge or after it, never in between.
- Crash safety by a journal, written once the new archives are complete on disk (under
  names that are not ``*.db``) and before anything is removed. Without a journal a crash
  leaves the old files, which are still the truth: the half-written new archives are
  deleted. With one, the merge is finished from it (rename the new archives, delete the
  files they replace). Either way nothing is lost or counted twice. Whoever takes the
  lock next (a merge, a scrape, ``on_starting``) recovers first.
- The generation is in the archive's name, so a renderer's per-file cache never confuses
  a rewritten archive with the one it read before.

Shared SQLite tables beside the metric files (``mpesa_monitor_*.sqlite``) are never read
or touched here: only ``counter_*``/``histogram_*`` ``.db`` files move.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import os
import signal
from collections.abc import Iterator

LOCK_NAME = "mpesa_monitor_archive.lock"
JOURNAL_NAME = "mpesa_monitor_archive.journal"
KINDS = ("counter", "histogram")
_ARCHIVE = "{kind}_archive-{generation}.db"
_PARTIAL = ".partial"  # suffix of an archive being written: not *.db, so no reader sees it
#: Test hook: the step after which the merger kills itself (``written``, ``journaled``,
#: ``renamed``), to show that a merge interrupted anywhere loses and doubles nothing.
CRASH_ENV = "MPESA_MONITOR_ARCHIVE_CRASH_AT"


def _lock_fd(directory: str) -> int:
    return os.open(os.path.join(directory, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o644)


@contextlib.contextmanager
def _locked(directory: str, mode: int) -> Iterator[None]:
    fd = _lock_fd(directory)
    try:
        fcntl.flock(fd, mode)
        yield
    finally:
        os.close(fd)  # closing releases the lock


@contextlib.contextmanager
def shared_lock(directory: str) -> Iterator[None]:
    """Held by a scrape while it lists and reads the files; finishes a crashed merge first.

    A directory where the lock file cannot be created (read-only to this process) has no
    merger either: the scrape then reads without the lock rather than failing.
    """
    if os.path.exists(os.path.join(directory, JOURNAL_NAME)):
        with _locked(directory, fcntl.LOCK_EX):
            recover(directory)
    try:
        fd: int | None = _lock_fd(directory)
    except OSError:
        fd = None
    try:
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        if fd is not None:
            os.close(fd)


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _crash_point(step: str) -> None:
    if os.environ.get(CRASH_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)


def _generation(path: str) -> int:
    return int(os.path.basename(path).split("-", 1)[1].split(".", 1)[0])


def _current_archive(directory: str, kind: str) -> str | None:
    found = glob.glob(os.path.join(directory, f"{kind}_archive-*.db"))
    return max(found, key=_generation) if found else None


def recover(directory: str) -> None:
    """Bring the directory to a consistent state after a merge that died (lock held)."""
    journal = os.path.join(directory, JOURNAL_NAME)
    try:
        with open(journal, encoding="utf-8") as handle:
            plan = json.load(handle)
    except FileNotFoundError:
        plan = None
    except ValueError:  # a journal cut short before its rename cannot exist; be safe anyway
        plan = None
        os.unlink(journal)
    if plan is None:  # the merge never committed: its partial archives are garbage
        for partial in glob.glob(os.path.join(directory, f"*{_PARTIAL}")):
            os.unlink(partial)
        return
    for final in plan["archives"]:
        partial = os.path.join(directory, final + _PARTIAL)
        if os.path.exists(partial):
            os.replace(partial, os.path.join(directory, final))
    for name in plan["replaced"]:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(directory, name))
    _fsync_dir(directory)
    os.unlink(journal)
    _fsync_dir(directory)


def _write_archive(path: str, files: list[str]) -> None:
    from prometheus_client.mmap_dict import MmapedDict
    from prometheus_client.multiprocess import MultiProcessCollector

    store = MmapedDict(path)
    try:
        for metric in MultiProcessCollector.merge(files, accumulate=False):
            for sample in metric.samples:
                key = json.dumps([metric.name, sample.name, sample.labels, metric.documentation], sort_keys=True)
                store.write_value(key, sample.value, 0.0)
    finally:
        store.close()
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def archive_dead_worker(directory: str, pid: int) -> list[str]:
    """Fold worker ``pid``'s counter and histogram files into the archives; the files folded.

    The new archives are written outside the lock (their inputs cannot change: the worker
    is dead, and archives change only here, in the one gunicorn master of the directory),
    so a scrape waits only for the renames, not for the merge itself.
    """
    with _locked(directory, fcntl.LOCK_EX):
        recover(directory)
        currents = {kind: _current_archive(directory, kind) for kind in KINDS}
    plan: dict[str, list[str]] = {"archives": [], "replaced": []}

    def give_up() -> list[str]:
        # Another merger changed the archives meanwhile (two masters on one directory):
        # ours are stale; the dead worker's files stay, still counted, for the next merge.
        for final in plan["archives"]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(directory, final + _PARTIAL))
        return []

    for kind in KINDS:
        source = os.path.join(directory, f"{kind}_{pid}.db")
        if not os.path.exists(source):
            continue
        current = currents[kind]
        inputs = [current, source] if current else [source]
        generation = _generation(current) + 1 if current else 1
        final = _ARCHIVE.format(kind=kind, generation=generation)
        partial = os.path.join(directory, final + _PARTIAL)
        plan["archives"].append(final)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
        try:
            _write_archive(partial, inputs)
        except FileNotFoundError:  # an input replaced by another merger
            return give_up()
        plan["replaced"] += [os.path.basename(path) for path in inputs]
    if not plan["archives"]:
        return []
    _crash_point("written")
    with _locked(directory, fcntl.LOCK_EX):
        if {kind: _current_archive(directory, kind) for kind in KINDS} != currents:
            return give_up()
        journal = os.path.join(directory, JOURNAL_NAME)
        with open(journal + _PARTIAL, "w", encoding="utf-8") as handle:
            json.dump(plan, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(journal + _PARTIAL, journal)  # the commit point
        _fsync_dir(directory)
        _crash_point("journaled")
        for final in plan["archives"]:
            os.replace(os.path.join(directory, final + _PARTIAL), os.path.join(directory, final))
        _crash_point("renamed")
        recover(directory)  # deletes the replaced files, then the journal
    return [name for name in plan["replaced"] if "_archive-" not in name]
