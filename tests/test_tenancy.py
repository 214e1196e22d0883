import random
import re
import string

import pytest
from flask import Flask

from flask_mpesa_monitor import MPesaMonitor, tenancy

from metric_values import Delta


@pytest.fixture
def small_guard():
    """A guard that has seen nothing, with a small bound; restored afterwards."""
    guard = tenancy.organizations
    saved_limit = guard.limit
    guard.reset()
    yield guard
    guard.reset()
    guard.set_limit(saved_limit)


@pytest.mark.parametrize("raw", ["acme", "ACME-01", "org_7", "a.b-c", "x" * 64, "12345"])
def test_guard_admits_identifiers(small_guard, raw):
    assert small_guard(raw) == raw


@pytest.mark.parametrize(
    "raw",
    ["", None, "x" * 65, "a b", "acme/../etc", "<script>", "ümlaut", "254712345678", "0712345678",
     "+254712345678", "2541123456789"],
)
def test_guard_refuses_junk_and_phone_numbers(small_guard, raw):
    overflow = Delta("mpesa_label_overflow_total", label="organization")
    assert small_guard(raw) == "unknown"
    assert overflow.change() == (0 if raw in ("", None) else 1)


def test_guard_bound_turns_new_values_into_other(small_guard):
    small_guard.set_limit(3)
    overflow = Delta("mpesa_label_overflow_total", label="organization")
    assert [small_guard(v) for v in ("a", "b", "c", "d", "a", "e")] == ["a", "b", "c", "other", "a", "other"]
    assert overflow.change() == 2
    assert sorted(small_guard.known()) == ["a", "b", "c"]


def test_guard_is_shared_by_apps_in_one_process(small_guard):
    small_guard.set_limit(2)
    apps = [Flask(f"app{i}") for i in range(2)]
    for app in apps:
        app.config["MPESA_MONITOR_MAX_ORGANIZATIONS"] = 2
        MPesaMonitor(app)
        app.add_url_rule("/orgs/<org_id>/shared", "shared", lambda org_id: "ok")
    apps[0].test_client().get("/orgs/one/shared")
    apps[1].test_client().get("/orgs/two/shared")
    count = Delta("mpesa_mcp_requests_total", method="GET", endpoint="/orgs/<org_id>/shared",
                  status="200", organization="other")
    apps[0].test_client().get("/orgs/three/shared")
    assert count.change() == 1


def _series_of(text: str) -> set[str]:
    return {line.split(" ")[0] for line in text.splitlines() if line.startswith("mpesa_") and not line.startswith("#")}


def test_cardinality_attack_does_not_grow_metrics_beyond_the_bound(small_guard):
    limit = 50
    app = Flask(__name__)
    app.config["MPESA_MONITOR_MAX_ORGANIZATIONS"] = limit
    MPesaMonitor(app)

    @app.get("/attack/<org_id>/pay")
    def pay(org_id):
        return "ok"

    client = app.test_client()
    before = _series_of(client.get("/metrics").text)
    rng = random.Random(20000)

    def junk(n):
        return "".join(rng.choice(string.ascii_letters + string.digits + "-_./ %") for _ in range(n))

    for i in range(20000):  # bounded: 20,000 requests with random organizations and paths
        org = junk(rng.randint(1, 80))
        if i % 2:
            client.get("/attack/" + re.sub(r"[/%? ]", "x", org) + "/pay")
        else:
            client.get("/p/" + junk(12).replace("%", "x").replace(" ", "x").replace("/", "x"), headers={"X-Organization-ID": org})
    after = _series_of(client.get("/metrics").text)
    new = after - before
    orgs = {m.group(1) for s in new for m in [re.search(r'organization="([^"]*)"', s)] if m}
    assert len(orgs) <= limit + 2  # the admitted ones plus unknown and other
    assert {"other"} <= orgs
    # Per organization: 2 endpoints x 2 statuses x (1 counter + buckets + sum + count) at most.
    per_org = 2 * 2 * (1 + 12 + 2)
    assert len(new) <= (limit + 2) * per_org + 5
    assert not any("unmatched" not in s and "/attack/<org_id>/pay" not in s and "mpesa_mcp_request" in s for s in new)
