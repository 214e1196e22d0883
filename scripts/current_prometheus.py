"""Current Prometheus and Alertmanager tools, for checking the stack against the pinned images.

Debian bookworm ships Prometheus 2.42 and Alertmanager 0.25; the compose file pins the
Prometheus 3.5 LTS line and a current Alertmanager. Debian's unstable suite carries
those (promtool 3.5.x, amtool 0.33.x) and their binaries run on bookworm, so they are
fetched with ``apt-get download`` through a private apt directory (the unstable suite
on the machine's own mirror) and unpacked with ``dpkg -x`` into a cache folder.
Nothing is installed: installing would replace bookworm's ``prometheus``, which the
local stack and the other tests use.

unstable keeps only its newest version, so every run says which version it used::

    python3 -m scripts.current_prometheus          # fetch if needed, print the paths
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

# promtool and amtool for the checks; the servers for the compose test's stand-in images.
PACKAGES = ("promtool", "prometheus", "prometheus-alertmanager")
CACHE = Path(os.environ.get("MPESA_MONITOR_CACHE", "/var/cache/flask-mpesa-monitor")) / "unstable-tools"
SUITE = "unstable"


@dataclass(frozen=True)
class Tools:
    """Paths of the unpacked binaries and the versions they report."""

    promtool: Path
    amtool: Path
    root: Path
    promtool_version: str
    amtool_version: str


def machine_mirror(sources: Path = Path("/etc/apt")) -> str:
    """The Debian mirror this machine already uses (never a hard-coded one)."""
    for path in sorted(sources.glob("sources.list.d/*.sources")) + [sources / "sources.list"]:
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for match in re.finditer(r"(?m)^URIs:\s*(\S+)", text):
            if "security" not in match.group(1):
                return match.group(1).rstrip("/")
        for match in re.finditer(r"(?m)^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+\S+", text):
            if "security" not in match.group(1):
                return match.group(1).rstrip("/")
    raise RuntimeError("no Debian mirror found in /etc/apt/sources.list*")


def _apt_options(apt_dir: Path) -> list[str]:
    return ["-o", f"Dir::Etc::sourcelist={apt_dir / 'sources.list'}",
            "-o", "Dir::Etc::sourceparts=/nonexistent",
            "-o", f"Dir::State::Lists={apt_dir / 'lists'}",
            "-o", f"Dir::Cache={apt_dir / 'cache'}",
            "-o", "Debug::NoLocking=1"]


def _version(binary: Path) -> str:
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True,
                         timeout=30, check=True)
    first = (out.stdout or out.stderr).splitlines()[0]
    match = re.search(r"version (\S+)", first)
    return match.group(1) if match else first


def fetch(cache: Path = CACHE, refresh: bool = False) -> Tools:
    """Download and unpack the unstable packages once; later calls reuse the cache."""
    root = cache / "root"
    promtool, amtool = root / "usr/bin/promtool", root / "usr/bin/amtool"
    if refresh or not all((root / "usr/bin" / name).exists()
                          for name in ("promtool", "amtool", "prometheus", "prometheus-alertmanager")):
        apt_dir = cache / "apt"
        for sub in ("lists/partial", "cache/archives/partial"):
            (apt_dir / sub).mkdir(parents=True, exist_ok=True)
        (apt_dir / "sources.list").write_text(
            f"deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
            f"{machine_mirror()} {SUITE} main\n", encoding="utf-8")
        options = _apt_options(apt_dir)
        subprocess.run(["apt-get", *options, "-qq", "update"], check=True, timeout=300)
        downloads = cache / "debs"
        downloads.mkdir(parents=True, exist_ok=True)
        for old in downloads.glob("*.deb"):
            old.unlink()
        subprocess.run(["apt-get", *options, "-qq", "download", *PACKAGES], check=True,
                       timeout=600, cwd=downloads,
                       stderr=subprocess.DEVNULL if not os.environ.get("DEBUG") else None)
        staging = cache / "root.tmp"
        subprocess.run(["rm", "-rf", str(staging)], check=True)
        for deb in sorted(downloads.glob("*.deb")):
            subprocess.run(["dpkg", "-x", str(deb), str(staging)], check=True, timeout=300)
        subprocess.run(["rm", "-rf", str(root)], check=True)
        staging.rename(root)
    return Tools(promtool, amtool, root, _version(promtool), _version(amtool))


def main() -> int:
    tools = fetch(refresh="--refresh" in sys.argv[1:])
    print(f"promtool {tools.promtool_version}: {tools.promtool}")
    print(f"amtool {tools.amtool_version}: {tools.amtool}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
