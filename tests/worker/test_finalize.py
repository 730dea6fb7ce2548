"""Ending registrations at NAVER Pay (issue 7: defects 3 and 11, and the merchant's cancel),
against the real sandbox over loopback and real SQLite and PostgreSQL.

Each regression test names the defect it pins; each failed on ``worker/finalize.py`` before.
"""

from __future__ import annotations

import logging
import random
from datetime import timedelta

import pytest
import sqlalchemy as sa

from models import ChargeAttempt, Notification, Subscription
from scheduler.walk import WalkConfig, walk
from tests.worker.billing import make_client
from tests.worker.cli_helpers import cli
from tests.worker.test_charging_hardening import Hardened
from worker import notify
from worker.finalize import (
    CANCEL_REASON,
    EXPIRE_REASON,
    ExpirePolicy,
    Verdict,
    begin_merchant_cancels,
    classify,
    expire,
)
from worker.naverpay import errors

LEASE = WalkConfig().lease


class Expiry(Hardened):
    """The charge world plus the expire task, the walk's expire claims and the outbox."""

    def __init__(self, db, sandbox_url):
        super().__init__(db, sandbox_url)
        self.policy_ = ExpirePolicy(rng=random.Random(7))

    def revoking(self, behaviour=None, reason="final_failure", **columns):
        """A subscription whose registration is to be expired (as charging leaves it)."""
        rid = self.subscribe(behaviour, **columns)
        self.db.sql("UPDATE subscriptions SET status = 'revoking', seen_status = 'revoking', "
                    "revoke_reason = :r, updated_at = :t WHERE recurrent_id = :rid",
                    r=reason, t=self.clock(), rid=rid)
        return rid, self.sub_id(rid)

    def sub_id(self, rid):
        return self.db.sql("SELECT id FROM subscriptions WHERE recurrent_id = :r", r=rid)[0][0]

    def expire(self, sub_id):
        return expire(self.db.sessions, lambda _m: self.current, sub_id, self.clock, self.sleeps,
                      self.policy_)

    def sub(self, sub_id):
        with self.db.sessions() as s:  # through the ORM: SQLite gives raw SQL datetimes as text
            return s.get(Subscription, sub_id)

    def calls(self, sub_id):
        with self.db.sessions() as s:
            return [(a.kind, a.outcome, a.result_code) for a in s.scalars(
                sa.select(ChargeAttempt).where(ChargeAttempt.subscription_id == sub_id,
                                               ChargeAttempt.charge_id.is_(None))
                .order_by(ChargeAttempt.id))]

    def keys(self, sub_id):
        with self.db.sessions() as s:
            return [a.idempotency_key for a in s.scalars(
                sa.select(ChargeAttempt).where(ChargeAttempt.subscription_id == sub_id,
                                               ChargeAttempt.kind == "expire"))]

    def alerts(self):
        with self.db.sessions() as s:
            return [(n.event, n.channel, n.status) for n in s.scalars(
                sa.select(Notification).order_by(Notification.id))]

    def script(self, rid, **behaviour):
        """Replace the registration's sandbox script (e.g. what expire answers)."""
        response = self.sandbox.http.post(f"/_sandbox/registrations/{rid}/behaviour", json=behaviour)
        assert response.status_code == 200, response.text

    def claimed(self):
        return walk(self.db.sessions, self.clock()).revoking_subscription_ids


@pytest.fixture
def world(db, sandbox_url):
    w = Expiry(db, sandbox_url)
    w.policy(webhook_url="http://127.0.0.1:9/hook", webhook_secret="s")
    yield w
    w.client.close()


# --- classification ---------------------------------------------------------------------------

@pytest.mark.parametrize(("error", "verdict"), [
    (errors.AuthenticationError("401", api="expire", http_status=401), Verdict.HELD),
    (errors.MerchantSideError("bad", api="expire", code="InvalidParameter"), Verdict.HELD),
    (errors.MerchantSideError("proxy", api="expire", http_status=404), Verdict.HELD),
    (errors.TransientError("5xx", api="expire", http_status=503), Verdict.RETRY),
    (errors.UnknownOutcomeError("timeout", api="expire"), Verdict.RETRY),
    (errors.MalformedResponseError("html", api="expire"), Verdict.RETRY),
    (errors.DeclinedError("new code", api="expire", code="SomethingNew"), Verdict.REFUSED),
    (errors.PermanentError("no", api="expire", code="Fail"), Verdict.REFUSED),
])
def test_expire_answers_are_classified_explicitly(error, verdict):
    assert classify(error) is verdict


# --- the final action -------------------------------------------------------------------------

def test_success_revokes_and_keeps_the_final_failure_reason(world):
    """A final failure (charging) leaves revoke_reason final_failure; expire ends it revoked."""
    world.policy(retry_delays="10s", max_attempts=1)
    rid = world.subscribe(behaviour={"declineCode": "NotEnoughAccountBalance"})
    out = world.run(world.due_charge())
    assert out.status == "failed" and out.expire_subscription_id is not None
    sub_id = out.expire_subscription_id
    assert (world.sub(sub_id).status, world.sub(sub_id).revoke_reason) == ("revoking", "final_failure")
    assert world.expire(sub_id).status == "revoked"
    sub = world.sub(sub_id)
    assert (sub.status, sub.revoke_reason, sub.expire_next_at) == ("revoked", "final_failure", None)
    registration = world.sandbox.registration(rid)
    assert (registration["state"], registration["expireReason"]) == ("EXPIRED", EXPIRE_REASON)
    assert registration["expireRequester"] == "2"
    # a redelivered task changes nothing and calls nobody
    assert world.expire(sub_id).status == "revoked"
    assert world.calls(sub_id) == [("expire", "ok", "Success")]


def test_the_walk_does_not_double_the_expire_a_final_failure_enqueued(world):
    """The walk claims a revoking row with no expire_next_at only a lease after it changed
    (charging enqueued its expire itself), then by expire_next_at."""
    _, sub_id = world.revoking()
    assert world.claimed() == []
    world.clock.advance(seconds=LEASE.total_seconds() + 1)
    assert world.claimed() == [sub_id]
    assert world.claimed() == []  # claimed once: expire_next_at moved a lease ahead
    assert world.sub(sub_id).expire_next_at == world.clock() + LEASE


@pytest.mark.parametrize("how", ["401", "InvalidMerchant"])
def test_expire_with_wrong_credentials_is_held_and_never_revoked(world, how):
    """Defect 3 (expire side): an expire answered 401 was marked ``revoked``."""
    world.sandbox.configure(badCredentials=how)
    rid, sub_id = world.revoking()
    bad = world.use(make_client(world.sandbox.url, client_secret="rotated-and-wrong"))
    out = world.expire(sub_id)
    sub = world.sub(sub_id)
    assert (out.status, out.verdict) == ("revoking", Verdict.HELD)
    assert sub.status == "revoking" and sub.expire_attempts == 0  # no try counted
    assert world.clock() + timedelta(minutes=5) <= sub.expire_next_at <= world.clock() + timedelta(minutes=10)
    assert "InvalidMerchant" in sub.last_error or "401" in sub.last_error
    assert world.sandbox.registration(rid)["state"] == "VALID"
    assert world.alerts() == [("subscription.expire_held", "webhook", "pending")]
    assert out.notification_ids and world.calls(sub_id)[-1][0] == "expire"  # no list call on a 401
    # held again at the next try: still never revoked, and alerted once
    world.clock.now = sub.expire_next_at
    assert world.claimed() == [sub_id]
    assert world.expire(sub_id).verdict is Verdict.HELD
    assert len(world.alerts()) == 1
    # credentials fixed, no restart: the next try expires it
    world.use(world.client)
    bad.close()
    world.clock.now = world.sub(sub_id).expire_next_at
    assert world.claimed() == [sub_id]
    assert world.expire(sub_id).status == "revoked"
    assert world.sandbox.registration(rid)["state"] == "EXPIRED"


def test_expire_our_request_rejected_for_a_valid_registration_is_held(world):
    """Defect 3: InvalidParameter is our fault while NAVER still lists the registration VALID."""
    rid, sub_id = world.revoking(behaviour={"expireCode": "InvalidParameter"})
    out = world.expire(sub_id)
    assert (out.status, out.verdict) == ("revoking", Verdict.HELD)
    assert world.calls(sub_id) == [("expire", "merchantside", "InvalidParameter"),
                                   ("registration", "ok", "Success")]
    assert world.sandbox.registration(rid)["state"] == "VALID"
    # fixed (our request is right again): the next try sends a new key, as NAVER may have stored
    # its refusal under the old one
    world.script(rid)
    world.clock.now = world.sub(sub_id).expire_next_at
    assert world.claimed() == [sub_id]
    assert world.expire(sub_id).status == "revoked"
    first, second = world.keys(sub_id)
    assert first != second


@pytest.mark.parametrize("gone", ["expired by the user", "unknown to NAVER"])
def test_an_already_expired_or_unknown_registration_is_done(world, gone):
    """NAVER has no code for these (the sandbox says Fail / InvalidParameter): its list decides."""
    if gone == "expired by the user":
        rid, sub_id = world.revoking()
        world.sandbox._post(f"/_sandbox/registrations/{rid}/expire")
    else:
        world.db.sql("INSERT INTO subscriptions (recurrent_id, merchant_user_id, product_code, "
                     "product_name, amount, cron, status, revoke_reason) VALUES ('20261128RE0000000001"
                     "ZStYYU', 'u', 'P', 'p', 9900, '0 9 1 * *', 'revoking', 'final_failure')")
        sub_id = world.sub_id("20261128RE0000000001ZStYYU")
    out = world.expire(sub_id)
    sub = world.sub(sub_id)
    assert (out.status, out.verdict, sub.status) == ("revoked", Verdict.DONE, "revoked")
    assert ("as expired" if gone == "expired by the user" else "as unknown") in sub.last_error
    assert world.alerts() == []


def test_an_unmapped_expire_code_is_retried_with_backoff_then_flagged(world, caplog):
    """Defect 11: an unmapped code (DeclinedError) left the row revoking and NAVER was called
    every six minutes for ever. Now: bounded tries with a growing backoff, then expire_failed,
    an alert and an error log; never revoked."""
    rid, sub_id = world.revoking(behaviour={"expireCode": "SomethingNew"})
    waits = []
    for attempt in range(1, 9):
        out = world.expire(sub_id)
        sub = world.sub(sub_id)
        assert sub.expire_attempts == attempt and "SomethingNew" in sub.last_error
        if attempt < 8:
            assert (out.status, out.verdict) == ("revoking", Verdict.REFUSED)
            waits.append(sub.expire_next_at - world.clock())
            assert world.claimed() == []  # not before its backoff
            world.clock.now = sub.expire_next_at
            assert world.claimed() == [sub_id]
    assert out.status == "expire_failed" == world.sub(sub_id).status
    assert world.sub(sub_id).expire_next_at is None
    base = ExpirePolicy().backoff[0]
    for n, wait in enumerate(waits):  # exponential, jittered in [half, whole]
        assert base * 2 ** n / 2 <= wait.total_seconds() <= base * 2 ** n
    assert world.alerts() == [("subscription.expire_failed", "webhook", "pending")]
    assert any(r.levelno == logging.ERROR and "expire_failed" in r.getMessage() for r in caplog.records)
    assert world.sandbox.registration(rid)["state"] == "VALID"
    # nobody calls NAVER again
    world.clock.advance(days=30)
    assert world.claimed() == []
    assert [c[0] for c in world.calls(sub_id)].count("expire") == 8


def test_an_unmapped_code_then_success_is_revoked(world):
    rid, sub_id = world.revoking(behaviour={"expireCode": "SomethingNew"})
    assert world.expire(sub_id).verdict is Verdict.REFUSED
    world.script(rid)  # NAVER stops refusing
    world.clock.now = world.sub(sub_id).expire_next_at
    assert world.claimed() == [sub_id]
    assert world.expire(sub_id).status == "revoked"
    assert world.sandbox.registration(rid)["state"] == "EXPIRED"


def test_a_naver_outage_is_retried_without_bound_and_without_alerts(world):
    rid, sub_id = world.revoking()
    world.sandbox.faults(errorRate=1.0)  # every NAVER call: HTTP 500
    for attempt in range(1, 11):  # past the refusal bound: transient faults never give up
        out = world.expire(sub_id)
        assert (out.status, out.verdict) == ("revoking", Verdict.RETRY)
        assert world.sub(sub_id).expire_attempts == attempt
        world.clock.now = world.sub(sub_id).expire_next_at
        assert world.claimed() == [sub_id]
    assert len(world.sleeps.calls) == 20  # each try retried the call in place (3 calls)
    assert world.alerts() == []
    world.sandbox.faults()
    assert world.expire(sub_id).status == "revoked"
    assert world.sandbox.registration(rid)["state"] == "EXPIRED"


# --- the merchant's cancel --------------------------------------------------------------------

def test_a_merchant_cancel_expires_the_registration(world):
    rid = world.subscribe()
    charge_id = world.due_charge()
    assert world.run(charge_id).status == "succeeded"
    sub_id = world.sub_id(rid)
    world.db.sql("UPDATE subscriptions SET status = 'canceled' WHERE id = :i", i=sub_id)
    with world.db.sessions.begin() as s:
        assert begin_merchant_cancels(s, world.clock(), 100) == [sub_id]
    sub = world.sub(sub_id)
    assert (sub.status, sub.revoke_reason, sub.expire_attempts) == ("revoking", "merchant_cancel", 0)
    assert world.claimed() == []  # the caller enqueues it; the walk only if that is lost
    with world.db.sessions.begin() as s:
        assert begin_merchant_cancels(s, world.clock(), 100) == []
    assert world.expire(sub_id).status == "revoked"
    sub = world.sub(sub_id)
    assert (sub.status, sub.revoke_reason) == ("revoked", "merchant_cancel")
    registration = world.sandbox.registration(rid)
    assert (registration["state"], registration["expireReason"]) == ("EXPIRED", CANCEL_REASON)
    assert registration["expireRequester"] == "2"
    assert world.alerts() == []  # no customer notice, no alert


def test_a_cancel_through_the_cli_expires_the_registration(world):
    rid = world.subscribe()
    assert cli(world.db.url, "subscriptions", "cancel", rid).exit_code == 0
    with world.db.sessions.begin() as s:
        (sub_id,) = begin_merchant_cancels(s, world.clock(), 100)
    assert world.expire(sub_id).status == "revoked"
    assert world.sandbox.registration(rid)["state"] == "EXPIRED"


def test_a_merchant_that_opted_out_keeps_the_registration(world):
    world.policy(expire_on_cancel=0)
    rid = world.subscribe()
    world.db.sql("UPDATE subscriptions SET status = 'canceled'")
    with world.db.sessions.begin() as s:
        assert begin_merchant_cancels(s, world.clock(), 100) == []
    world.clock.advance(hours=1)
    assert world.claimed() == []
    assert world.sub(world.sub_id(rid)).status == "canceled"
    assert world.sandbox.registration(rid)["state"] == "VALID"


def test_a_cancel_waits_for_an_approval_in_flight(world):
    """Expiring while NAVER may still be approving would race the approval: the cancel waits
    until every charge of the subscription is final (cancel wins resolves it first)."""
    rid = world.subscribe(behaviour={"serverErrorTimes": 3})
    charge_id = world.to_unknown_without_approval(rid)
    sub_id = world.sub_id(rid)
    world.db.sql("UPDATE subscriptions SET status = 'canceled' WHERE id = :i", i=sub_id)
    with world.db.sessions.begin() as s:
        assert begin_merchant_cancels(s, world.clock(), 100) == []
    assert world.sub(sub_id).status == "canceled"
    world.clock.advance(minutes=10)
    assert world.run(charge_id).status == "canceled"  # history: nothing approved; cancel wins
    with world.db.sessions.begin() as s:
        assert begin_merchant_cancels(s, world.clock(), 100) == [sub_id]
    assert world.expire(sub_id).status == "revoked"
    assert world.sandbox.approved(rid) == []
    assert world.sandbox.registration(rid)["state"] == "EXPIRED"


def test_a_cancel_waits_while_a_run_holds_the_registration(world):
    rid = world.subscribe()
    sub_id = world.sub_id(rid)
    world.db.sql("UPDATE subscriptions SET status = 'canceled', lock_owner = 'run', lock_until = :t",
                 t=world.clock() + timedelta(minutes=1))
    with world.db.sessions.begin() as s:
        assert begin_merchant_cancels(s, world.clock(), 100) == []
    world.clock.advance(minutes=2)
    with world.db.sessions.begin() as s:
        assert begin_merchant_cancels(s, world.clock(), 100) == [sub_id]


def test_the_expire_alerts_reach_the_merchant_webhook_only(world):
    world.policy(notify_email=1)
    _, sub_id = world.revoking(behaviour={"expireCode": "InvalidParameter"}, customer_email="c@x.kr")
    out = world.expire(sub_id)
    with world.db.sessions() as s:
        (row,) = s.scalars(sa.select(Notification)).all()
    assert (row.event, row.channel) == (notify.EXPIRE_HELD, "webhook")
    assert out.notification_ids == [row.id]
