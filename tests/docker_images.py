"""Stand-in images for the compose test, built once and cached in the engine's data root.

Docker Hub cannot be reached here, so every pinned image of the compose files is
replaced by a stand-in built from Debian packages (tests/docker/standins/*/Dockerfile),
tagged with the pinned name, so that the compose files run unchanged:

- a base from ``debootstrap --variant=minbase bookworm`` (the machine's own mirror),
  imported with ``docker import``;
- Prometheus and Alertmanager: Debian unstable's 3.5.3 and 0.33.1 (the pinned
  versions; scripts/current_prometheus.py fetches them); node-exporter,
  postgres-exporter and Caddy: bookworm's; ``python:3.11-slim``: bookworm's python3;
- Grafana: not available; its service runs ``mpesa-standin/grafana-mount-probe``,
  which only proves its mounts, secrets and volume (compose override ``image:``).

An image is rebuilt only when its Dockerfile, its files or its parent change (a digest
label). The relay is built from deploy/sms-relay/Dockerfile as it is, on every run.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import yaml

from examples.demo.docker_engine import CACHE, DockerEngine
from scripts import current_prometheus

ROOT = Path(__file__).resolve().parents[1]
STANDINS = Path(__file__).resolve().parent / "docker" / "standins"
BASE_TAG = "mpesa-standin/debian:bookworm"
TOOLS_TAG = "mpesa-standin/tools:bookworm"
GRAFANA_PROBE = "mpesa-standin/grafana-mount-probe:latest"
LABEL = "com.mpesa-monitor.standin-digest"

# stand-in directory -> (service whose pinned image it replaces, files from unstable)
STANDIN_FOR = {
    "prometheus": ("prometheus", ["usr/bin/prometheus", "usr/bin/promtool", "usr/share/prometheus/web"]),
    "alertmanager": ("alertmanager", ["usr/bin/prometheus-alertmanager", "usr/bin/amtool",
                                      "usr/share/prometheus/alertmanager"]),
    "node-exporter": ("node-exporter", []),
    "postgres-exporter": ("postgres-exporter", []),
    "caddy": ("tls-proxy", []),
}


def pinned_images() -> dict[str, str]:
    """service -> image of docker-compose.monitoring.yml and docker-compose.prod.yml."""
    out: dict[str, str] = {}
    for name in ("docker-compose.monitoring.yml", "docker-compose.prod.yml"):
        services: dict[str, Any] = yaml.safe_load((ROOT / name).read_text())["services"]
        for service, spec in services.items():
            if "image" in spec:
                out[service] = spec["image"]
    return out


def relay_base_image() -> str:
    text = (ROOT / "deploy/sms-relay/Dockerfile").read_text()
    return next(line.split()[1] for line in text.splitlines() if line.startswith("FROM "))


def _digest(*parts: str | bytes) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(part.encode() if isinstance(part, str) else part)
        hasher.update(b"\0")
    return hasher.hexdigest()[:16]


def _tree_digest(path: Path) -> str:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return _digest(*[f"{p.relative_to(path.parent)}:{p.stat().st_size}" for p in files])


def _current(engine: DockerEngine, tag: str) -> str | None:
    result = engine.docker("image", "inspect", "--format", '{{index .Config.Labels "' + LABEL + '"}}',
                           tag, check=False)
    return result.stdout.strip() if result.returncode == 0 else None


def machine_mirror() -> str:
    return current_prometheus.machine_mirror()


def build_base(engine: DockerEngine, log: list[str]) -> str:
    mirror = machine_mirror()
    digest = _digest("debootstrap --variant=minbase bookworm", mirror)
    if _current(engine, BASE_TAG) == digest:
        log.append(f"{BASE_TAG}: cached")
        return digest
    rootfs = CACHE / "rootfs"
    if not (rootfs / "etc/debian_version").exists():
        staging = CACHE / "rootfs.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        (CACHE / "debs").mkdir(parents=True, exist_ok=True)
        subprocess.run(["debootstrap", "--variant=minbase", f"--cache-dir={CACHE / 'debs'}",
                        "bookworm", str(staging), mirror], check=True, capture_output=True, timeout=900)
        staging.rename(rootfs)
    tarball = CACHE / "rootfs.tar"
    with tarfile.open(tarball, "w") as tar:
        for entry in sorted(rootfs.iterdir()):
            if entry.name in ("proc", "sys", "dev"):
                tar.add(entry, arcname=entry.name, recursive=False)
            else:
                tar.add(entry, arcname=entry.name)
    engine.docker("import", "--change", f"LABEL {LABEL}={digest}", "--change", 'CMD ["bash"]',
                  str(tarball), BASE_TAG)
    tarball.unlink()
    log.append(f"{BASE_TAG}: imported from debootstrap ({mirror})")
    return digest


def _build(engine: DockerEngine, name: str, tag: str, parent: str, extra: list[str],
           unstable_root: Path | None, log: list[str]) -> str:
    source = STANDINS / name
    parts = [parent, (source / "Dockerfile").read_bytes()]
    parts += [_tree_digest(p) for p in sorted(source.iterdir()) if p.name != "Dockerfile"]
    if unstable_root is not None:
        parts += [_tree_digest(unstable_root / rel) for rel in extra]
    digest = _digest(*parts)
    if _current(engine, tag) == digest:
        log.append(f"{tag}: cached (stand-in {name})")
        return digest
    context = CACHE / "contexts" / name
    shutil.rmtree(context, ignore_errors=True)
    shutil.copytree(source, context)
    for rel in extra:
        assert unstable_root is not None
        src, dst = unstable_root / rel, context / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, symlinks=True)
        else:
            shutil.copy2(src, dst)
    engine.docker("build", "--network", "host", "-q", "-t", tag, "--label", f"{LABEL}={digest}",
                  str(context), timeout=900)
    log.append(f"{tag}: built (stand-in {name})")
    return digest


def build_relay(engine: DockerEngine, repo: Path, log: list[str]) -> str:
    """deploy/sms-relay/Dockerfile as it is, from wheels built the deploy script's way."""
    wheels = repo / "build" / "sms-relay-wheels"
    shutil.rmtree(wheels, ignore_errors=True)
    wheels.mkdir(parents=True)
    subprocess.run(["python3", "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "-w",
                    str(wheels), ".", "-r", "deploy/sms-relay/requirements.txt"],
                   check=True, capture_output=True, timeout=600, cwd=repo)
    tag = pinned_images()["sms-relay"]
    engine.docker("build", "--network", "host", "-q", "-t", tag, "-f", "deploy/sms-relay/Dockerfile",
                  str(repo), timeout=900)
    log.append(f"{tag}: built from deploy/sms-relay/Dockerfile")
    return tag


def build_all(engine: DockerEngine, repo: Path) -> list[str]:
    """Every image the compose files need, in a build-phase engine; what was done."""
    log: list[str] = []
    tools = current_prometheus.fetch()
    log.append(f"unstable: promtool/prometheus {tools.promtool_version}, alertmanager {tools.amtool_version}")
    base = build_base(engine, log)
    pins = pinned_images()
    tools_digest = _build(engine, "tools", TOOLS_TAG, base, [], None, log)
    for name, (service, extra) in STANDIN_FOR.items():
        _build(engine, name, pins[service], tools_digest, extra, tools.root, log)
    _build(engine, "grafana-mount-probe", GRAFANA_PROBE, tools_digest, [], None, log)
    _build(engine, "python", relay_base_image(), base, [], None, log)
    build_relay(engine, repo, log)
    return log
