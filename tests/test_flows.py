"""M-Pesa flows beyond a matched STK push: reconciliation of missing callbacks through STK
Query, C2B validation and confirmation, B2C and the other async results, and the seed's
helpers (mobile app versions, caches, the encryption check, the Daraja environment)."""

import time

import pytest
from flask import Flask, jsonify, request
from metric_values import Delta, value
from test_transactions import callback

from flask_mpesa_monitor import MPesaMonitor, metrics
from flask_mpesa_monitor.b2c import AsyncResultTracker, InvalidResult, utility_balance
from flask_mpesa_monitor.c2b import C2BTracker, InvalidConfirmation
from flask_mpesa_monitor.stk_store import SQLitePendingStore
from flask_mpesa_monitor.transactions import TransactionTracker


def make(**config):
    app = Flask(__name__)
    app.config.update({"MPESA_MONITOR_STK_CALLBACK_TIMEOUT": 60, **config})
    return app, MPesaMonitor(app)


def tracker(monitor):
    return monitor._state().transactions


def query(code, desc="done"):
    """An STK Query answer: Daraja sends the codes as strings."""
    return {"ResponseCode": "0", "ResponseDescription": "The service request has been accepted successsfully",
            "MerchantRequestID": "m-1", "CheckoutRequestID": "ws_CO_x", "ResultCode": str(code),
            "ResultDesc": desc}


class Org:
    def __init__(self, org):
        self.org = org
        self.revenue = Delta("mpesa_revenue_total", organization=org, currency="KES")
        self.ok = Delta("mpesa_transactions_total", organization=org, type="stk_push", outcome="success")
        self.recovered = Delta("mpesa_stk_reconciled_total", organization=org, result="recovered")
        self.unresolved = Delta("mpesa_stk_reconciled_total", organization=org, result="unresolved")
        self.late = Delta("mpesa_stk_callbacks_late_total", organization=org)
        self.missing = Delta("mpesa_stk_callbacks_missing_total", organization=org)


# --- reconciliation ---------------------------------------------------------------------
def test_missing_push_recovered_by_stk_query_once_and_its_late_callback_is_a_duplicate():
    _, monitor = make()
    acme = Org("recon-acme")
    monitor.record_stk_push("recon-acme", "ws_CO_recon_1", 250)
    assert tracker(monitor).expire(now=time.time() + 61) == 1
    assert acme.missing.change() == 1
    result = monitor.record_stk_query("recon-acme", "ws_CO_recon_1", query("0"))
    assert result.match == "recovered" and result.verified_amount == 250  # the pushed amount
    assert acme.recovered.change() == 1 and acme.ok.change() == 1 and acme.revenue.change() == 250
    # the callback comes after all, and a second query: neither counts again
    late = monitor.record_stk_callback(callback("ws_CO_recon_1", 0, amount=250), "recon-acme")
    again = monitor.record_stk_query("recon-acme", "ws_CO_recon_1", query("0"))
    assert late.duplicate and again.duplicate
    assert acme.recovered.change() == 1 and acme.ok.change() == 1 and acme.revenue.change() == 250
    assert acme.late.change() == 0


def test_query_answers_that_are_not_final_leave_the_push_unknown():
    _, monitor = make()
    acme = Org("recon-wait")
    monitor.record_stk_push("recon-wait", "ws_CO_recon_2", 100)
    tracker(monitor).expire(now=time.time() + 61)
    processing = {"requestId": "r-1", "errorCode": "500.001.1001", "errorMessage": "The transaction is being processed"}
    assert monitor.record_stk_query("recon-wait", "ws_CO_recon_2", processing).match == "unresolved"
    assert acme.unresolved.change() == 1 and acme.ok.change() == 0
    # then the final answer: a wrong PIN, the customer's own doing (STK column), no revenue
    result = monitor.record_stk_query("recon-wait", "ws_CO_recon_2", query("2001", "wrong PIN"))
    assert result.outcome == "customer_error" and result.match == "recovered"
    assert value("mpesa_transactions_total", organization="recon-wait", type="stk_push",
                 outcome="customer_error") == 1
    assert acme.revenue.change() == 0 and acme.recovered.change() == 1


def test_query_of_a_pending_push_resolves_it_and_a_query_never_creates_a_push():
    _, monitor = make()
    acme = Org("recon-pending")
    monitor.record_stk_push("recon-pending", "ws_CO_recon_3", 80)
    assert monitor.record_stk_query("recon-pending", "ws_CO_recon_3", query("0"), amount=500).match == "matched"
    assert acme.revenue.change() == 80  # at most the pushed amount
    assert monitor.record_stk_callback(callback("ws_CO_recon_3", 0, amount=80), "recon-pending").duplicate
    assert tracker(monitor).expire(now=time.time() + 61) == 0
    nobody = monitor.record_stk_query("recon-pending", "ws_CO_never_pushed", query("0"))
    assert nobody.match == "unknown" and acme.ok.change() == 1 and acme.revenue.change() == 80


def test_query_for_the_wrong_organization_is_credited_to_neither():
    _, monitor = make()
    monitor.record_stk_push("recon-owner", "ws_CO_recon_4", 90)
    owner, other = Org("recon-owner"), Org("recon-other")
    assert monitor.record_stk_query("recon-other", "ws_CO_recon_4", query("0")).match == "wrong_organization"
    assert owner.revenue.change() == 0 and other.revenue.change() == 0


# --- C2B --------------------------------------------------------------------------------
def c2b_app(**config):
    app, monitor = make(**config)

    @app.post("/c2b/<org_id>/validation")
    @monitor.c2b_validation()
    def validation(org_id):
        if request.get_json().get("BillRefNumber") == "bad":
            return jsonify(ResultCode="C2B00012", ResultDesc="Rejected")
        if request.get_json().get("BillRefNumber") == "crash":
            raise RuntimeError("the app's account lookup failed")
        return jsonify(ResultCode="0", ResultDesc="Accepted")

    @app.post("/c2b/<org_id>/confirmation")
    def confirmation(org_id):
        try:
            monitor.record_c2b_confirmation(request.get_json(), org_id)
        except InvalidConfirmation:
            return jsonify(ResultCode="1", ResultDesc="invalid"), 400
        return jsonify(ResultCode="0", ResultDesc="Success")

    return app, monitor


def confirmation_body(trans_id, amount=100, shortcode="600984"):
    return {"TransactionType": "Pay Bill", "TransID": trans_id, "TransTime": "20240101120000",
            "TransAmount": str(amount), "BusinessShortCode": shortcode, "BillRefNumber": "inv-1",
            "MSISDN": "2547XXXXXXXX", "FirstName": "A"}


def test_c2b_validation_is_timed_and_counted_by_result_and_reason():
    app, _ = c2b_app()
    client = app.test_client()
    accepted = Delta("mpesa_c2b_validations_total", organization="c2b-duka", shortcode="600984",
                     result="accepted", reason="none")
    rejected = Delta("mpesa_c2b_validations_total", organization="c2b-duka", shortcode="600984",
                     result="rejected", reason="invalid_account")
    timed = Delta("mpesa_c2b_validation_duration_seconds_count", organization="c2b-duka")
    client.post("/c2b/c2b-duka/validation", json={"BusinessShortCode": "600984", "BillRefNumber": "ok"})
    client.post("/c2b/c2b-duka/validation", json={"BusinessShortCode": "600984", "BillRefNumber": "bad"})
    client.post("/c2b/c2b-duka/validation", json={"BusinessShortCode": "254712345678", "BillRefNumber": "ok"})
    assert accepted.change() == 1 and rejected.change() == 1 and timed.change() == 3
    # a phone number is never a shortcode label
    assert value("mpesa_c2b_validations_total", organization="c2b-duka", shortcode="unknown",
                 result="accepted", reason="none") == 1


def test_c2b_validation_view_that_raises_is_counted_as_an_error_and_still_raises():
    """Safaricom gets a 500 and applies the shortcode's default: neither accepted nor
    rejected by the app. It is counted (result ``error``) and timed; the app's exception
    reaches Flask unchanged."""
    app, _ = c2b_app()
    app.config["PROPAGATE_EXCEPTIONS"] = False
    failed = Delta("mpesa_c2b_validations_total", organization="c2b-crash", shortcode="600984",
                   result="error", reason="none")
    timed = Delta("mpesa_c2b_validation_duration_seconds_count", organization="c2b-crash")
    answer = app.test_client().post("/c2b/c2b-crash/validation",
                                    json={"BusinessShortCode": "600984", "BillRefNumber": "crash"})
    assert answer.status_code == 500
    assert failed.change() == 1 and timed.change() == 1


def test_c2b_confirmation_counted_once_per_trans_id_and_revenue_only_from_an_allowed_source():
    app, _ = c2b_app(MPESA_MONITOR_CALLBACK_ALLOWED_IPS="127.0.0.1")
    client = app.test_client()
    revenue = Delta("mpesa_revenue_total", organization="c2b-shop", currency="KES")
    confirmations = Delta("mpesa_c2b_confirmations_total", organization="c2b-shop", shortcode="600984")
    for _ in range(3):  # Daraja's retries
        assert client.post("/c2b/c2b-shop/confirmation", json=confirmation_body("RKTQDM7W6S", 700)).status_code == 200
    assert confirmations.change() == 1 and revenue.change() == 700
    assert value("mpesa_transactions_total", organization="c2b-shop", type="c2b", outcome="success") == 1


def test_c2b_confirmation_from_an_unknown_source_is_not_revenue_and_bad_amounts_are_refused():
    app, _ = c2b_app()  # the default allowed list is Safaricom's: 127.0.0.1 is not in it
    client = app.test_client()
    revenue = Delta("mpesa_revenue_total", organization="c2b-forged", currency="KES")
    unverified = Delta("mpesa_revenue_unverified_total", organization="c2b-forged", currency="KES",
                       reason="unknown_source")
    source = Delta("mpesa_security_events_total", event_type="callback_unknown_source", severity="medium",
                   organization="c2b-forged")
    invalid = Delta("mpesa_security_events_total", event_type="invalid_callback", severity="medium",
                    organization="c2b-forged")
    client.post("/c2b/c2b-forged/confirmation", json=confirmation_body("FORGED0001", 9000))
    assert revenue.change() == 0 and unverified.change() == 9000 and source.change() == 1
    for amount in ("NaN", "-5", "1e12"):
        assert client.post("/c2b/c2b-forged/confirmation",
                           json=confirmation_body("FORGED0002", amount)).status_code == 400
    assert client.post("/c2b/c2b-forged/confirmation", json={"TransAmount": "10"}).status_code == 400
    assert invalid.change() == 4 and revenue.change() == 0


def test_c2b_and_b2c_ids_are_counted_once_across_the_workers_of_a_host(tmp_path):
    """Two workers = two trackers sharing the host's SQLite table."""
    path = str(tmp_path / "mpesa_monitor_stk.sqlite")
    workers = [TransactionTracker(store=SQLitePendingStore(path, 1000)) for _ in range(2)]
    confirmations = Delta("mpesa_c2b_confirmations_total", organization="shared-c2b", shortcode="600100")
    payouts = Delta("mpesa_payouts_total", organization="shared-c2b", currency="KES")
    for worker in workers * 2:
        C2BTracker(worker).record_confirmation(confirmation_body("SHARED0001", 50, "600100"), "shared-c2b")
        AsyncResultTracker(worker).record_result(b2c_result("AG_shared_1", 0, amount=40), "shared-c2b")
    assert confirmations.change() == 1 and payouts.change() == 40


def test_held_callback_forgotten_to_make_room_for_c2b_and_b2c_ids_is_counted_unmatched(tmp_path):
    """The shared table keeps its bound by forgetting the oldest resolved rows: a held STK
    callback forgotten while a C2B or B2C id is remembered still counts as unmatched."""
    events = []
    worker = TransactionTracker(store=SQLitePendingStore(str(tmp_path / "bound.sqlite"), max_pending=1),
                                on_security_event=lambda kind, severity, org: events.append((kind, org)))
    unmatched = Delta("mpesa_revenue_unverified_total", organization="bound-org", currency="KES",
                      reason="unmatched")
    assert worker.record_stk_callback(callback("ws_CO_bound1", 0, amount=300), "bound-org").match == "held"
    C2BTracker(worker).record_confirmation(confirmation_body("BOUND00001", 50), "bound-org")
    assert unmatched.change() == 300 and events == [("callback_unmatched", "bound-org")]
    assert worker.record_stk_callback(callback("ws_CO_bound2", 0, amount=70), "bound-org").match == "held"
    AsyncResultTracker(worker).record_result(b2c_result("AG_bound_1", 0, amount=40), "bound-org")
    assert unmatched.change() == 370 and len(events) == 2


# --- B2C and the other async APIs -------------------------------------------------------
def b2c_result(conversation, code, amount=None, funds=None, desc="done"):
    parameters = []
    if amount is not None:
        parameters.append({"Key": "TransactionAmount", "Value": amount})
    if funds is not None:
        parameters.append({"Key": "B2CUtilityAccountAvailableFunds", "Value": funds})
    return {"Result": {"ResultType": 0, "ResultCode": code, "ResultDesc": desc,
                       "OriginatorConversationID": "oc-" + conversation, "ConversationID": conversation,
                       "TransactionID": "TX" + conversation[-4:],
                       "ResultParameters": {"ResultParameter": parameters}}}


def test_b2c_payout_counted_once_never_revenue_and_sets_the_float():
    _, monitor = make()
    revenue = Delta("mpesa_revenue_total", organization="b2c-pay", currency="KES")
    payouts = Delta("mpesa_payouts_total", organization="b2c-pay", currency="KES")
    ok = Delta("mpesa_transactions_total", organization="b2c-pay", type="b2c", outcome="success")
    for _ in range(2):
        result = monitor.record_mpesa_result(b2c_result("AG_20240101_a1", 0, amount=1500, funds="98500.00"), "b2c-pay")
    assert result.duplicate and ok.change() == 1 and payouts.change() == 1500 and revenue.change() == 0
    assert value("mpesa_b2c_float_balance", organization="b2c-pay", currency="KES") == 98500


def test_b2c_codes_are_read_in_the_b2c_column():
    _, monitor = make()
    initiator = Delta("mpesa_transactions_total", organization="b2c-codes", type="b2c", outcome="system_error")
    recipient = Delta("mpesa_transactions_total", organization="b2c-codes", type="b2c", outcome="customer_error")
    assert monitor.record_mpesa_result(b2c_result("AG_c1", 2001), "b2c-codes").outcome == "system_error"
    assert monitor.record_mpesa_result(b2c_result("AG_c2", "1"), "b2c-codes").outcome == "system_error"  # float
    assert monitor.record_mpesa_result(b2c_result("AG_c3", 2040), "b2c-codes").outcome == "customer_error"
    assert initiator.change() == 2 and recipient.change() == 1
    with pytest.raises(InvalidResult):
        monitor.record_mpesa_result({"Result": {"ResultCode": 0}}, "b2c-codes")
    with pytest.raises(ValueError):
        monitor.record_mpesa_result(b2c_result("AG_c4", 0), "b2c-codes", api="stk_push")


def test_queue_timeout_is_not_a_failure_and_counts_once():
    _, monitor = make()
    timeouts = Delta("mpesa_async_queue_timeouts_total", organization="b2c-queue", api="b2c")
    failures = Delta("mpesa_transactions_total", organization="b2c-queue", type="b2c", outcome="system_error")
    body = {"Result": {"ResultType": 1, "ResultCode": 1, "ResultDesc": "The request timed out in the queue",
                       "OriginatorConversationID": "oc-queue-1", "ConversationID": "AG_queue_1"}}
    assert monitor.record_queue_timeout("b2c-queue", "b2c", body) is True
    assert monitor.record_queue_timeout("b2c-queue", "b2c", body) is False
    assert timeouts.change() == 1 and failures.change() == 0


def test_account_balance_result_sets_the_float_of_the_utility_account():
    _, monitor = make()
    balance = ("Working Account|KES|46713.00|46713.00|0.00|0.00&Float Account|KES|0.00|0.00|0.00|0.00"
               "&Utility Account|KES|49217.00|49117.00|100.00|0.00&Charges Paid Account|KES|-220.00|-220.00|0.00|0.00")
    body = {"Result": {"ResultType": 0, "ResultCode": 0, "ResultDesc": "ok", "ConversationID": "AG_bal_1",
                       "OriginatorConversationID": "oc-bal-1",
                       "ResultParameters": {"ResultParameter": [{"Key": "AccountBalance", "Value": balance}]}}}
    assert monitor.record_mpesa_result(body, "b2c-balance", api="account_balance").float_balance == 49117
    assert value("mpesa_b2c_float_balance", organization="b2c-balance", currency="KES") == 49117
    assert utility_balance("Utility Account|KES|NaN|NaN") is None and utility_balance(None) is None


# --- the seed's helpers -----------------------------------------------------------------
def test_app_version_has_its_own_bounded_metric():
    app, _ = make(MPESA_MONITOR_APP_VERSION_HEADER="X-Client-Version",
                  MPESA_MONITOR_APP_VERSIONS="3.1.0,3.2.0")

    @app.get("/ping")
    def ping():
        return "ok"

    client = app.test_client()
    current = Delta("mpesa_mobile_app_requests_total", app_version="3.2.0")
    other = Delta("mpesa_mobile_app_requests_total", app_version="other")
    client.get("/ping", headers={"X-Client-Version": "3.2.0"})
    client.get("/ping", headers={"X-Client-Version": "9.9.9-forged"})
    client.get("/ping")
    assert current.change() == 1 and other.change() == 1
    labels = metrics.requests_total._labelnames
    assert "app_version" not in labels  # request series do not multiply


def test_record_cache_counts_hits_and_misses():
    _, monitor = make()
    hits = Delta("mpesa_cache_requests_total", cache="tokens", result="hit")
    misses = Delta("mpesa_cache_requests_total", cache="tokens", result="miss")
    monitor.record_cache("tokens", True)
    monitor.record_cache("tokens", True)
    monitor.record_cache("tokens", False)
    assert hits.change() == 2 and misses.change() == 1


def test_encryption_check_runs_the_apps_round_trip():
    key = 0x5A
    _, monitor = make()

    @monitor.encryption_check
    def round_trip(sample):
        return bytes(b ^ key for b in bytes(b ^ key for b in sample))

    report = monitor.run_health_checks()
    assert report.results["encryption"].status == "healthy"
    monitor.encryption_check(lambda sample: sample, decrypt=lambda sealed: sealed)  # a no-op "cipher"
    result = monitor.run_health_checks().results["encryption"]
    assert result.status == "unhealthy" and "unchanged" in result.error
    monitor.encryption_check(lambda sample: sample[::-1])
    assert monitor.run_health_checks().results["encryption"].status == "unhealthy"


def test_daraja_environment_is_its_own_label_on_its_own_metric():
    make(MPESA_MONITOR_DARAJA_BASE_URL="https://sandbox.safaricom.co.ke")
    assert value("mpesa_daraja_environment_info", daraja_environment="sandbox") == 1
    make(MPESA_MONITOR_DARAJA_ENVIRONMENT="production")
    assert value("mpesa_daraja_environment_info", daraja_environment="production") == 1
    assert metrics.build_info._labelnames == ("version",)
    with pytest.raises(ValueError, match="MPESA_MONITOR_DARAJA_ENVIRONMENT"):
        make(MPESA_MONITOR_DARAJA_ENVIRONMENT="staging")


def test_transaction_status_result_recovers_a_missing_push():
    """Transaction Status answers through its ResultURL: a ``Result`` body, read in its column."""
    _, monitor = make()
    acme = Org("recon-status")
    monitor.record_stk_push("recon-status", "ws_CO_recon_5", 60)
    tracker(monitor).expire(now=time.time() + 61)
    body = {"Result": {"ResultType": 0, "ResultCode": 0, "ResultDesc": "The service request is processed successfully.",
                       "ConversationID": "AG_status_1", "OriginatorConversationID": "oc-status-1"}}
    result = monitor.record_stk_query("recon-status", "ws_CO_recon_5", body, api="transaction_status")
    assert result.match == "recovered" and acme.recovered.change() == 1 and acme.revenue.change() == 60
