"""Regression tests for the money-path defects of the charge engine (issue 7), against the
real sandbox over loopback and real SQLite and PostgreSQL.

Each test names the defect it pins; each failed on the engine before the hardening.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa

from models import ChargeStatus as CS
from models import Notification
from scheduler.walk import walk
from tests.worker.billing import make_client
from tests.worker.test_charging import World
from worker.charge_store import LeaseLost, acquire_lease, compare_and_set
from worker.charging import ChargeEngine, process_charge
from worker.manual import prepare_retry


class Hardened(World):
    """A world whose NAVER client can be swapped (rotated credentials, a broken proxy)."""

    def __init__(self, db, sandbox_url, **client_overrides):
        super().__init__(db, sandbox_url, **client_overrides)
        self.current = self.client
        self.engine = self.make_engine()

    def make_engine(self, **kwargs) -> ChargeEngine:
        kwargs.setdefault("sleep", self.sleeps)
        return ChargeEngine(sessions=self.db.sessions, client_for=lambda _m: self.current,
                            clock=self.clock, **kwargs)

    def use(self, client):
        self.current = client
        return client

    def notifications(self):
        with self.db.sessions() as s:
            rows = s.scalars(sa.select(Notification).order_by(Notification.id))
            return [(n.event, n.channel) for n in rows]

    def subscription(self):
        return tuple(self.db.sql("SELECT status, last_error FROM subscriptions")[0])

    def to_unknown_without_approval(self, rid):
        """Reserve, then three 500s on the approval: unknown, NAVER approved nothing (a run
        whose call budget ends right there)."""
        charge_id = self.due_charge()
        out = process_charge(self.make_engine(call_budget=4), charge_id, "first")
        assert out.status == "unknown" and self.sandbox.approved(rid) == []
        return charge_id


@pytest.fixture
def world(db, sandbox_url):
    w = Hardened(db, sandbox_url)
    yield w
    w.client.close()


# --- defect 3: merchant-side faults hold, never decline -------------------------------------

def test_wrong_credentials_hold_the_charge_and_never_expire_the_customer(world):
    """Defect 3: HTTP 401 went through the decline policy (final failure on attempt 1, expire)."""
    world.policy(max_attempts=1, webhook_url="http://127.0.0.1:9/hook", webhook_secret="s",
                 notify_email=1)
    rid = world.subscribe(customer_email="c@example.com")
    bad = world.use(make_client(world.sandbox.url, client_secret="rotated-and-wrong"))
    charge_id = world.due_charge()
    out = world.run(charge_id)
    charge = world.charge(charge_id)
    assert out.status == "held" == charge.status
    assert charge.held_from == "reserving" and charge.next_attempt_at > world.clock()
    assert world.subscription()[0] == "active"  # no final action
    assert world.sandbox.registration(rid)["state"] == "VALID"
    # the merchant is alerted (webhook only), the customer hears nothing
    assert world.notifications() == [("charge.held", "webhook")]
    # credentials fixed (no restart: the client is looked up per run); after the backoff the
    # charge resumes where it was held, without consuming an attempt
    world.use(world.client)
    bad.close()
    world.clock.now = charge.next_attempt_at + timedelta(seconds=1)
    out = world.run(charge_id)
    charge = world.charge(charge_id)
    assert out.status == "succeeded" and charge.attempt_count == 1
    assert len(world.sandbox.approved(rid)) == 1


def test_invalid_parameter_on_approval_holds_and_resumes_through_history(world):
    """Defect 3: our request rejected at approval is not the customer's decline."""
    world.policy(max_attempts=1)
    rid = world.subscribe(behaviour={"declineCode": "InvalidParameter", "declineTimes": 1})
    charge_id = world.due_charge()
    out = world.run(charge_id)
    charge = world.charge(charge_id)
    assert out.status == "held" and charge.held_from == "unknown"
    assert charge.last_code == "InvalidParameter" and world.subscription()[0] == "active"
    assert world.notifications() == []  # no webhook configured: logged only, never the customer
    world.clock.now = charge.next_attempt_at
    assert world.run(charge_id).status == "succeeded"
    kinds = [a[0] for a in world.attempts(charge_id)]
    assert kinds == ["reserve", "approve", "history", "approve"]  # history before the resend
    assert len(world.sandbox.approved(rid)) == 1 and world.charge(charge_id).attempt_count == 1


def test_a_proxy_answering_404_holds_the_charge(world):
    """Defect 3: an unexpected 4xx without a NAVER code (a proxy, a WAF) is ours, not a decline."""
    world.policy(max_attempts=1)
    rid = world.subscribe()
    world.use(make_client(world.sandbox.url + "/behind-a-broken-proxy"))
    charge_id = world.due_charge()
    assert world.run(charge_id).status == "held"
    assert world.subscription()[0] == "active"
    assert world.sandbox.registration(rid)["state"] == "VALID"


def test_a_held_charge_is_resumed_by_hand_without_consuming_an_attempt(world):
    """Defect 3: `npay-billing retry` on a held charge resumes it now."""
    world.subscribe()
    world.use(make_client(world.sandbox.url, client_secret="wrong"))
    charge_id = world.due_charge()
    assert world.run(charge_id).status == "held"
    world.use(world.client)
    assert prepare_retry(world.db.sessions, str(charge_id), world.clock()).action == "resume_now"
    assert world.run(charge_id).status == "succeeded"
    assert world.charge(charge_id).attempt_count == 1


def test_a_held_charge_of_a_paused_subscription_is_canceled(world):
    """Defects 3 and 5: cancel wins over a held charge too."""
    rid = world.subscribe()
    world.use(make_client(world.sandbox.url, client_secret="wrong"))
    charge_id = world.due_charge()
    assert world.run(charge_id).status == "held"
    world.db.sql("UPDATE subscriptions SET status = 'paused'")
    world.use(world.client)
    world.clock.advance(hours=2)
    assert world.run(charge_id).status == "canceled"
    assert world.sandbox.approved(rid) == []


# --- defect 4: a decline resolved through history --------------------------------------------

def test_decline_found_in_history_is_judged_by_the_history_row_not_a_stale_code(world):
    """Defect 4: after a crash mid-approval last_code holds the reserve's ``Success``; the
    decline found in history was judged by it (not retryable: final failure, expiry)."""
    world.policy(retry_delays="10s", max_attempts=3)
    rid = world.subscribe(behaviour={"declineCode": "NotEnoughAccountBalance", "declineTimes": 1})
    charge_id = world.due_charge()
    charge = world.charge(charge_id)
    reservation = world.reserve_by_hand(rid, charge)
    with pytest.raises(Exception):  # noqa: B017 - the decline our dead worker never recorded
        world.client.approve_payment(recurrent_id=rid, payment_id=reservation.payment_id,
                                     idempotency_key=f"{charge.merchant_pay_id}-1-approve")
    world.db.sql("UPDATE charges SET status = 'approving', attempt_count = 1, payment_id = :p, "
                 "last_code = 'Success'", p=reservation.payment_id)
    out = world.run(charge_id)
    charge = world.charge(charge_id)
    assert out.status == "retry_wait", charge.reason
    assert charge.last_code == "Fail"  # history carries no code: NAVER's generic decline
    assert world.subscription()[0] == "active"
    world.clock.advance(seconds=11)
    assert world.run(charge_id).status == "succeeded"


# --- defect 5: cancel wins for unknown / approving --------------------------------------------

@pytest.mark.parametrize("new_status", ["paused", "canceled"])
def test_unknown_approval_is_not_resent_after_the_customer_cancels(world, new_status):
    """Defect 5: an approval that failed before NAVER committed stayed ``unknown`` and was
    re-sent after the cancel, ending ``succeeded``."""
    rid = world.subscribe(behaviour={"serverErrorTimes": 3})
    charge_id = world.to_unknown_without_approval(rid)
    world.db.sql("UPDATE subscriptions SET status = :s", s=new_status)
    world.clock.advance(minutes=10)
    out = world.run(charge_id)
    assert out.status == "canceled"
    assert "history shows no approval" in world.charge(charge_id).reason
    assert world.sandbox.approved(rid) == []
    assert [a[0] for a in world.attempts(charge_id)][-1] == "history"  # no approval sent


def test_unknown_approval_that_went_through_is_succeeded_even_after_a_cancel(world):
    """Defect 5: history first: if NAVER has the approval, the charge is ``succeeded``."""
    rid = world.subscribe()
    charge_id = world.due_charge()
    charge = world.charge(charge_id)
    reservation = world.reserve_by_hand(rid, charge)
    world.client.approve_payment(recurrent_id=rid, payment_id=reservation.payment_id,
                                 idempotency_key=f"{charge.merchant_pay_id}-1-approve")
    world.db.sql("UPDATE charges SET status = 'unknown', attempt_count = 1, payment_id = :p",
                 p=reservation.payment_id)
    world.db.sql("UPDATE subscriptions SET status = 'canceled'")
    assert world.run(charge_id).status == "succeeded"
    assert len(world.sandbox.approved(rid)) == 1


def test_an_approval_that_may_still_land_is_not_canceled_before_it_settles(world):
    """Defect 5 / invariant 7, found by the property suite: our client gave up on an approval
    that NAVER committed later. Cancelling on an empty history right away let that late
    approval land on a ``canceled`` charge; history is trusted only after the settle window."""
    rid = world.subscribe(behaviour={"serverErrorTimes": 3})
    charge_id = world.to_unknown_without_approval(rid)
    charge = world.charge(charge_id)
    world.db.sql("UPDATE subscriptions SET status = 'canceled'")
    world.clock.advance(seconds=30)
    out = world.run(charge_id)
    assert out.status == "unknown"  # waits: history may not show the approval yet
    assert world.charge(charge_id).lease_until >= world.clock() + timedelta(seconds=60)
    # the request the client gave up on lands at NAVER now (same key: the engine's own)
    world.client.approve_payment(recurrent_id=rid, payment_id=charge.payment_id,
                                 idempotency_key=f"{charge.merchant_pay_id}-1-approve")
    world.clock.advance(minutes=2)
    assert world.run(charge_id).status == "succeeded"  # recorded as the money it is
    assert len(world.sandbox.approved(rid)) == 1


def test_cancel_between_two_tries_of_one_approval_stops_the_resend(world):
    """Invariant 7, found by the property suite: tenacity's retry of a failed approval was
    resent without reading the subscription again."""
    rid = world.subscribe(behaviour={"serverErrorTimes": 1})
    charge_id = world.due_charge()
    cancel = lambda _seconds: world.db.sql("UPDATE subscriptions SET status = 'canceled'")  # noqa: E731
    out = process_charge(world.make_engine(sleep=cancel), charge_id, "run")
    assert out.status == "unknown"
    assert [a[0] for a in world.attempts(charge_id)].count("approve") == 1  # no second try
    world.clock.advance(minutes=3)  # past the settle window: history decides, then cancel
    assert world.run(charge_id).status == "canceled"
    assert world.sandbox.approved(rid) == []


def test_a_held_older_cycle_does_not_block_newer_ones_silently(world):
    """Defect 14 / finding of the property suite: a newer cycle waited for ever behind a held
    one. A held charge has alerted the merchant, so newer cycles go on."""
    rid = world.subscribe()
    world.use(make_client(world.sandbox.url, client_secret="wrong"))
    older = world.due_charge()
    assert world.run(older).status == "held"
    world.use(world.client)
    (newer,) = walk(world.db.sessions, world.clock.advance(seconds=5)).new_charge_ids
    assert world.run(newer).status == "succeeded"
    world.clock.now = world.charge(older).next_attempt_at
    assert world.run(older).status == "succeeded"  # both cycles are owed, each billed once
    assert len(world.sandbox.approved(rid)) == 2


# --- defect 10: the lease is renewed and owned -----------------------------------------------

def test_a_run_that_lost_its_lease_writes_nothing(world):
    """Defect 10: a stale run's transition overwrote a live one (status-only compare-and-set)."""
    rid = world.subscribe()
    charge_id = world.due_charge()
    stale = acquire_lease(world.db.sessions, charge_id, "stale", world.clock(), timedelta(minutes=6))
    assert stale is not None
    world.clock.advance(minutes=7)  # the stale run overstayed; a new run takes over
    assert world.run(charge_id, owner="live").status == "succeeded"
    with world.db.sessions.begin() as s, pytest.raises(LeaseLost):
        compare_and_set(s, stale, (CS.SUCCEEDED, CS.PENDING), CS.FAILED, world.clock(), owner="stale")
    assert world.charge(charge_id).status == "succeeded"
    assert len(world.sandbox.approved(rid)) == 1


def test_every_step_renews_the_lease(world):
    """Defect 10: the lease was set once and never renewed."""
    world.subscribe()
    charge_id = world.due_charge()
    ticking = TickingClient(world.client, world.clock, seconds=100,
                            observe=lambda: world.charge(charge_id).lease_until)
    world.use(ticking)
    world.engine = world.make_engine(max_run=timedelta(minutes=5))
    out = world.run(charge_id)
    assert out.status == "succeeded"
    # 100 s per call: the lease seen before the approval was renewed after the reserve
    first, second = ticking.seen
    assert second - first >= timedelta(seconds=100)


def test_a_run_stops_before_outliving_its_lease(world):
    """Defect 10: one run could take far longer than the lease (and the threads pool ignores
    Celery's time limits); a second run could then start on the same charge."""
    rid = world.subscribe()
    charge_id = world.due_charge()
    world.use(TickingClient(world.client, world.clock, seconds=200))
    out = world.run(charge_id)  # limit: half the 6-minute lease
    charge = world.charge(charge_id)
    assert out.status == "reserved"  # stopped before the approval that would overrun
    assert charge.lease_until > world.clock()  # comes back after a backoff
    world.use(world.client)
    world.clock.now = charge.lease_until + timedelta(seconds=1)
    assert world.run(charge_id).status == "succeeded"
    assert len(world.sandbox.approved(rid)) == 1


# --- defect 14: one registration's cycles run oldest first ------------------------------------

def test_a_newer_cycle_waits_for_an_older_open_one(world):
    """Defect 14: the next cycle took the lease and succeeded while the older was ``approving``;
    the older then failed finally and revoked the subscription right after a success."""
    world.policy(max_attempts=1)
    rid = world.subscribe(behaviour={"declineCode": "NotEnoughAccountBalance", "declineTimes": 1})
    older = world.due_charge()
    charge = world.charge(older)
    reservation = world.reserve_by_hand(rid, charge)
    world.db.sql("UPDATE charges SET status = 'approving', attempt_count = 1, payment_id = :p",
                 p=reservation.payment_id)  # a worker died mid-approval
    (newer,) = walk(world.db.sessions, world.clock.advance(seconds=5)).new_charge_ids
    out = world.run(newer)
    assert out.status == "pending" and world.attempts(newer) == []  # waits, calls nobody
    # the older cycle resolves first (history: nothing; the resend is declined: final)
    assert world.run(older).status == "failed"
    world.clock.advance(minutes=2)
    assert world.run(newer).status == "canceled"  # the final action expired the registration


def test_a_final_failure_never_revokes_after_a_later_cycle_succeeded(world):
    """Defect 14: an older cycle surfaced to a human lets newer ones go on; if it then fails
    finally, the registration that just worked is kept, and the reason says so."""
    world.policy(max_attempts=1)
    rid = world.subscribe()
    older = world.due_charge()
    charge = world.charge(older)
    reservation = world.reserve_by_hand(rid, charge)
    world.db.sql("UPDATE charges SET status = 'approving', attempt_count = 1, payment_id = :p, "
                 "surfaced_at = created_at", p=reservation.payment_id)
    (newer,) = walk(world.db.sessions, world.clock.advance(seconds=5)).new_charge_ids
    assert world.run(newer).status == "succeeded"  # the older one is surfaced: no wait
    world.sandbox.http.post(f"/_sandbox/registrations/{rid}/behaviour",
                            json={"declineCode": "NotEnoughAccountBalance"}).raise_for_status()
    assert world.run(older).status == "failed"
    assert f"later cycle (charge {newer}) succeeded" in world.charge(older).reason
    assert world.subscription()[0] == "active"
    assert world.sandbox.registration(rid)["state"] == "VALID"


# --- defect 15: an outage does not become a retry storm --------------------------------------

def test_an_outage_costs_a_bounded_number_of_calls_per_run_and_backs_off(world):
    """Defect 15: each unknown charge sent 12-15 approval requests per run, again after every
    lease, all waking at once."""
    rid = world.subscribe(behaviour={"serverErrorTimes": 3})
    charge_id = world.to_unknown_without_approval(rid)
    world.sandbox.faults(errorRate=1.0, errorStatus=500)  # NAVER is down
    resumes = []
    for _ in range(3):
        before = len(world.attempts(charge_id))
        world.clock.now = max(world.clock(), world.charge(charge_id).lease_until) + timedelta(seconds=1)
        out = world.run(charge_id)
        assert out.status == "unknown" and out.calls <= world.engine.call_budget
        assert len(world.attempts(charge_id)) - before <= world.engine.call_budget
        resumes.append(world.charge(charge_id).lease_until - world.clock())
    # exponential (60 s, 120 s, 240 s after 1, 2, 3 stalls, each jittered into [half, whole])
    for resume, whole in zip(resumes, (60, 120, 240), strict=True):
        assert timedelta(seconds=whole / 2) <= resume <= timedelta(seconds=whole)
    assert world.charge(charge_id).backoff_count == 4  # the first stalled run counted too
    world.sandbox.faults()  # NAVER is back
    world.clock.now = world.charge(charge_id).lease_until + timedelta(seconds=1)
    assert world.run(charge_id).status == "succeeded"
    assert len(world.sandbox.approved(rid)) == 1


def test_backoff_is_jittered_so_waiting_charges_do_not_wake_together(world):
    """Defect 15: many charges waiting on the same outage must not all wake at once."""
    delays = {world.engine.backoff(world.engine.stall_delays, 3) for _ in range(20)}
    assert len(delays) > 10
    assert all(timedelta(seconds=120) <= d <= timedelta(seconds=240) for d in delays)


# --- defect 16: transition logs say what the row really moved from -----------------------------

def test_transition_log_names_the_status_the_row_actually_left(world, caplog):
    """Defect 16: the log said ``unknown -> succeeded`` when the row moved from ``approving``."""
    rid = world.subscribe(behaviour={"serverErrorTimes": 3})
    charge_id = world.to_unknown_without_approval(rid)
    world.clock.advance(minutes=10)
    with caplog.at_level(logging.INFO, logger="worker"):
        assert world.run(charge_id).status == "succeeded"
    lines = [r.getMessage() for r in caplog.records
             if r.name.startswith("worker.") and r.getMessage().startswith(f"charge {charge_id}:")
             and " -> " in r.getMessage()]
    # One line per run, with the path the row really took (the statuses RETURNING gave back).
    assert lines == [f"charge {charge_id}: unknown -> approving -> succeeded"]
    assert world.db.sql("SELECT prev_status FROM charges WHERE id = :i", i=charge_id)[0][0] == "approving"


class TickingClient:
    """A client whose every call takes ``seconds`` on the test's clock (a slow NAVER), and
    which notes the charge lease it saw before each call."""

    def __init__(self, client, clock, seconds, observe=lambda: None):
        self.client, self.clock, self.seconds, self.observe = client, clock, seconds, observe
        self.seen = []

    def __getattr__(self, name):
        method = getattr(self.client, name)

        def call(*args, **kwargs):
            self.seen.append(self.observe())
            self.clock.advance(seconds=self.seconds)
            return method(*args, **kwargs)
        return call


# --- finding (d) of the property suite: TimeExpired is ours to redo, not a decline ----------

def test_a_reservation_that_expired_while_we_waited_is_reserved_again_not_declined(world):
    """The worker stops between the reservation and the approval (here: its call budget ends
    there, as when it dies); the reservation outlives NAVER's window; the next run's approval
    is answered TimeExpired. With one attempt allowed, that used to fail the charge finally,
    tell the customer and expire the registration. Now the same attempt reserves again."""
    rid = world.subscribe()
    world.policy(max_attempts=1)
    world.sandbox.configure(reserveWindowSeconds=1)
    charge_id = world.due_charge()
    assert process_charge(world.make_engine(call_budget=1), charge_id, "dies").status == "reserved"
    expired = world.charge(charge_id).payment_id
    time.sleep(1.5)  # the sandbox's window is real time
    world.clock.advance(minutes=10)
    world.sandbox.configure(reserveWindowSeconds=600)
    assert world.run(charge_id).status == "succeeded"
    charge = world.charge(charge_id)
    assert (charge.attempt_count, charge.key_round) == (1, 1) and charge.payment_id != expired
    states = {p["paymentId"]: p["state"] for p in world.sandbox.payments(rid)}
    assert states == {expired: "EXPIRED", charge.payment_id: "APPROVED"}
    kinds = [(kind, code) for kind, _outcome, code in world.attempts(charge_id)]
    assert ("approve", "TimeExpired") in kinds
    assert kinds[-2:] == [("reserve", "Success"), ("approve", "Success")]
    assert world.subscription()[0] == "active"
    assert not {e for e, _ in world.notifications()} & {"charge.attempt_failed", "charge.final_failure"}


def test_reservations_that_keep_expiring_hold_the_charge_without_consuming_an_attempt(world):
    """Our flow cannot beat NAVER's window (here: a window of zero): after a bounded number of
    rounds the charge is held for the merchant, never declined for the customer."""
    world.subscribe()
    world.policy(max_attempts=1)
    world.sandbox.configure(reserveWindowSeconds=0)
    charge_id = world.due_charge()
    out = process_charge(world.make_engine(call_budget=20), charge_id, "run")
    charge = world.charge(charge_id)
    assert (out.status, charge.last_code, charge.attempt_count) == ("held", "TimeExpired", 1)
    assert charge.held_from == "reserving"
    reserves = [a for a in world.attempts(charge_id) if a[0] == "reserve"]
    assert len(reserves) == 4  # the first reservation and three more rounds, then the hold
    assert world.subscription()[0] == "active"
    assert not {e for e, _ in world.notifications()} & {"charge.attempt_failed", "charge.final_failure"}
