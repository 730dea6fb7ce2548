"""Refunds (issue 9) against the real sandbox over HTTP and real databases (SQLite and PostgreSQL).

Every NAVER answer the issue lists is provoked over HTTP: the sandbox's own state where it
produces the code (CancelNotComplete, PreCancelNotComplete, RestAmountDiff, AlreadyCanceled,
401), its cancel script where it cannot (a 5xx before or after the refund, a held answer,
OverRemainAmount while doCompareRest is sent).
"""

from __future__ import annotations

import threading

import pytest

from tests.worker.refunding import RefundWorld, bad_credentials_client
from worker.refund_requests import RefundRefused, claim_due_refunds, surface_stuck_refunds


@pytest.fixture
def world(db, sandbox_url):
    w = RefundWorld(db, sandbox_url)
    yield w
    w.close()


# --- requests: the over-refund guard --------------------------------------------------------

def test_full_refund_is_sent_once_with_the_stored_key(world):
    charge_id = world.paid_charge(9900)
    refund_id = world.request(charge_id)
    stored_key = world.refund(refund_id).idempotency_key
    out = world.run(refund_id)
    refund = world.refund(refund_id)
    assert out.status == "succeeded" == refund.status
    assert (refund.amount, refund.expected_rest, refund.naver_rest_amount) == (9900, 0, 0)
    assert refund.refunded_at is not None and refund.confirmed_at is not None and refund.pay_hist_id
    assert world.cancel_calls(refund_id) == [("ok", "Success", stored_key)]
    assert world.naver_cancels(charge_id) == [{"amount": 9900, "key": stored_key, "tax_free": 0}]
    assert world.charge_row(charge_id).refund_total == 9900
    assert world.events() == [("refund.succeeded", f"refund.succeeded:{refund_id}")]
    assert world.run(refund_id).status == "succeeded"  # a redelivered task: nothing more sent
    assert len(world.cancel_calls(refund_id)) == 1


def test_partial_refunds_up_to_the_approved_amount(world):
    charge_id = world.paid_charge(9900)
    ids = [world.request(charge_id, amount) for amount in (3000, 3000, 3900)]
    for refund_id in ids:
        assert world.run(refund_id).status == "succeeded"
    assert [world.refund(i).expected_rest for i in ids] == [6900, 3900, 0]
    assert sorted(c["amount"] for c in world.naver_cancels(charge_id)) == [3000, 3000, 3900]
    with pytest.raises(RefundRefused, match="already fully refunded"):
        world.request(charge_id)
    with pytest.raises(RefundRefused, match="only 0 won left"):
        world.request(charge_id, 1)


def test_over_refund_is_refused_clearly_and_stores_nothing(world):
    charge_id = world.paid_charge(9900)
    world.request(charge_id, 5000)
    with pytest.raises(RefundRefused, match="has only 4,900 won left to refund"):
        world.request(charge_id, 5000)
    assert world.db.sql("SELECT count(*) FROM refunds")[0][0] == 1
    assert world.charge_row(charge_id).refund_total == 5000


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"amount": 0}, "positive"),
    ({"amount": 100, "tax_free": -1}, "0 or more"),
    ({"amount": 100, "reason": "가" * 100}, "at most 256"),
    ({"amount": 100, "tax_free": 200}, "more than the refund"),
    ({"amount": 100, "tax_free": 50}, "tax split does not fit"),  # the charge has no tax-free part
])
def test_bad_refund_input_is_refused_by_name(world, kwargs, message):
    charge_id = world.paid_charge(9900)
    with pytest.raises(RefundRefused, match=message):
        world.request(charge_id, **kwargs)
    assert world.charge_row(charge_id).refund_total == 0


def test_only_a_succeeded_charge_can_be_refunded(world):
    with pytest.raises(RefundRefused, match="no charge with id 999"):
        world.request(999)
    charge_id = world.paid_charge(9900)
    world.db.sql("UPDATE charges SET status = 'failed' WHERE id = :i", i=charge_id)
    with pytest.raises(RefundRefused, match="is failed: only a succeeded charge"):
        world.request(charge_id)


def test_racing_refund_requests_never_exceed_the_approved_amount(world):
    charge_id = world.paid_charge(9900)
    accepted, refused = [], []
    barrier = threading.Barrier(6)

    def request() -> None:
        barrier.wait()
        try:
            accepted.append(world.request(charge_id, 3000))
        except RefundRefused as exc:
            refused.append(str(exc))

    threads = [threading.Thread(target=request) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (len(accepted), len(refused)) == (3, 3)
    assert all("has only 900 won left" in text for text in refused)
    assert world.charge_row(charge_id).refund_total == 9000


def test_tax_split_is_sent_and_sums_to_the_cancel_amount(world):
    charge_id = world.paid_charge(9900, tax_free=900)
    first, second = world.request(charge_id, 5000), world.request(charge_id)  # the rest
    assert (world.refund(first).tax_free_amount, world.refund(second).tax_free_amount) == (454, 446)
    assert world.run(first).status == "succeeded" and world.run(second).status == "succeeded"
    assert sorted((c["amount"], c["tax_free"]) for c in world.naver_cancels(charge_id)) == [(4900, 446),
                                                                                          (5000, 454)]
    third_charge = world.paid_charge(9900, tax_free=900)
    with pytest.raises(RefundRefused, match="9,000 won taxable and 900 won tax-free are left"):
        world.request(third_charge, 1000, tax_free=1000)


# --- NAVER's answers --------------------------------------------------------------------------

def test_cancel_not_complete_counts_as_refunded_is_never_resent_and_history_confirms(world):
    charge_id = world.paid_charge(9900)
    world.sandbox.configure(cancelNotCompleteNext=1, cancelNotCompleteSeconds=30)
    refund_id = world.request(charge_id, 4000)
    assert world.run(refund_id).status == "completing"
    refund = world.refund(refund_id)
    assert refund.last_code == "CancelNotComplete" and refund.refunded_at and refund.confirmed_at is None
    assert world.events() == [("refund.succeeded", f"refund.succeeded:{refund_id}")]
    world.later(10)  # NAVER has not completed it yet: history has no row, nothing is resent
    assert world.run(refund_id).status == "completing"
    world.later(60)
    assert world.run(refund_id).status == "succeeded"
    assert world.refund(refund_id).confirmed_at is not None
    assert [c[:2] for c in world.cancel_calls(refund_id)] == [("ok", "CancelNotComplete")]
    assert len(world.events()) == 1  # no second event on confirmation
    assert world.naver_cancels(charge_id)[0]["key"] == refund.idempotency_key


def test_pre_cancel_not_complete_waits_and_sends_the_same_key_later(world):
    charge_id = world.paid_charge(9900)
    world.sandbox.configure(cancelNotCompleteNext=1, cancelNotCompleteSeconds=30)
    first, second = world.request(charge_id, 4000), world.request(charge_id, 3000)
    assert world.run(first).status == "completing"
    out = world.run(second)
    refund = world.refund(second)
    assert out.status == "requested" and refund.last_code == "PreCancelNotComplete"
    assert refund.next_attempt_at is not None and refund.next_attempt_at > world.clock()
    assert world.run(second).status == "requested"  # not due yet: nothing sent
    world.later(60)
    out = world.run(second)
    assert out.status == "succeeded", (world.refund(second).last_message, world.calls(second))
    keys = [key for _, _, key in world.cancel_calls(second)]
    # NAVER keeps its refusal under the first key: the resend is the next round, stored before.
    assert keys == [refund.idempotency_key.split("-")[0], refund.idempotency_key]
    assert refund.idempotency_key.endswith("-1")
    assert [c[1] for c in world.cancel_calls(second)] == ["PreCancelNotComplete", "Success"]
    assert world.refund(second).expected_rest == 2900  # 9900 - 4000 (completing counts) - 3000


def test_server_error_after_the_refund_is_resolved_through_history_without_resend(world):
    charge_id = world.paid_charge(9900)
    world.sandbox.cancel_script({"status": 500, "afterCommit": True})
    refund_id = world.request(charge_id, 2000)
    assert world.run(refund_id).status == "succeeded"
    calls = world.calls(refund_id)
    assert [(k, o) for k, o, _, _ in calls] == [("cancel", "unknownoutcome"), ("cancel_history", "ok")]
    assert len(world.naver_cancels(charge_id)) == 1
    assert world.refund(refund_id).uncertain_since is not None


@pytest.mark.parametrize("status", [500, 502, 504])
def test_server_error_before_the_refund_is_resent_with_the_same_key_after_history(world, status):
    charge_id = world.paid_charge(9900)
    world.sandbox.cancel_script({"status": status})
    refund_id = world.request(charge_id, 2000)
    assert world.run(refund_id).status == "succeeded"
    kinds = [(k, o) for k, o, _, _ in world.calls(refund_id)]
    assert kinds == [("cancel", "unknownoutcome"), ("cancel_history", "ok"), ("cancel", "ok")]
    assert len({key for _, _, key in world.cancel_calls(refund_id)}) == 1
    assert len(world.naver_cancels(charge_id)) == 1


def test_503_is_not_processed_retried_in_the_call_then_later(world):
    charge_id = world.paid_charge(9900)
    world.sandbox.cancel_script(*[{"status": 503}] * 3)
    refund_id = world.request(charge_id, 2000)
    assert world.run(refund_id).status == "requested"  # never "unknown": 503 = not processed
    assert [c[0] for c in world.cancel_calls(refund_id)] == ["transient"] * 3
    assert world.refund(refund_id).uncertain_since is None
    world.later(30)
    assert world.run(refund_id).status == "succeeded"


def test_lost_answer_is_resolved_through_history(db, sandbox_url):
    world = RefundWorld(db, sandbox_url, approval_timeout=0.5)
    try:
        charge_id = world.paid_charge(9900)
        world.sandbox.cancel_script({"holdSeconds": 1.5, "afterCommit": True})
        refund_id = world.request(charge_id, 2000)
        assert world.run(refund_id).status == "succeeded"
        assert [c[0] for c in world.cancel_calls(refund_id)] == ["unknownoutcome"]
        assert len(world.naver_cancels(charge_id)) == 1
    finally:
        world.close()


@pytest.mark.parametrize("code", ["AlreadyCanceled", "RestAmountDiff", "OverRemainAmount"])
def test_refusal_of_a_resend_is_resolved_through_history(world, code):
    """The first send went through but its answer was lost; history lags, so the resend goes
    out (same key) and NAVER refuses it: history, once it shows the cancel, says it was ours."""
    charge_id = world.paid_charge(9900)
    # NAVER no longer honours the key (retention 0), so the resend is processed again.
    world.sandbox.configure(cancelReflectSeconds=30, idempotencyRetentionSeconds=0)
    world.sandbox.cancel_script({"status": 502, "afterCommit": True}, {"code": code})
    refund_id = world.request(charge_id, 2000)
    out = world.run(refund_id)
    refund = world.refund(refund_id)
    assert (out.status, refund.last_code) == ("unknown", code)  # not failed: it may be ours
    assert world.events() == []
    world.later(31)
    assert world.run(refund_id).status == "succeeded"
    assert [c[1] for c in world.cancel_calls(refund_id)] == ["ServerError", code]
    assert world.charge_row(charge_id).refund_total == 2000
    assert len(world.naver_cancels(charge_id)) == 1


def test_refusal_of_a_resend_with_no_trace_in_history_fails_after_the_settle_window(world):
    charge_id = world.paid_charge(9900)
    world.sandbox.cancel_script({"status": 502}, {"code": "OverRemainAmount"})  # nothing refunded
    refund_id = world.request(charge_id, 2000)
    assert world.run(refund_id).status == "unknown"
    world.later(30)
    assert world.run(refund_id).status == "unknown"  # within the settle window: look again later
    world.later(40)
    out = world.run(refund_id)
    refund = world.refund(refund_id)
    assert out.status == "failed" and "history shows no cancel of ours" in refund.last_message
    assert world.charge_row(charge_id).refund_total == 0  # the amount is free again
    assert world.events() == [("refund.failed", f"refund.failed:{refund_id}")]


def test_rest_amount_diff_on_a_first_send_fails_clearly(world):
    charge_id = world.paid_charge(9900)
    world.outside_cancel(charge_id, 1000)
    refund_id = world.request(charge_id, 2000)
    assert world.run(refund_id).status == "failed"
    message = world.refund(refund_id).last_message
    assert "RestAmountDiff" in message and "remaining amount is 8900 won" in message
    assert "expected 9900 won before this refund" in message
    assert world.charge_row(charge_id).refund_total == 0
    assert world.events() == [("refund.failed", f"refund.failed:{refund_id}")]
    assert len(world.naver_cancels(charge_id)) == 1  # only the outside one


def test_already_canceled_on_a_first_send_fails_clearly(world):
    charge_id = world.paid_charge(9900)
    world.outside_cancel(charge_id, 9900)
    refund_id = world.request(charge_id, 2000)
    assert world.run(refund_id).status == "failed"
    assert "already fully canceled" in world.refund(refund_id).last_message


def test_over_remain_amount_on_a_first_send_fails_clearly(world):
    charge_id = world.paid_charge(9900)
    world.sandbox.cancel_script({"code": "OverRemainAmount"})
    refund_id = world.request(charge_id, 2000)
    assert world.run(refund_id).status == "failed"
    assert "more than NAVER has left" in world.refund(refund_id).last_message
    assert world.request(charge_id, 9900)  # the amount is refundable again


def test_merchant_side_fault_holds_alerts_and_resumes_with_a_new_key_round(world):
    charge_id = world.paid_charge(9900)
    good = world.client
    world.client = bad_credentials_client(world.url)
    refund_id = world.request(charge_id, 2000)
    out = world.run(refund_id)
    refund = world.refund(refund_id)
    assert (out.status, refund.held_from) == ("held", "requested")
    assert world.events() == [("refund.held", f"refund.held:refund-{refund_id}-0")]
    assert world.naver_cancels(charge_id) == []
    world.client.close()
    world.client = good  # credentials fixed
    assert world.run(refund_id).status == "held"  # not due yet
    world.later(70)
    assert world.run(refund_id).status == "succeeded"
    after = world.refund(refund_id)
    assert after.idempotency_key == f"{refund.idempotency_key}-1" and after.key_round == 1
    assert world.naver_cancels(charge_id)[0]["key"] == after.idempotency_key


def test_a_refund_held_by_another_run_is_not_sent(world):
    charge_id = world.paid_charge(9900)
    refund_id = world.request(charge_id, 2000)
    world.db.sql("UPDATE refunds SET lease_owner = 'other', lease_until = :t WHERE id = :i",
                 t=world.clock.now.replace(year=2030), i=refund_id)
    out = world.run(refund_id)
    assert out.busy and out.status == "requested"
    assert world.calls(refund_id) == []


@pytest.mark.parametrize("sent", [True, False])
def test_a_run_that_died_in_cancelling_asks_history_first(world, sent):
    charge_id = world.paid_charge(9900)
    refund_id = world.request(charge_id, 2000)
    refund = world.refund(refund_id)
    world.db.sql("UPDATE refunds SET status = 'cancelling', expected_rest = 7900, send_count = 1, "
                 "last_sent_at = :t WHERE id = :i", t=world.clock(), i=refund_id)
    if sent:  # the dead run's cancel reached NAVER
        payment_id = world.charge_row(charge_id).payment_id
        world.client.cancel_payment(payment_id=payment_id, cancel_amount=2000, tax_scope_amount=2000,
                                    tax_ex_scope_amount=0, reason="x", idempotency_key=refund.idempotency_key,
                                    expected_rest_amount=7900,
                                    merchant_pay_transaction_key=refund.idempotency_key)
    assert world.run(refund_id).status == "succeeded"
    kinds = [k for k, _, _, _ in world.calls(refund_id)]
    assert kinds == (["cancel_history"] if sent else ["cancel_history", "cancel"])
    assert len(world.naver_cancels(charge_id)) == 1


def test_an_older_unsettled_refund_of_the_charge_goes_first(world):
    charge_id = world.paid_charge(9900)
    first, second = world.request(charge_id, 1000), world.request(charge_id, 1000)
    assert world.run(second).status == "requested"  # waits for the first
    assert world.calls(second) == []
    assert world.run(first).status == "succeeded"
    world.later(10)
    assert world.run(second).status == "succeeded"


def test_walk_claims_due_refunds_once_and_surfaces_stuck_ones(world):
    charge_id = world.paid_charge(9900)
    refund_id = world.request(charge_id, 1000)
    with world.db.sessions.begin() as s:
        assert claim_due_refunds(s, world.clock(), 100, world.engine.lease) == []  # just enqueued
    world.clock.advance(seconds=120)
    with world.db.sessions.begin() as s:
        assert claim_due_refunds(s, world.clock(), 100, world.engine.lease) == [refund_id]
    with world.db.sessions.begin() as s:
        assert claim_due_refunds(s, world.clock(), 100, world.engine.lease) == []  # claimed
    with world.db.sessions.begin() as s:
        assert surface_stuck_refunds(s, world.clock(), world.engine.lease) == 0
    world.clock.advance(seconds=3600)
    with world.db.sessions.begin() as s:
        assert surface_stuck_refunds(s, world.clock(), world.engine.lease) == 1
    with world.db.sessions.begin() as s:
        assert surface_stuck_refunds(s, world.clock(), world.engine.lease) == 0  # once
    assert ("refund.stuck", f"refund.stuck:refund-{refund_id}") in world.events()


@pytest.mark.parametrize("code", ["InvalidParameter", "RequireParameter", "InvalidMerchant"])
def test_merchant_side_codes_hold_and_never_fail_the_refund(world, code):
    charge_id = world.paid_charge(9900)
    world.sandbox.cancel_script({"code": code})
    refund_id = world.request(charge_id, 2000)
    assert world.run(refund_id).status == "held"
    assert world.charge_row(charge_id).refund_total == 2000  # still reserved: not failed
    world.later(70)
    assert world.run(refund_id).status == "succeeded"
    assert len(world.naver_cancels(charge_id)) == 1


def test_an_unknown_code_is_an_unknown_outcome_resolved_through_history(world):
    charge_id = world.paid_charge(9900)
    world.sandbox.cancel_script({"code": "BrandNewCode2027"})
    refund_id = world.request(charge_id, 2000)
    assert world.run(refund_id).status == "unknown"  # history gets the settle window first
    world.later(70)
    assert world.run(refund_id).status == "succeeded"
    calls = world.calls(refund_id)
    assert [(k, o) for k, o, _, _ in calls] == [("cancel", "unknownoutcome"), ("cancel_history", "ok"),
                                                ("cancel", "ok")]
    # NAVER keeps the unknown answer under the first key: the resend is the next round.
    assert calls[2][3] == calls[0][3] + "-1"
    assert len(world.naver_cancels(charge_id)) == 1


def test_a_merchant_whose_secret_is_missing_holds_the_refund(world, monkeypatch):
    charge_id = world.paid_charge(9900)
    refund_id = world.request(charge_id, 2000)
    good = world.engine.client_for

    def missing(_merchant):
        raise ValueError("environment variable SHOP_SECRET (client_secret_env) is not set")

    object.__setattr__(world.engine, "client_for", missing)
    out = world.run(refund_id)
    refund = world.refund(refund_id)
    assert out.status == "held" and "SHOP_SECRET" in refund.last_message
    object.__setattr__(world.engine, "client_for", good)
    world.later(70)
    assert world.run(refund_id).status == "succeeded"
