"""A traffic generator for the demo app: a realistic mix over several organizations.

Why: dashboards and alert rules only show something when requests flow, and the
end-to-end scenarios need a steady background of normal payments to measure faults
against; "no page without a fault" can only be shown with traffic as a real day has it.
This sends, at a fixed rate and for a bounded time, what a multi-tenant payments app sees:

- users (``--users``, spread over the organizations, the first busiest) in sessions: a
  login, then a few actions with that token (STK pushes, transaction and balance reads),
  then the session ends and the next one logs in again;
- a wrong password in a few percent of logins (``--wrong-password-ratio``), followed by
  the right one, as people do;
- each user from its own address, sent as ``X-Forwarded-For`` as a reverse proxy does
  (the app believes it only from a trusted proxy), so per-address rules see many clients;
- with ``--simulator-url``, Daraja as it behaves on a normal day (:data:`NORMAL_DARAJA`):
  customers who cancel, type a wrong PIN, lack funds or cannot be reached (1037), and
  answers with a slow tail;
- only when asked (``--cross-tenant``), a user reading another organization's data.

Endpoints it calls on the demo app::

    POST /login                       {"username", "password", "organization"} -> {"token"}
    POST /orgs/<org>/stk-push         {"phone", "amount"}           Authorization: Bearer
    GET  /orgs/<org>/transactions                                   Authorization: Bearer
    GET  /orgs/<org>/balance                                        Authorization: Bearer
    GET  /orgs/<other>/transactions   with a token of <org> (--cross-tenant): expects 403/404

Organizations are not equally busy (the first is busiest). Phone numbers are obviously
fake (``2547000000NN``) and never printed whole. Errors are counted, never raised; the
run ends after ``--duration`` seconds or ``--max-requests`` actions, whichever comes first,
and prints one summary line (``--json`` for a JSON object). Exit status 1 only when not
one request succeeded (the app is not there).

Run::

    python -m examples.demo.traffic --base-url http://127.0.0.1:8000 --duration 60 \\
        --rps 5 --orgs acme,jambo,duka,safari [--simulator-url http://127.0.0.1:8081] [--cross-tenant]
"""

from __future__ import annotations

import argparse
import json
import queue
import random
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import requests

__all__ = [
    "NORMAL_DARAJA",
    "TrafficConfig",
    "TrafficSummary",
    "client_address",
    "configure_simulator",
    "fake_phone",
    "main",
    "mask_phone",
    "run",
]

#: Relative weights of the actions within a session (cross_tenant comes from the config).
ACTION_WEIGHTS = {"stk_push": 0.5, "transactions": 0.25, "balance": 0.2}
AMOUNTS = (10, 20, 50, 100, 150, 250, 500, 1000, 2500, 5000)
#: Actions per session, uniform in this range: a login every few actions.
SESSION_ACTIONS = (3, 12)
#: Daraja on a normal day (simulator settings): most payments succeed; customers cancel
#: (1032), type a wrong PIN (2001), lack funds (1) or cannot be reached (1037); answers
#: take tens of milliseconds, a few take seconds. None of it is a fault: none may page.
NORMAL_DARAJA: dict[str, Any] = {
    "result_mix": {"0": 0.83, "1032": 0.07, "2001": 0.04, "1": 0.03, "1037": 0.03},
    "latency_ms": [30, 150],
    "latency_tail_ratio": 0.03,
    "latency_tail_ms": [400, 2500],
}


def configure_simulator(simulator_url: str, settings: dict[str, Any] | None = None, timeout: float = 5.0) -> None:
    """Make the Daraja simulator behave as on a normal day (or as ``settings`` say)."""
    answer = requests.post(simulator_url.rstrip("/") + "/sim/config", json=settings or NORMAL_DARAJA, timeout=timeout)
    answer.raise_for_status()


def client_address(org_index: int, user: int) -> str:
    """A user's own address (10.<org>.x.y): stable for the user, distinct between users."""
    return f"10.{org_index % 256}.{user // 250 % 256}.{user % 250 + 1}"


def fake_phone(rng: random.Random) -> str:
    """An obviously fake Kenyan test number: ``2547000000NN``."""
    return f"2547000000{rng.randrange(100):02d}"


def mask_phone(number: str) -> str:
    """``254700000012`` -> ``2547******12``: enough to tell numbers apart in a log."""
    return number[:4] + "*" * max(0, len(number) - 6) + number[-2:] if len(number) > 6 else "*" * len(number)


@dataclass
class TrafficConfig:
    """What to send. ``max_requests`` bounds the actions (logins come on top)."""

    base_url: str
    duration: float = 60.0
    rps: float = 5.0
    orgs: tuple[str, ...] = ("acme", "jambo", "duka", "safari")
    cross_tenant: bool = False
    max_requests: int | None = None
    concurrency: int = 4
    timeout: float = 5.0
    username: str = "demo"
    password: str = "demo-password"
    wrong_password_ratio: float = 0.04  # of logins
    cross_tenant_ratio: float = 0.05  # of actions, with cross_tenant
    seed: int | None = None
    users: int = 200
    forwarded_for: bool = True  # send each user's address as X-Forwarded-For

    def __post_init__(self) -> None:
        self.base_url = self.base_url.rstrip("/")
        self.orgs = tuple(o.strip() for o in self.orgs if o.strip())
        if not self.orgs:
            raise ValueError("give at least one organization (--orgs acme,jambo).")
        if self.cross_tenant and len(self.orgs) < 2:
            raise ValueError("--cross-tenant needs at least two organizations.")
        if self.duration <= 0 or self.rps <= 0:
            raise ValueError(f"duration and rps must be positive, got {self.duration} and {self.rps}.")
        if not 1 <= self.concurrency <= 64:
            raise ValueError(f"concurrency must be from 1 to 64, got {self.concurrency}.")
        if not 1 <= self.users <= 100_000:
            raise ValueError(f"users must be from 1 to 100000, got {self.users}.")
        for name in ("wrong_password_ratio", "cross_tenant_ratio"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be between 0 and 1.")


@dataclass
class TrafficSummary:
    """Counts of one run. ``denied`` are refusals the generator asked for (wrong
    password, cross-tenant read); ``breaches`` are such requests that succeeded."""

    requests: int = 0
    ok: int = 0
    denied: int = 0
    client_errors: int = 0
    server_errors: int = 0
    connection_errors: int = 0
    breaches: int = 0
    skipped: int = 0
    elapsed: float = 0.0
    actions: dict[str, int] = field(default_factory=dict)

    def line(self) -> str:
        rate = self.requests / self.elapsed if self.elapsed > 0 else 0.0
        mix = " ".join(f"{k}={v}" for k, v in sorted(self.actions.items()))
        return (
            f"traffic: {self.requests} requests in {self.elapsed:.1f}s ({rate:.1f}/s) ok={self.ok} "
            f"denied={self.denied} client_errors={self.client_errors} server_errors={self.server_errors} "
            f"connection_errors={self.connection_errors} breaches={self.breaches} skipped={self.skipped} | {mix}"
        )


@dataclass
class _User:
    """One simulated user: an organization, an address, and the current session."""

    org: str
    address: str
    token: str | None = None
    left: int = 0  # actions left in the session (the dispatcher counts them down)


class _Runner:
    """Workers with one ``requests.Session`` each; counters and sessions behind a lock.

    The dispatcher draws every random choice (user, action, new session, wrong password),
    so a seed gives the same sequence; the workers only send and count.
    """

    def __init__(self, config: TrafficConfig) -> None:
        self.config = config
        self.summary = TrafficSummary()
        self._lock = threading.Lock()
        self._rng = random.Random(config.seed)
        self._stop = threading.Event()
        self._queue: queue.Queue[tuple[str, int, dict[str, Any]] | None] = queue.Queue(config.concurrency * 2)
        weights = dict(ACTION_WEIGHTS)
        if config.cross_tenant:
            weights["cross_tenant"] = sum(ACTION_WEIGHTS.values()) * config.cross_tenant_ratio
        self._actions = [a for a, w in weights.items() if w > 0]
        self._action_weights = [weights[a] for a in self._actions]
        # Zipf-like: the first organization has the most users, as in real multi-tenant traffic.
        org_weights = [1.0 / (i + 1) for i in range(len(config.orgs))]
        self._users: list[_User] = []
        for number in range(config.users):
            index = number % len(config.orgs) if number < len(config.orgs) else \
                self._rng.choices(range(len(config.orgs)), weights=org_weights)[0]
            self._users.append(_User(config.orgs[index], client_address(index, number)))

    # -- counting

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            setattr(self.summary, key, getattr(self.summary, key) + n)

    def _classify(self, response: requests.Response | None, *, expect_denial: bool = False) -> None:
        with self._lock:
            s = self.summary
            s.requests += 1
            if response is None:
                s.connection_errors += 1
            elif expect_denial:
                if response.status_code in (401, 403, 404):
                    s.denied += 1
                elif response.status_code < 400:
                    s.breaches += 1
                elif response.status_code >= 500:
                    s.server_errors += 1
                else:
                    s.client_errors += 1
            elif response.status_code < 400:
                s.ok += 1
            elif response.status_code >= 500:
                s.server_errors += 1
            else:
                s.client_errors += 1

    def _tally(self, action: str) -> None:
        with self._lock:
            self.summary.actions[action] = self.summary.actions.get(action, 0) + 1

    # -- HTTP

    def _send(self, session: requests.Session, user: _User, method: str, path: str,
              headers: dict[str, str] | None = None, **kwargs: Any) -> requests.Response | None:
        headers = dict(headers or {})
        if self.config.forwarded_for:
            headers["X-Forwarded-For"] = user.address
        try:
            response = session.request(method, self.config.base_url + path, timeout=self.config.timeout,
                                       headers=headers, **kwargs)
            response.close()
            return response
        except requests.RequestException:
            return None

    def _login(self, session: requests.Session, user: _User, password: str | None = None) -> requests.Response | None:
        body = {"username": self.config.username, "password": password or self.config.password,
                "organization": user.org}
        return self._send(session, user, "POST", "/login", json=body)

    def _log_in(self, session: requests.Session, user: _User, wrong_first: bool) -> str | None:
        """A new session: the odd wrong password first (a typo), then the right one."""
        if wrong_first:
            self._tally("wrong_password")
            self._classify(self._login(session, user, password=self.config.password + "-wrong"), expect_denial=True)
        response = self._login(session, user)
        self._classify(response)
        self._tally("login")
        if response is None or response.status_code >= 400:
            return None
        try:
            data = response.json()
        except ValueError:
            return None
        token = (data.get("token") or data.get("access_token")) if isinstance(data, dict) else None
        with self._lock:
            user.token = token
        return token

    def _authorized(self, session: requests.Session, user: _User, params: dict[str, Any], method: str, path: str,
                    **kwargs: Any) -> None:
        """Send with the session's token; log in first when the session is new, and again
        once on a 401 (the token expired)."""
        with self._lock:
            token = None if params.get("new_session") else user.token
        if token is None:
            token = self._log_in(session, user, bool(params.get("wrong_first")))
            if token is None:
                return
        response = self._send(session, user, method, path, headers={"Authorization": f"Bearer {token}"}, **kwargs)
        if response is not None and response.status_code == 401:
            token = self._log_in(session, user, False)
            if token is None:
                return
            response = self._send(session, user, method, path, headers={"Authorization": f"Bearer {token}"}, **kwargs)
        self._classify(response, expect_denial=bool(params.get("expect_denial")))

    def _perform(self, session: requests.Session, action: str, number: int, params: dict[str, Any]) -> None:
        user = self._users[number]
        org = user.org
        self._tally(action)
        if action == "stk_push":
            self._authorized(session, user, params, "POST", f"/orgs/{org}/stk-push",
                             json={"phone": params["phone"], "amount": params["amount"]})
        elif action == "transactions":
            self._authorized(session, user, params, "GET", f"/orgs/{org}/transactions")
        elif action == "balance":
            self._authorized(session, user, params, "GET", f"/orgs/{org}/balance")
        elif action == "cross_tenant":
            self._authorized(session, user, {**params, "expect_denial": True}, "GET",
                             f"/orgs/{params['other']}/transactions")

    def _worker(self) -> None:
        with requests.Session() as session:
            while True:
                job = self._queue.get()
                if job is None:
                    return
                try:
                    self._perform(session, *job)
                except Exception:  # count, never kill the run
                    self._count("connection_errors")

    # -- schedule

    def _next_job(self) -> tuple[str, int, dict[str, Any]]:
        """Drawn in the dispatcher thread only, so a seed gives the same sequence."""
        rng, orgs = self._rng, self.config.orgs
        number = rng.randrange(len(self._users))
        user = self._users[number]
        action = rng.choices(self._actions, weights=self._action_weights)[0]
        params: dict[str, Any] = {}
        if user.left <= 0:  # the user's session is over: the next action logs in again
            user.left = rng.randint(*SESSION_ACTIONS)
            params["new_session"] = True
            params["wrong_first"] = rng.random() < self.config.wrong_password_ratio
        user.left -= 1
        if action == "stk_push":
            params.update(phone=fake_phone(rng), amount=rng.choice(AMOUNTS))
        elif action == "cross_tenant":
            params["other"] = rng.choice([o for o in orgs if o != user.org])
        return action, number, params

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> TrafficSummary:
        config = self.config
        limit = config.max_requests if config.max_requests is not None else int(config.duration * config.rps) + 1
        workers = [threading.Thread(target=self._worker, name=f"traffic-{i}", daemon=True)
                   for i in range(config.concurrency)]
        for worker in workers:
            worker.start()
        start = time.monotonic()
        deadline = start + config.duration
        interval = 1.0 / config.rps
        sent = 0
        try:
            while sent < limit and not self._stop.is_set():
                due = start + sent * interval
                if due >= deadline:
                    break
                if self._stop.wait(max(0.0, due - time.monotonic())):
                    break
                job = self._next_job()
                sent += 1
                try:
                    self._queue.put_nowait(job)
                except queue.Full:  # the app is slower than the rate: skip, do not pile up
                    self._count("skipped")
        finally:
            if self._stop.is_set():  # interrupted: drop what is queued
                while True:
                    try:
                        self._queue.get_nowait()
                    except queue.Empty:
                        break
            # Let queued work finish, bounded: an action is at most five requests (a wrong
            # password, login, request, login again after a 401, request), each with a timeout.
            for _ in workers:
                try:
                    self._queue.put(None, timeout=config.timeout)
                except queue.Full:
                    break
            join_deadline = time.monotonic() + config.timeout * 5
            for worker in workers:
                worker.join(max(0.0, join_deadline - time.monotonic()))
            self.summary.elapsed = time.monotonic() - start
        return self.summary


def run(config: TrafficConfig) -> TrafficSummary:
    """Send traffic as ``config`` says; return the counts (never raises on HTTP errors)."""
    return _Runner(config).run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.demo.traffic", description=__doc__.split("\n")[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds (default 60)")
    parser.add_argument("--rps", type=float, default=5.0, help="actions per second (default 5)")
    parser.add_argument("--orgs", default="acme,jambo,duka,safari")
    parser.add_argument("--cross-tenant", action="store_true", help="also read other organizations' data")
    parser.add_argument("--max-requests", type=int, default=None)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=5.0, help="per request, seconds")
    parser.add_argument("--username", default="demo")
    parser.add_argument("--password", default="demo-password")
    parser.add_argument("--wrong-password-ratio", type=float, default=0.04, help="share of logins (default 0.04)")
    parser.add_argument("--users", type=int, default=200, help="simulated users (default 200)")
    parser.add_argument("--simulator-url", default=None,
                        help="the Daraja simulator: set it to a normal day's behaviour first")
    parser.add_argument("--cross-tenant-ratio", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    try:
        config = TrafficConfig(
            base_url=args.base_url,
            duration=args.duration,
            rps=args.rps,
            orgs=tuple(args.orgs.split(",")),
            cross_tenant=args.cross_tenant,
            max_requests=args.max_requests,
            concurrency=args.concurrency,
            timeout=args.timeout,
            username=args.username,
            password=args.password,
            wrong_password_ratio=args.wrong_password_ratio,
            cross_tenant_ratio=args.cross_tenant_ratio,
            seed=args.seed,
            users=args.users,
        )
    except ValueError as exc:
        parser.error(str(exc))
    if args.simulator_url:
        try:
            configure_simulator(args.simulator_url)
        except requests.RequestException as exc:
            parser.error(f"cannot configure the simulator at {args.simulator_url}: {exc}")
    runner = _Runner(config)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, lambda *_: runner.stop()) if in_main_thread else None
    try:
        summary = runner.run()
    except KeyboardInterrupt:
        runner.stop()
        summary = runner.summary
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
    print(json.dumps(asdict(summary), sort_keys=True) if args.json else summary.line(), flush=True)
    return 0 if summary.ok > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
