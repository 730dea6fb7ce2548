"""The charge state machine against the real sandbox (HTTP on loopback) and real databases.

Clock and sleeps are injected; Celery is not involved here (see test_celery_integration for
the same invariants through real worker processes).
"""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
import sqlalchemy as sa

from models import Charge, ChargeAttempt, Notification
from scheduler.walk import walk
from tests.worker.billing import Clock, Sandbox, Sleeps, make_client, make_engine
from worker.charging import process_charge
from worker.finalize import expire_registration
from worker.manual import RetryRefused, prepare_retry


class World:
    """A database, the sandbox, a client and an engine, with a hand-moved clock."""

    def __init__(self, db, sandbox_url, **client_overrides):
        self.db, self.sandbox = db, Sandbox(sandbox_url)
        self.clock, self.sleeps = Clock(), Sleeps()
        self.client = make_client(sandbox_url, **client_overrides)
        self.engine = make_engine(db, self.client, self.clock, self.sleeps)
        db.sql("UPDATE merchants SET min_cycle_interval = '1s' WHERE id = 1")  # 5-second cycles

    def subscribe(self, behaviour=None, amount=9900, **columns):
        recurrent_id = self.sandbox.register(behaviour=behaviour)
        cols = {"recurrent_id": recurrent_id, "merchant_user_id": "user-1", "product_code": "PLAN-M",
                "product_name": "월간 구독", "amount": amount, "cron": "* * * * * */5", **columns}
        self.db.sql(f"INSERT INTO subscriptions ({', '.join(cols)}) "
                    f"VALUES ({', '.join(':' + c for c in cols)})", **cols)
        return recurrent_id

    def due_charge(self):
        walk(self.db.sessions, self.clock())
        report = walk(self.db.sessions, self.clock.advance(seconds=5))
        assert len(report.new_charge_ids) == 1
        return report.new_charge_ids[0]

    def run(self, charge_id, owner="test"):
        return process_charge(self.engine, charge_id, owner)

    def charge(self, charge_id):
        with self.db.sessions() as s:
            return s.get(Charge, charge_id)

    def attempts(self, charge_id):
        with self.db.sessions() as s:
            return [(a.kind, a.outcome, a.result_code) for a in s.scalars(
                sa.select(ChargeAttempt).where(ChargeAttempt.charge_id == charge_id)
                .order_by(ChargeAttempt.id))]

    def reserve_by_hand(self, rid, charge):
        """Attempt 1's reservation, made exactly as the engine makes it (same keys)."""
        return self.client.reserve_payment(
            recurrent_id=rid, total_pay_amount=9900, tax_scope_amount=9900, tax_ex_scope_amount=0,
            product_name="월간 구독", merchant_pay_id=f"{charge.merchant_pay_id}-1",
            merchant_user_id="user-1", idempotency_key=f"{charge.merchant_pay_id}-1-reserve")

    def policy(self, **columns):
        sets = ", ".join(f"{k} = :{k}" for k in columns)
        self.db.sql(f"UPDATE merchants SET {sets} WHERE id = 1", **columns)


@pytest.fixture
def world(db, sandbox_url):
    w = World(db, sandbox_url)
    yield w
    w.client.close()


def test_happy_path_reserve_then_approve(world):
    rid = world.subscribe()
    charge_id = world.due_charge()
    out = world.run(charge_id)
    charge = world.charge(charge_id)
    assert out.status == "succeeded" == charge.status
    assert charge.approved_amount == 9900 and charge.attempt_count == 1
    assert [p["totalPayAmount"] for p in world.sandbox.approved(rid)] == [9900]
    assert world.sandbox.approved(rid)[0]["paymentId"] == charge.payment_id
    assert world.attempts(charge_id) == [("reserve", "ok", "Success"), ("approve", "ok", "Success")]


def test_a_second_delivery_of_the_same_charge_does_nothing(world):
    rid = world.subscribe()
    charge_id = world.due_charge()
    world.run(charge_id, owner="first")
    out = world.run(charge_id, owner="second")  # a redelivered message
    assert out.status == "succeeded"
    assert len(world.sandbox.approved(rid)) == 1
    assert len(world.attempts(charge_id)) == 2  # no further NAVER call


def test_concurrent_runs_of_one_charge_charge_once(world):
    rid = world.subscribe(behaviour={"latencyMs": 300})
    charge_id = world.due_charge()
    outcomes = []
    barrier = threading.Barrier(3)

    def run(owner):
        barrier.wait()
        outcomes.append(world.run(charge_id, owner=owner))

    threads = [threading.Thread(target=run, args=(f"w{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(o.busy for o in outcomes) == [False, True, True]
    assert world.charge(charge_id).status == "succeeded"
    assert len(world.sandbox.approved(rid)) == 1


def test_timeout_after_naver_charged_is_resolved_through_history(db, sandbox_url):
    world = World(db, sandbox_url, approval_timeout=0.5)
    rid = world.subscribe(behaviour={"timeoutAfterCommitTimes": 1, "timeoutSeconds": 2})
    charge_id = world.due_charge()
    out = world.run(charge_id)
    assert out.status == "succeeded"
    kinds = [a[:2] for a in world.attempts(charge_id)]
    assert kinds[:3] == [("reserve", "ok"), ("approve", "unknownoutcome"), ("history", "ok")]
    approved = world.sandbox.approved(rid)
    assert len(approved) == 1 and approved[0]["approvalRequests"] == 1  # never approved again
    world.client.close()


def test_worker_died_after_sending_approval(world):
    """The run died after NAVER charged but before we stored the answer ("approving")."""
    rid = world.subscribe()
    charge_id = world.due_charge()
    charge = world.charge(charge_id)
    reservation = world.reserve_by_hand(rid, charge)
    world.client.approve_payment(recurrent_id=rid, payment_id=reservation.payment_id,
                                 idempotency_key=f"{charge.merchant_pay_id}-1-approve")
    world.db.sql("UPDATE charges SET status = 'approving', attempt_count = 1, payment_id = :p",
                 p=reservation.payment_id)
    out = world.run(charge_id)
    assert out.status == "succeeded"
    assert [a[0] for a in world.attempts(charge_id)] == ["history"]  # resolved, not re-approved
    assert world.sandbox.approved(rid)[0]["approvalRequests"] == 1


def test_worker_died_before_sending_approval(world):
    """"approving" but NAVER never saw the approval: history is empty, so approve (same key)."""
    rid = world.subscribe()
    charge_id = world.due_charge()
    charge = world.charge(charge_id)
    reservation = world.reserve_by_hand(rid, charge)
    world.db.sql("UPDATE charges SET status = 'approving', attempt_count = 1, payment_id = :p",
                 p=reservation.payment_id)
    out = world.run(charge_id)
    assert out.status == "succeeded"
    assert [a[0] for a in world.attempts(charge_id)] == ["history", "approve"]
    assert len(world.sandbox.approved(rid)) == 1


def test_server_errors_are_retried_in_the_task_with_the_same_key(world):
    rid = world.subscribe(behaviour={"serverErrorTimes": 2, "serverErrorStatus": 503})
    charge_id = world.due_charge()
    out = world.run(charge_id)
    assert out.status == "succeeded"
    approves = [a for a in world.attempts(charge_id) if a[0] == "approve"]
    assert [a[1] for a in approves] == ["transient", "transient", "ok"]
    assert len(world.sleeps.calls) == 2  # tenacity waited (injected sleep), did not block
    assert len(world.sandbox.approved(rid)) == 1


def test_decline_then_recovery_within_the_policy(world):
    world.policy(retry_delays="30s", max_attempts=3)
    rid = world.subscribe(behaviour={"declineCode": "NotEnoughAccountBalance", "declineTimes": 1})
    charge_id = world.due_charge()
    out = world.run(charge_id)
    charge = world.charge(charge_id)
    assert out.status == "retry_wait" and charge.last_code == "NotEnoughAccountBalance"
    assert charge.next_attempt_at == world.clock() + timedelta(seconds=30)
    assert world.run(charge_id).status == "retry_wait"  # not due yet: nothing happens
    world.clock.advance(seconds=31)
    report = walk(world.db.sessions, world.clock())
    assert report.retry_charge_ids == [charge_id]
    assert world.run(charge_id).status == "succeeded"
    assert world.charge(charge_id).attempt_count == 2
    states = sorted(p["state"] for p in world.sandbox.payments(rid))
    assert states == ["APPROVED", "DECLINED"]


def test_decline_until_the_policy_gives_up_expires_and_notifies_once(world):
    world.policy(retry_delays="10s", max_attempts=2)
    rid = world.subscribe(behaviour={"declineCode": "NotEnoughAccountBalance"})
    charge_id = world.due_charge()
    assert world.run(charge_id).status == "retry_wait"
    world.clock.advance(seconds=11)
    out = world.run(charge_id)
    assert out.status == "failed"
    assert out.expire_subscription_id is not None
    status = world.db.sql("SELECT status FROM subscriptions")[0][0]
    assert status == "revoking"
    assert expire_registration(world.db.sessions, lambda m: world.client, out.expire_subscription_id,
                               world.clock, world.sleeps) == "revoked"
    assert world.sandbox.registration(rid)["state"] == "EXPIRED"
    # a second expire run (a redelivered task) changes nothing and calls nobody
    assert expire_registration(world.db.sessions, lambda m: world.client, out.expire_subscription_id,
                               world.clock, world.sleeps) == "revoked"
    with world.db.sessions() as s:
        notes = s.scalars(sa.select(Notification)).all()
    assert [(n.event, n.status) for n in notes] == [("charge.final_failure", "no_channel")]
    assert "최종 실패" in notes[0].payload
    assert world.sandbox.approved(rid) == []


def test_non_retryable_decline_fails_at_once_and_pauses_per_policy(world):
    world.policy(final_action="pause")
    world.subscribe(behaviour={"declineCode": "OwnerAuthFail"})
    charge_id = world.due_charge()
    out = world.run(charge_id)
    assert out.status == "failed" and out.expire_subscription_id is None
    assert world.db.sql("SELECT status FROM subscriptions")[0][0] == "paused"


def test_approved_amount_must_equal_reserved_amount(world):
    """NAVER approved an amount other than this charge's: flagged, never reported as success."""
    rid = world.subscribe()
    charge_id = world.due_charge()
    charge = world.charge(charge_id)
    # The reservation went out for 9,900 won, but the charge row says 10,000 (a row edited
    # by hand mid-flight, or any bug that makes the two disagree).
    reservation = world.reserve_by_hand(rid, charge)
    world.db.sql("UPDATE charges SET status = 'reserved', attempt_count = 1, payment_id = :p, "
                 "amount = 10000", p=reservation.payment_id)
    out = world.run(charge_id)
    charge = world.charge(charge_id)
    assert out.status == "amount_mismatch"
    assert charge.approved_amount == 9900
    assert "approved 9900 won but reserved 10000" in charge.last_message


@pytest.mark.parametrize("new_status", ["paused", "canceled"])
def test_pause_or_cancel_during_retries_stops_attempts(world, new_status):
    world.policy(retry_delays="10s", max_attempts=5)
    rid = world.subscribe(behaviour={"declineCode": "NotEnoughAccountBalance"})
    charge_id = world.due_charge()
    assert world.run(charge_id).status == "retry_wait"
    world.db.sql("UPDATE subscriptions SET status = :s", s=new_status)
    world.clock.advance(seconds=11)
    assert world.run(charge_id).status == "canceled"
    assert len(world.sandbox.payments(rid)) == 1  # no new reservation after the pause


def test_manual_retry_rules(world):
    world.policy(retry_delays="1h", max_attempts=2)
    world.subscribe(behaviour={"declineCode": "NotEnoughAccountBalance", "declineTimes": 1})
    charge_id = world.due_charge()
    assert world.run(charge_id).status == "retry_wait"
    # retry_wait: the next attempt is moved to now, and it succeeds
    decision = prepare_retry(world.db.sessions, str(charge_id), world.clock())
    assert decision.action == "due_now"
    assert world.run(charge_id).status == "succeeded"
    # succeeded: refused, never a second charge for the cycle
    with pytest.raises(RetryRefused, match="already succeeded"):
        prepare_retry(world.db.sessions, str(charge_id), world.clock())
    with pytest.raises(RetryRefused, match="no charge with id 999"):
        prepare_retry(world.db.sessions, "999", world.clock())
    with pytest.raises(RetryRefused, match="no subscription with recurrentId"):
        prepare_retry(world.db.sessions, "RE-nope", world.clock())


def test_manual_retry_reopens_a_failed_charge_only_when_asked(world):
    world.policy(final_action="none", max_attempts=1)
    rid = world.subscribe(behaviour={"declineCode": "NotEnoughAccountBalance", "declineTimes": 1})
    charge_id = world.due_charge()
    assert world.run(charge_id).status == "failed"
    with pytest.raises(RetryRefused, match="--reopen"):
        prepare_retry(world.db.sessions, rid, world.clock())
    decision = prepare_retry(world.db.sessions, rid, world.clock(), reopen=True)
    assert (decision.charge_id, decision.action) == (charge_id, "reopened")
    assert world.run(charge_id).status == "succeeded"
    assert len(world.sandbox.approved(rid)) == 1


def test_an_unreadable_max_attempts_written_by_sql_falls_back_to_the_default_policy(world, caplog):
    """SQLite keeps text an operator's UPDATE put in an INTEGER column (after the walk created the
    charge); a decline then uses the default policy and says why, instead of crashing the run
    (and every later one)."""
    if world.db.dialect != "sqlite":
        pytest.skip("PostgreSQL refuses text in an integer column at the UPDATE")
    rid = world.subscribe(behaviour={"declineCode": "NotEnoughAccountBalance", "declineTimes": 1})
    charge_id = world.due_charge()  # (the walk refuses to create charges under a bad policy)
    world.db.sql("UPDATE merchants SET max_attempts = 'three' WHERE id = 1")  # edited afterwards
    with caplog.at_level("ERROR", logger="worker.charging"):
        out = world.run(charge_id)
    assert out.status == "retry_wait" and world.charge(charge_id).next_attempt_at is not None
    assert ("max_attempts must be a whole number, 1 or more, got 'three'; using the default policy"
            in caplog.text)
    assert world.sandbox.approved(rid) == []
