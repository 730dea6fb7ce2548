"""Property: whatever sequence of partial refunds, lost answers, server errors, deferred cancels and
refused resends happens, NAVER never refunds more than was approved, never refunds one refund
twice, agrees with our books once everything settled, and every cancel is sent with a key the
refund stored. Hypothesis draws the sequences; the sandbox answers over real HTTP (SQLite: the
database does not matter to this property; the racing requests are tested on both)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models import Refund
from tests.worker.refunding import RefundWorld
from worker.refund_requests import RefundRefused

FAULTS = ["none", "not_complete", "error_before", "error_after", "unavailable", "resend_refused",
          "crash_before_call"]
STEPS = st.lists(st.tuples(st.integers(min_value=1, max_value=6000), st.sampled_from(FAULTS)),
                 min_size=1, max_size=5)


def _inject(world: RefundWorld, fault: str) -> None:
    sandbox = world.sandbox
    sandbox.configure(idempotencyRetentionSeconds=None, cancelReflectSeconds=0)
    sandbox.cancel_script()
    if fault == "not_complete":
        sandbox.configure(cancelNotCompleteNext=1, cancelNotCompleteSeconds=20)
    elif fault == "error_before":
        sandbox.cancel_script({"status": 502})
    elif fault == "error_after":
        sandbox.cancel_script({"status": 500, "afterCommit": True})
    elif fault == "unavailable":
        sandbox.cancel_script({"status": 503})
    elif fault == "resend_refused":  # done, answer lost, key forgotten, history late
        sandbox.configure(idempotencyRetentionSeconds=0, cancelReflectSeconds=20)
        sandbox.cancel_script({"status": 504, "afterCommit": True}, {"code": "RestAmountDiff"})


def _settle(world: RefundWorld, refund_id: int) -> None:
    for _ in range(8):
        if world.run(refund_id).status in ("succeeded", "failed"):
            return
        world.later(70)


@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(steps=STEPS)
def test_refunds_never_over_refund_and_match_naver(sqlite_db, sandbox_url, steps):
    world = RefundWorld(sqlite_db, sandbox_url)
    try:
        charge_id = world.paid_charge(9900)
        booked = 0
        for amount, fault in steps:
            try:
                refund_id = world.request(charge_id, amount)
            except RefundRefused:
                assert amount > 9900 - booked  # refused only when it does not fit
                continue
            booked += amount
            _inject(world, fault)
            if fault == "crash_before_call":  # a run died after committing "cancelling"
                sqlite_db.sql("UPDATE refunds SET status = 'cancelling', send_count = 1, "
                              "expected_rest = :e, last_sent_at = :t WHERE id = :i",
                              e=9900 - booked, t=world.clock(), i=refund_id)
            _settle(world, refund_id)
            world.sandbox.configure(idempotencyRetentionSeconds=None, cancelReflectSeconds=0)
            booked = world.charge_row(charge_id).refund_total
        world.later(70)
        with sqlite_db.sessions() as s:
            refunds = list(s.query(Refund).filter(Refund.charge_id == charge_id))
        for refund in refunds:
            _settle(world, refund.id)
        with sqlite_db.sessions() as s:
            refunds = list(s.query(Refund).filter(Refund.charge_id == charge_id))
        naver = world.naver_cancels(charge_id)
        ours = {r.idempotency_key.split("-")[0]: r for r in refunds}
        # Never over-refunded, never one refund twice, and NAVER agrees with our books.
        assert sum(c["amount"] for c in naver) <= 9900
        bases = [c["key"].split("-")[0] for c in naver]
        assert len(bases) == len(set(bases)) and set(bases) <= set(ours)
        assert {b for b in bases} == {b for b, r in ours.items() if r.status == "succeeded"}
        assert all(r.status in ("succeeded", "failed") for r in refunds)
        assert world.charge_row(charge_id).refund_total == sum(r.amount for r in refunds
                                                              if r.status == "succeeded")
        # Every cancel was sent with a key its refund stored (one of the rounds of its own key,
        # each stored before the send that used it).
        for refund in refunds:
            base = refund.idempotency_key.split("-")[0]
            stored = {base} | {f"{base}-{n}" for n in range(1, refund.key_round + 1)}
            assert {key for _, _, key in world.cancel_calls(refund.id)} <= stored
    finally:
        world.close()
