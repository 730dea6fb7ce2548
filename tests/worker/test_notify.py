"""The notification outbox: who gets what, signatures, delivery retries, never sent twice."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from models import Charge, Merchant, Subscription
from tests.worker.billing import Clock, Sleeps
from worker import notify


def seed(db, **merchant):
    db.sql("INSERT INTO subscriptions (recurrent_id, merchant_user_id, product_code, product_name, "
           "amount, cron, customer_email) VALUES ('RE-1', 'u', 'P', '월간 구독', 9900, '* * * * *', "
           "'c@example.com')")
    db.sql("INSERT INTO charges (subscription_id, recurrent_id, cycle_at, merchant_pay_id, amount, "
           "status, attempt_count, last_code) VALUES (1, 'RE-1', '2026-12-01 00:00:00', 'M-1', 9900, "
           "'failed', 4, 'NotEnoughAccountBalance')")
    if merchant:
        sets = ", ".join(f"{k} = :{k}" for k in merchant)
        db.sql(f"UPDATE merchants SET {sets} WHERE id = 1", **merchant)


def queue(db, event, now):
    with db.sessions.begin() as s:
        return notify.queue(s, event, s.get(Charge, 1), now)


NOW = datetime(2026, 11, 28, 3, 0, tzinfo=UTC)


def test_channels_follow_the_merchant_and_the_event():
    merchant = Merchant(webhook_url="http://x", notify_email=1, notify_on="succeeded")
    sub = Subscription(customer_email="c@example.com")
    assert notify.channels(merchant, sub, notify.FINAL_FAILURE) == ["webhook", "email"]
    assert notify.channels(merchant, sub, notify.SUCCEEDED) == ["webhook", "email"]
    assert notify.channels(merchant, sub, notify.ATTEMPT_FAILED) == []
    assert notify.channels(Merchant(notify_email=1, notify_on=""), Subscription(), notify.FINAL_FAILURE) == []


def test_final_failure_always_leaves_a_row(sqlite_db):
    seed(sqlite_db)
    assert queue(sqlite_db, notify.FINAL_FAILURE, NOW) == []  # nothing to deliver...
    rows = sqlite_db.sql("SELECT channel, status, payload FROM notifications")
    assert [(r[0], r[1]) for r in rows] == [("none", "no_channel")]  # ...but it is recorded
    payload = json.loads(rows[0][2])
    assert payload["event"] == "charge.final_failure"
    assert "4회 시도 끝에 최종 실패" in payload["message"]


def test_the_same_event_for_the_same_attempt_is_queued_once(sqlite_db):
    seed(sqlite_db, webhook_url="http://127.0.0.1:1/hook")
    queue(sqlite_db, notify.FINAL_FAILURE, NOW)
    with pytest.raises(sa.exc.IntegrityError):
        queue(sqlite_db, notify.FINAL_FAILURE, NOW)


def test_signature_is_hmac_sha256_of_timestamp_and_body():
    assert notify.sign("whsec", "1700000000", b'{"a":1}') == (
        "sha256=" + __import__("hmac").new(b"whsec", b'1700000000.{"a":1}', "sha256").hexdigest())


def test_delivery_retries_then_succeeds_and_is_never_repeated(sqlite_db):
    seed(sqlite_db, webhook_url="http://hook")
    (nid,) = queue(sqlite_db, notify.FINAL_FAILURE, NOW)
    clock, sleeps, sent = Clock(NOW), Sleeps(), []

    def flaky(notification, merchant, sub):
        sent.append(notification.event_id)
        if len(sent) <= 3:
            raise ConnectionError("merchant endpoint down")

    senders = {"webhook": flaky}
    # the claim is leased (2 min) from queue time, so a walk-triggered run can start now
    assert notify.deliver(sqlite_db.sessions, nid, senders, clock, sleeps) == "pending"
    assert len(sent) == 3 and len(sleeps.calls) == 2  # tenacity tried 3 times, sleeping injected
    error = sqlite_db.sql("SELECT last_error FROM notifications")[0][0]
    assert "merchant endpoint down" in error
    # the walk re-enqueues it only once its backoff has passed...
    from scheduler.walk import walk

    assert walk(sqlite_db.sessions, clock()).notification_ids == []
    clock.advance(minutes=5)
    assert walk(sqlite_db.sessions, clock()).notification_ids == [nid]
    # ...and that run delivers it
    assert notify.deliver(sqlite_db.sessions, nid, senders, clock, sleeps) == "sent"
    assert notify.deliver(sqlite_db.sessions, nid, senders, clock, sleeps) == "sent"  # duplicate task
    assert len(sent) == 4 and len(set(sent)) == 1  # one event id throughout
