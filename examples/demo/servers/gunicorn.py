"""gunicorn serving a WSGI app on 127.0.0.1, with prometheus_client's multiprocess mode.

psutil is imported by :meth:`GunicornServer.worker_pids` (and its `_alive` check) only.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .process import HOST, PathLike, http_request
from .service import HTTPService

if TYPE_CHECKING:
    import psutil

__all__ = ["GunicornServer", "GUNICORN_CONF"]

#: The gunicorn config that wipes the multiprocess directory and marks dead workers.
GUNICORN_CONF = Path(__file__).resolve().parent.parent / "gunicorn_conf.py"


class GunicornServer(HTTPService):
    """``python -m gunicorn`` serving ``app_spec`` (``"package.module:app"``) on 127.0.0.1.

    Uses examples/demo/gunicorn_conf.py (``GUNICORN_CONF``) unless ``config_path`` says otherwise:
    it marks dead workers for prometheus_client's multiprocess mode. With
    ``multiproc_dir`` (or PROMETHEUS_MULTIPROC_DIR in ``env``) the directory is emptied
    before every start and exported to the master and workers. ``cwd`` defaults to the
    current directory, so app modules import as they do for pytest.
    Readiness: any HTTP answer on ``ready_path``.
    """

    name = "gunicorn"
    ready_statuses = None

    def __init__(
        self,
        app_spec: str,
        *,
        workers: int = 2,
        env: Mapping[str, str | None] | None = None,
        port: int | None = None,
        config_path: PathLike | None = GUNICORN_CONF,
        multiproc_dir: PathLike | None = None,
        cwd: PathLike | None = None,
        extra_args: Sequence[str] = (),
        ready_path: str = "/",
        base_dir: PathLike | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        super().__init__(port=port, base_dir=base_dir, start_timeout=start_timeout)
        self.app_spec = app_spec
        self.workers = workers
        self.env = dict(env or {})
        self.config_path = None if config_path is None else Path(config_path)
        if multiproc_dir is None and self.env.get("PROMETHEUS_MULTIPROC_DIR"):
            multiproc_dir = self.env["PROMETHEUS_MULTIPROC_DIR"]
        self.multiproc_dir = None if multiproc_dir is None else Path(multiproc_dir)
        self.app_cwd = Path(cwd) if cwd is not None else Path.cwd()
        self.extra_args = list(extra_args)
        self.ready_path = ready_path

    def _before_start(self) -> None:
        if self.multiproc_dir is not None:
            shutil.rmtree(self.multiproc_dir, ignore_errors=True)
            self.multiproc_dir.mkdir(parents=True)

    def _cwd(self) -> PathLike | None:
        return self.app_cwd

    def _env(self) -> dict[str, str | None]:
        env = dict(self.env)
        if self.multiproc_dir is not None:
            env["PROMETHEUS_MULTIPROC_DIR"] = str(self.multiproc_dir)
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def _argv(self) -> list[str]:
        argv = [sys.executable, "-m", "gunicorn"]
        if self.config_path is not None:
            argv += ["--config", str(self.config_path)]
        argv += [
            "--bind", f"{HOST}:{self.port}",
            "--workers", str(self.workers),
            "--graceful-timeout", "5",
            "--pid", str(self.base_dir / "gunicorn.pid"),
            *self.extra_args,
            self.app_spec,
        ]  # fmt: skip
        return argv

    def worker_pids(self) -> list[int]:
        """The pids of the live worker processes (children of the master)."""
        import psutil

        if not self.running or self.process is None or self.process.pid is None:
            return []
        try:
            children = psutil.Process(self.process.pid).children()
        except psutil.NoSuchProcess:
            return []
        return sorted(child.pid for child in children if _alive(child))

    def get(self, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
        """GET a path; (status, body), whatever the status."""
        status, _, body = http_request("GET", self.url + path, timeout=timeout)
        return status, body


def _alive(process: psutil.Process) -> bool:
    """True while a child runs: a worker reaped between listing and asking is gone, not an error."""
    import psutil

    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
