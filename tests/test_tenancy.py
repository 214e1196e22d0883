import random
import re
import string

import pytest
from flask import Flask
from metric_values import Delta

from flask_mpesa_monitor import MPesaMonitor, tenancy


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
            client.get("/p/" + junk(12).replace("%", "x").replace(" ", "x").replace("/", "x"),
                       headers={"X-Organization-ID": org})
    after = _series_of(client.get("/metrics").text)
    new = after - before
    orgs = {m.group(1) for s in new for m in [re.search(r'organization="([^"]*)"', s)] if m}
    assert len(orgs) <= limit + 2  # the admitted ones plus unknown and other
    assert {"other"} <= orgs
    # Per organization: 2 endpoints x 2 statuses x (1 counter + buckets + sum + count) at most.
    per_org = 2 * 2 * (1 + 12 + 2)
    assert len(new) <= (limit + 2) * per_org + 5
    assert not any("unmatched" not in s and "/attack/<org_id>/pay" not in s and "mpesa_mcp_request" in s for s in new)


@pytest.mark.parametrize("raw", ["acme\n", "acme\r\n", "acme%0A", "254-712-345-678", "254_712_345_678",
                                 "tel254712345678", "msisdn254712345678", "254.712.345.678", "0712-345-678",
                                 "org-0712345678", "+254-712-345-678"])
def test_guard_refuses_whole_values_only_and_any_phone_shape(small_guard, raw):
    assert small_guard(raw) == "unknown"


@pytest.mark.parametrize("raw", [["acme"], {"org": "acme"}, {"acme"}, b"acme", 1.5, True, object()])
def test_guard_turns_odd_values_into_unknown_without_raising(small_guard, raw):
    assert small_guard(raw) == "unknown"


@pytest.mark.parametrize("raw, label", [("10.0.0.1", "10.0.0.1"), ("::ffff:10.0.0.1", "10.0.0.1"),
                                        ("2001:DB8:0:0::1", "2001:db8::1"), ("fe80::1%eth0", "unknown"),
                                        ("10.0.0.1\n", "unknown"), (" 10.0.0.1", "unknown"), ("10.0.0.256", "unknown"),
                                        ("localhost", "unknown"), (["10.0.0.1"], "unknown")])
def test_ip_label_is_parsed_and_normalised(raw, label):
    guard = tenancy._IPLabel("ip_test", 5)
    assert guard(raw) == label


def test_ip_spellings_of_one_address_take_one_place():
    guard = tenancy._IPLabel("ip_test_bound", 1)
    assert [guard(v) for v in ("10.0.0.1", "::ffff:10.0.0.1", "10.0.0.2")] == ["10.0.0.1", "10.0.0.1", "other"]


def test_every_helper_accepts_any_organization_value():
    """Odd organization values become `unknown`: no helper raises because of one."""
    app = Flask(__name__)
    monitor = MPesaMonitor(app)
    odd = ["acme"]
    with app.app_context():
        monitor.record_stk_push(odd, "ws_CO_odd_1", 10)
        monitor.record_auth_attempt(odd, False, ip=["10.0.0.1"])
        monitor.record_auth_attempt({"a": 1}, True)
        assert monitor.verify_tenant_isolation(odd, "acme") is False
        assert monitor.verify_tenant_isolation("acme", {"x"}) is False
        monitor.record_transaction(odd, "c2b", outcome="success", amount=1)
        monitor.record_security_event("odd_value", "low", odd)
        monitor.record_rate_limit_hit(odd, "per_minute")
        monitor.set_api_limit(odd, 5)
        assert monitor.send_alert("high", "Odd", "odd organization", organization=odd) in (True, False)
        monitor.record_stk_callback({"Body": {"stkCallback": {"CheckoutRequestID": "ws_CO_odd_1", "ResultCode": 0}}},
                                    odd)
        with pytest.raises(ValueError):  # documented errors stay
            monitor.record_transaction("acme", "c2b", outcome="no-such-outcome")


def test_known_organizations_are_admitted_up_front(small_guard):
    app = Flask(__name__)
    app.config["MPESA_MONITOR_MAX_ORGANIZATIONS"] = 2
    app.config["MPESA_MONITOR_KNOWN_ORGANIZATIONS"] = lambda: ["acme", "globex", "initech"]
    MPesaMonitor(app)
    assert [small_guard(v) for v in ("random1", "acme", "globex", "initech")] == ["other", "acme", "globex", "initech"]


@pytest.mark.parametrize("value", ["acme,254712345678", ["ok", "a b"], 5])
def test_known_organizations_setting_refuses_bad_values(value):
    app = Flask(__name__)
    app.config["MPESA_MONITOR_KNOWN_ORGANIZATIONS"] = value
    with pytest.raises(ValueError, match="MPESA_MONITOR_KNOWN_ORGANIZATIONS"):
        MPesaMonitor(app)


def test_shared_store_bounds_the_whole_host(tmp_path):
    """Two guards (two workers) over one store: the bound holds for both together, and a
    guard started later (a restarted worker) finds the set as it was."""
    from flask_mpesa_monitor.tenant_store import SQLiteAdmissionStore

    path = str(tmp_path / "orgs.sqlite")
    first, second = guards = [tenancy.BoundedLabel(f"organization_store_{i}", 3) for i in range(2)]
    for guard in guards:
        guard.configure(3, SQLiteAdmissionStore(path))
    assert [first(v) for v in ("a", "b")] == ["a", "b"]
    assert [second(v) for v in ("c", "d", "a")] == ["c", "other", "a"]
    assert first("d") == "other" and first("c") == "c"
    restarted = tenancy.BoundedLabel("organization_store_2", 3)
    restarted.configure(3, SQLiteAdmissionStore(path))
    assert [restarted(v) for v in ("e", "b")] == ["other", "b"]
    assert sorted(restarted.known()) == ["a", "b", "c"]


def test_a_failing_shared_store_gives_other_for_now_and_never_raises(tmp_path):
    from flask_mpesa_monitor.tenant_store import SQLiteAdmissionStore

    guard = tenancy.BoundedLabel("organization_broken_store", 3)
    guard.configure(3, SQLiteAdmissionStore(str(tmp_path / "missing" / "orgs.sqlite")), known=["acme"])
    assert guard("acme") == "acme"  # known: admitted locally even when the store is down
    assert guard("newco") == "other"
    (tmp_path / "missing").mkdir()
    assert guard("newco") == "newco"  # not remembered as `other`: the store answers now
