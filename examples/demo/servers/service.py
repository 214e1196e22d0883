"""The base of every launcher of an HTTP server: a directory, a port, a process, readiness.

Why: Prometheus, Alertmanager and gunicorn (and any server added here later) differ only
in their command line, their environment, the files they need before a start and the
path that says they are ready. :class:`HTTPService` does the rest once: it starts a
:class:`~examples.demo.servers.process.ManagedProcess` with its log in ``base_dir``,
waits (bounded) for the ready path, stops on the same port and data, and removes the
directory it created. A new launcher subclasses it and overrides ``name``,
``ready_path`` and ``_argv()`` (and, when needed, ``_env()``, ``_cwd()``,
``_before_start()``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Self, TypeVar

from .process import HOST, ManagedProcess, PathLike, file_tail, free_port, wait_http, wait_until

__all__ = ["HTTPService", "write_config"]

T = TypeVar("T")


class HTTPService:
    """Shared plumbing of the HTTP servers we launch: dir, port, process, readiness."""

    name = "service"
    ready_path = "/-/ready"
    ready_statuses: Iterable[int] | None = (200,)

    def __init__(self, *, port: int | None, base_dir: PathLike | None, start_timeout: float) -> None:
        self.port = port or free_port()
        self._own_dir = base_dir is None
        self.base_dir = Path(base_dir or tempfile.mkdtemp(prefix=f"mpesa-{self.name}-"))
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.start_timeout = start_timeout
        self.process: ManagedProcess | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url} running={self.running}>"

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash)."""
        return f"http://{HOST}:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.running

    def _argv(self) -> list[str]:
        raise NotImplementedError

    def _env(self) -> dict[str, str | None]:
        return {}

    def _before_start(self) -> None:
        """Hook: prepare files before each start."""

    def start(self) -> Self:
        """Start and wait until ready; raises ServerError with the log when it is not."""
        if self.running:
            return self
        self._before_start()
        self.process = ManagedProcess(
            self._argv(),
            env=self._env(),
            cwd=self._cwd(),
            log_path=self.base_dir / f"{self.name}.log",
            name=self.name,
            stop_timeout=10.0,
        )
        self.process.start()
        try:
            wait_http(
                self.url + self.ready_path,
                self.start_timeout,
                statuses=self.ready_statuses,
                process=self.process,
            )
        except BaseException:
            self.process.stop()
            raise
        return self

    def _cwd(self) -> PathLike | None:
        return self.base_dir

    def stop(self) -> None:
        """Stop the server (graceful, then killed after a bound); no-op when down."""
        if self.process is not None:
            self.process.stop()

    def kill(self) -> None:
        """SIGKILL the server (a crash); no-op when down."""
        if self.process is not None:
            self.process.kill()

    def restart(self) -> Self:
        """Stop and start again on the same port with the same files."""
        self.stop()
        return self.start()

    def cleanup(self) -> None:
        """Stop, and remove the base directory when this object created it."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        return file_tail(self.base_dir / f"{self.name}.log", lines)

    def wait_for(
        self, predicate: Callable[[], T], timeout: float = 15.0, interval: float = 0.2, description: str | None = None
    ) -> T:
        """``wait_until`` whose timeout message carries this server's log tail."""
        try:
            return wait_until(predicate, timeout, interval, description=description)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n{self.log_tail()}") from None

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.cleanup()
            raise

    def __exit__(self, *exc_info: object) -> None:
        self.cleanup()


def write_config(config: str | Mapping[str, Any] | os.PathLike, target: Path) -> None:
    """Write a YAML config given as text, as a mapping, or as a file path, to ``target``."""
    if isinstance(config, Mapping):
        import yaml

        target.write_text(yaml.safe_dump(dict(config), sort_keys=False))
    elif isinstance(config, os.PathLike):
        target.write_text(Path(config).read_text())
    elif isinstance(config, str):
        if "\n" not in config and ":" not in config and Path(config).exists():
            raise ValueError(
                f"config {config!r} looks like a file path; pass pathlib.Path({config!r}) "
                "for a file, or the YAML text itself"
            )
        target.write_text(config)
    else:
        raise TypeError(f"config must be YAML text, a mapping or a path, not {type(config).__name__}")
