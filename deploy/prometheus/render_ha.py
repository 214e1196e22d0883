"""Render the HA Prometheus config: ``python3 deploy/prometheus/render_ha.py SRC DST``.

Used by ``deploy-monitoring.sh --ha`` (and ``--check --ha``) on the rendered copy of
prometheus.yml. Two changes, both checked so that an edit of prometheus.yml that moves
them fails loudly instead of deploying half an HA layout:

- every ``- alertmanager:9093`` list item (the ``alerting`` section and the
  ``alertmanager`` scrape job) gets ``- alertmanager-2:9093`` beside it: each replica
  sends every alert to every Alertmanager of the cluster;
- deploy/prometheus/remote-write.yml is appended (``remote_write`` to VictoriaMetrics,
  ``replica`` dropped).

Standard library only: it runs on a bare monitoring host, before PyYAML is there.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REMOTE_WRITE = HERE / "remote-write.yml"
PEERS = ("alertmanager:9093", "alertmanager-2:9093")
_ITEM = re.compile(r"^(\s*)- " + re.escape(PEERS[0]) + r"\s*$")


def render(text: str, remote_write: str) -> str:
    """``text`` (a prometheus.yml) with both Alertmanagers and the remote_write block."""
    if re.search(r"(?m)^remote_write:", text):
        raise ValueError("prometheus.yml already has a remote_write section: remove it, --ha adds its own")
    out, found = [], 0
    for line in text.splitlines():
        out.append(line)
        match = _ITEM.match(line)
        if match:
            found += 1
            out.extend(f"{match.group(1)}- {peer}" for peer in PEERS[1:])
    if found != 2:
        raise ValueError(f"expected `- {PEERS[0]}` twice in prometheus.yml (alerting and the "
                         f"alertmanager job), found it {found} time(s)")
    return "\n".join(out) + "\n\n" + remote_write


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.splitlines()[0], file=sys.stderr)
        return 64
    src, dst = argv
    try:
        text = render(Path(src).read_text(encoding="utf-8"), REMOTE_WRITE.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        print(f"render_ha: {exc}", file=sys.stderr)
        return 1
    tmp = dst + ".tmp"
    Path(tmp).write_text(text, encoding="utf-8")
    os.replace(tmp, dst)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
