"""Prove that two different gunicorn workers answer, without relying on timing.

Each request for the same token leaves its worker's pid in a shared directory and waits
(bounded, 5 s) until two pids are there; the answer lists them.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path


def rendezvous(directory_env: str, token: str) -> list[int]:
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", token):
        raise ValueError("bad token")
    directory = Path(os.environ[directory_env]) / token
    directory.mkdir(parents=True, exist_ok=True)
    (directory / str(os.getpid())).touch()
    deadline = time.monotonic() + 5.0
    while True:
        pids = sorted(int(p.name) for p in directory.iterdir())
        if len(pids) >= 2 or time.monotonic() > deadline:
            return pids
        time.sleep(0.02)
