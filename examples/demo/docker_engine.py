"""A private Docker engine for tests: its own data root, exec root, pid file and socket.

It never meets a system Docker (another socket, another data root, another containerd)
and changes nothing on the host's network:

- the *build* phase runs dockerd without bridge, iptables or forwarding
  (``--bridge=none --iptables=false --ip-forward=false --ip-masq=false``); builds use
  ``docker build --network host``;
- the *run* phase runs dockerd inside its own network and mount namespace
  (``unshare --net --mount``, only its own loopback), so that bridges, container
  addresses and published ports live there. The root mount is made rshared inside that
  mount namespace only (node-exporter mounts ``/`` with ``rslave``). Clients reach the
  namespace with :meth:`DockerEngine.nsenter` (commands) or :meth:`DockerEngine.inside`
  (this thread's sockets and the processes it starts).

What a run starts is recorded in ``state.json`` under the run directory, so that the
next run first cleans up what a killed one left: the recorded engine, the containerd
shims serving this engine's containerd socket, and mounts under this engine's roots.
Nothing else is touched.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from examples.demo.servers import wait_until

CACHE = Path(os.environ.get("MPESA_MONITOR_CACHE", "/var/cache/flask-mpesa-monitor")) / "docker"
RUN_DIR = Path("/run/flask-mpesa-monitor-docker")
CLONE_NEWNET = 0x40000000

BUILD_FLAGS = ("--bridge=none", "--iptables=false", "--ip-forward=false", "--ip-masq=false")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _kill_and_wait(pids: Sequence[int], timeout: float = 30.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
            time.sleep(0.2)
        if not any(_alive(pid) for pid in pids):
            return


class DockerEngine:
    """One dockerd of this project; ``phase`` is ``"build"`` or ``"run"``."""

    def __init__(self, cache: Path = CACHE, run_dir: Path = RUN_DIR) -> None:
        self.data_root = cache / "data-root"
        self.run_dir = run_dir
        self.exec_root = run_dir / "exec"
        self.pidfile = run_dir / "dockerd.pid"
        self.socket = run_dir / "docker.sock"
        self.state_file = run_dir / "state.json"
        self.log_path = run_dir / "dockerd.log"
        self.pid: int | None = None
        self.netns_inode: int | None = None
        self.phase: str | None = None

    # -- addresses
    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    def env(self) -> dict[str, str]:
        """The environment of a client of this engine (docker, docker-compose)."""
        return {**os.environ, "DOCKER_HOST": self.host}

    # -- leftovers of a killed run
    def _own_processes(self) -> list[int]:
        """The engine's processes: dockerd, its containerd and the shims of that containerd."""
        marks = (str(self.exec_root), str(self.socket), str(self.data_root))
        return [pid for pid in _pids() if pid != os.getpid() and any(m in _cmdline(pid) for m in marks)]

    def _own_mounts(self) -> list[str]:
        roots = (str(self.data_root), str(self.exec_root))
        out = []
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if point.startswith(roots):
                out.append(point)
        return out

    def cleanup(self) -> list[str]:
        """Stop and unmount what a previous run of this engine left; say what it was."""
        found: list[str] = []
        state = {}
        with contextlib.suppress(OSError, ValueError):
            state = json.loads(self.state_file.read_text())
        recorded = [pid for pid in state.get("pids", []) if _alive(pid)]
        pids = sorted(set(recorded) | set(self._own_processes()))
        if pids:
            found.append(f"processes {pids}")
            _kill_and_wait(pids)
        for point in sorted(self._own_mounts(), key=len, reverse=True):
            found.append(f"mount {point}")
            subprocess.run(["umount", "-l", point], capture_output=True, timeout=30)
        for stale in (self.socket, self.pidfile, self.state_file):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
        return found

    def leftovers(self) -> list[str]:
        """What of this engine still exists (empty after a clean stop)."""
        out = [f"process {pid}: {_cmdline(pid)[:80]}" for pid in self._own_processes()]
        out += [f"mount {point}" for point in self._own_mounts()]
        if self.netns_inode is not None:
            for pid in _pids():
                with contextlib.suppress(OSError):
                    if os.stat(f"/proc/{pid}/ns/net").st_ino == self.netns_inode:
                        out.append(f"namespace held by {pid}")
        return out

    # -- start / stop
    def start(self, phase: str, timeout: float = 90.0) -> None:
        if phase not in ("build", "run"):
            raise ValueError(phase)
        self.cleanup()
        for directory in (self.data_root, self.exec_root):
            directory.mkdir(parents=True, exist_ok=True)
        dockerd = ["dockerd", f"--data-root={self.data_root}", f"--exec-root={self.exec_root}",
                   f"--pidfile={self.pidfile}", f"--host={self.host}",
                   "--storage-driver=overlay2", "--log-level=warn"]
        if phase == "build":
            argv = [*dockerd, *BUILD_FLAGS]
        else:
            # unshare without --fork execs: the shell, then dockerd, keep the pid.
            script = ('set -e; mount --make-rshared /; ip link set lo up; exec "$@"')
            argv = ["unshare", "--net", "--mount", "sh", "-c", script, "sh", *dockerd]
        log = open(self.log_path, "ab")
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        self.pid, self.phase = process.pid, phase
        self._process = process
        self._record()
        try:
            wait_until(self._answers, timeout=timeout, interval=0.5,
                       description=f"dockerd ({phase}) answering (log: {self.log_path})")
        except Exception:
            self.stop()
            raise
        if phase == "run":
            self.netns_inode = os.stat(f"/proc/{self.pid}/ns/net").st_ino
        self._record()

    def _record(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        pids = [self.pid] if self.pid else []
        self.state_file.write_text(json.dumps({"pids": pids, "phase": self.phase}))

    def _answers(self) -> bool:
        if self._process.poll() is not None:
            raise RuntimeError(f"dockerd exited with {self._process.returncode}; see {self.log_path}:\n"
                               + self.log_path.read_text(errors="replace")[-3000:])
        return self.docker("info", "--format", "{{.ServerVersion}}", check=False).returncode == 0

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM dockerd (it stops its containers and containerd), then whatever is left."""
        if self.pid is not None and _alive(self.pid):
            os.kill(self.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=timeout)
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError, subprocess.TimeoutExpired):
                if self._process.poll() is None:
                    self._process.kill()
                    self._process.wait(timeout=10)
        rest = self._own_processes()
        if rest:
            _kill_and_wait(rest)
        for point in sorted(self._own_mounts(), key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True, timeout=30)
        self.pid = None
        with contextlib.suppress(FileNotFoundError):
            self.state_file.unlink()

    # -- clients
    def docker(self, *args: str, check: bool = True, timeout: float = 600.0,
               input: bytes | None = None) -> subprocess.CompletedProcess[str]:
        # Debian's CLI matches Debian's engine (a newer CLI elsewhere on PATH may not).
        cli = "/usr/bin/docker" if Path("/usr/bin/docker").exists() else "docker"
        result = subprocess.run([cli, *args], capture_output=True, timeout=timeout,
                                env=self.env(), input=input)
        out = subprocess.CompletedProcess(result.args, result.returncode,
                                          result.stdout.decode(errors="replace"),
                                          result.stderr.decode(errors="replace"))
        if check and out.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)} failed:\n{out.stdout[-3000:]}{out.stderr[-3000:]}")
        return out

    def nsenter(self, argv: Sequence[str]) -> list[str]:
        """argv run inside the run phase's network namespace."""
        if self.phase != "run" or self.pid is None:
            raise RuntimeError("no run-phase engine")
        return ["nsenter", f"--net=/proc/{self.pid}/ns/net", "--", *argv]

    @contextlib.contextmanager
    def inside(self) -> Iterator[None]:
        """This thread (its new sockets, the processes it starts) in the engine's network.

        setns(2) on a network namespace changes the calling thread only; the previous
        namespace is restored on exit.
        """
        if self.phase != "run" or self.pid is None:
            raise RuntimeError("no run-phase engine")
        libc = ctypes.CDLL(None, use_errno=True)
        own = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY)
        target = os.open(f"/proc/{self.pid}/ns/net", os.O_RDONLY)
        try:
            if libc.setns(target, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns into the engine's network namespace")
            try:
                yield
            finally:
                if libc.setns(own, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns back")
        finally:
            os.close(own)
            os.close(target)

