"""1. Request overhead in process: what monitoring adds to each request, in microseconds.

The three apps of :mod:`bench.apps` are called through ``app.wsgi_app`` with prebuilt
WSGI environs (a dict copy per request), which is what the test client does minus its
own overhead; the body is consumed and closed. Each round runs ``requests`` requests
through each app, the order of the apps rotating from round to round (so drift, turbo
or a noisy neighbour hits all three alike); the figures are medians over rounds, and the
added cost is the median of the per-round differences to bare Flask.

The request mix cycles over the three routes: ``/``, ``/items/42`` carrying an
``X-Organization-ID`` header, and ``/orgs/<org_id>/pay`` over 50 organizations. So our
resolver takes all three paths (view argument, header, nothing -> ``unknown``).

The interleaving is block by block (see :func:`measure`): other processes on a shared
machine then slow every app alike.

Target: ours adds at most half of what prometheus-flask-exporter adds.

Run alone: ``python -m bench.bench_inprocess [--requests N] [--rounds R]``.
"""

from __future__ import annotations

import argparse
import gc
import io
import time
from collections.abc import Callable
from typing import Any

from werkzeug.test import EnvironBuilder

from . import apps
from .common import Result, Target, fmt, median, ratio

ORGANIZATIONS = 50


def environs() -> list[dict[str, Any]]:
    """The request mix: one prebuilt environ per request of a cycle."""
    out = []
    for i in range(ORGANIZATIONS):
        out.append(EnvironBuilder(path="/").get_environ())
        out.append(EnvironBuilder(path=f"/items/{i}", headers={"X-Organization-ID": f"org-{i}"}).get_environ())
        out.append(EnvironBuilder(path=f"/orgs/org-{i}/pay").get_environ())
    for environ in out:
        environ.pop("wsgi.input", None)
    return out


def _start_response(status: str, headers: list, exc_info: Any = None) -> Callable[[bytes], None]:
    return lambda data: None


def drive(app: Any, mix: list[dict[str, Any]], requests: int) -> float:
    """Serve ``requests`` requests; CPU microseconds per request. Fails on a non-200.

    CPU time of this thread (``time.thread_time_ns``), not wall time: the work is pure
    CPU, and on a shared machine wall time also counts the time slices other processes
    took, which would inflate every figure by the load of the moment.
    """
    wsgi = app.wsgi_app
    n = len(mix)
    statuses: list[str] = []

    def start_response(status: str, headers: list, exc_info: Any = None) -> Callable[[bytes], None]:
        if status[:3] != "200":
            statuses.append(status)
        return _start_response(status, headers)

    empty = io.BytesIO
    started = time.thread_time_ns()
    for i in range(requests):
        environ = dict(mix[i % n])
        environ["wsgi.input"] = empty()
        body = wsgi(environ, start_response)
        for _chunk in body:
            pass
        close = getattr(body, "close", None)
        if close is not None:
            close()
    elapsed = time.thread_time_ns() - started
    if statuses:
        raise RuntimeError(f"{app.name}: unexpected statuses {sorted(set(statuses))}")
    return elapsed / requests / 1000.0


def measure(requests: int = 20_000, rounds: int = 5, warmup: int = 2_000, block: int = 500,
            variants: dict[str, Any] | None = None) -> dict[str, list[float]]:
    """Per-round microseconds per request of each app, finely interleaved.

    A round serves ``requests`` requests through each app in blocks of ``block``,
    alternating apps block by block (order rotated every cycle); the round's figure for
    an app is the median of its blocks. A burst of load from another process on a
    shared machine then costs a few blocks of every app, not a whole app's round.
    """
    built = variants if variants is not None else {v: apps.create(v) for v in apps.VARIANTS}
    mix = environs()
    for app in built.values():
        drive(app, mix, warmup)
    names = list(built)
    per_round: dict[str, list[float]] = {name: [] for name in names}
    cycles = max(1, requests // block)
    for _ in range(rounds):
        blocks: dict[str, list[float]] = {name: [] for name in names}
        for c in range(cycles):
            shift = c % len(names)
            for name in names[shift:] + names[:shift]:
                blocks[name].append(drive(built[name], mix, block))
        for name in names:
            per_round[name].append(median(blocks[name]))
    return per_round


def run(requests: int = 20_000, rounds: int = 5, warmup: int = 2_000, block: int = 500) -> Result:
    started = time.monotonic()
    block = max(1, min(block, requests))
    gc.collect()
    per_round = measure(requests, rounds, warmup, block)
    bare = per_round["bare"]
    added = {
        variant: [v - b for v, b in zip(per_round[variant], bare)] for variant in ("pfe", "ours")
    }
    med = {variant: median(values) for variant, values in per_round.items()}
    add = {variant: median(values) for variant, values in added.items()}
    share = ratio(add["ours"], add["pfe"])
    labels = {"bare": "bare Flask", "pfe": "prometheus-flask-exporter (url_rule)", "ours": "flask-mpesa-monitor"}
    rows = []
    for variant in apps.VARIANTS:
        if variant == "bare":
            rows.append([labels[variant], fmt(med[variant]), "-", "1.00", "-"])
        else:
            spread = f"{fmt(min(added[variant]))}..{fmt(max(added[variant]))}"
            rows.append([labels[variant], fmt(med[variant]), f"{fmt(add[variant])} ({spread})",
                         fmt(ratio(med[variant], med["bare"]), 2),
                         fmt(ratio(add[variant], add["pfe"]), 2)])
    result = Result(
        key="inprocess",
        title="1. Request overhead, in process",
        method=(
            f"{requests:,} requests per app per round through `app.wsgi_app` with prebuilt environs, "
            f"interleaved app by app in blocks of {block} (order rotated); a round's figure is the "
            f"median of its blocks; {rounds} rounds after {warmup:,} warm-up requests each; "
            "medians over rounds. Mix: `/`, `/items/<id>` with an `X-Organization-ID` header, "
            f"`/orgs/<org_id>/pay` over {ORGANIZATIONS} organizations."
        ),
        header=["app", "CPU µs/request", "added µs/request (min..max over rounds)", "× bare", "added × p-f-e's"],
        rows=rows,
        data={"per_round_us": per_round, "median_us": med, "added_us": add, "ours_over_pfe": share,
              "requests": requests, "rounds": rounds},
    )
    result.targets.append(Target(
        name="in-process overhead",
        goal="ours adds ≤ 0.5× what prometheus-flask-exporter adds",
        measured=f"{fmt(add['ours'])} µs vs {fmt(add['pfe'])} µs = {fmt(share, 2)}×",
        met=bool(share <= 0.5),
    ))
    result.notes.append(
        "Ours records more than prometheus-flask-exporter does: an `organization` label resolved per "
        "request (resolver, view argument, header, bounded by the guard) and an in-progress gauge."
    )
    result.seconds = time.monotonic() - started
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(run(args.requests, args.rounds).markdown())


if __name__ == "__main__":
    main()
