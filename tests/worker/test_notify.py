"""The notification outbox: who gets what, signatures, delivery retries, never sent twice."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import sqlalchemy as sa

from models import Charge, Merchant, Notification, Subscription
from scheduler.walk import walk
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
    assert walk(sqlite_db.sessions, clock()).notification_ids == []
    clock.advance(minutes=5)
    assert walk(sqlite_db.sessions, clock()).notification_ids == [nid]
    # ...and that run delivers it
    assert notify.deliver(sqlite_db.sessions, nid, senders, clock, sleeps) == "sent"
    assert notify.deliver(sqlite_db.sessions, nid, senders, clock, sleeps) == "sent"  # duplicate task
    assert len(sent) == 4 and len(set(sent)) == 1  # one event id throughout


# --- defect 6: a delivery whose worker died is delivered by the next claimant -------------

class Receiver(BaseHTTPRequestHandler):
    """A merchant's webhook endpoint on loopback: records what it gets."""

    received: list[tuple[str, dict]] = []

    def do_POST(self):  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Receiver.received.append((self.headers["X-Npay-Billing-Event-Id"], json.loads(body)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    Receiver.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/hook", Receiver.received
    server.shutdown()


class WorkerDied(BaseException):
    """The process went away (SIGKILL, OOM): nothing of ours runs after it."""


def webhook_senders(clock, die=None):
    """The real webhook sender; with ``die`` ("before"/"after"), the worker dies around the send."""
    real = notify.WebhookSender(httpx.Client(timeout=5), clock)

    def send(notification, merchant, sub):
        if die == "before":
            raise WorkerDied
        real(notification, merchant, sub)
        if die == "after":
            raise WorkerDied

    return {"webhook": send}


def notification(db, nid):
    with db.sessions() as s:
        return s.get(Notification, nid)


@pytest.mark.parametrize("dies", ["before", "after"])
def test_a_delivery_whose_worker_died_is_delivered_by_the_next_claimant(db, receiver, dies):
    """Defect 6: the walk moved the lease forward and delivery only took over a ``sending`` row
    whose lease had passed, so a row whose worker died stayed ``sending`` for ever (and Celery's
    redelivery of the task found it ``sending`` too)."""
    url, received = receiver
    seed(db, webhook_url=url, webhook_secret="whsec")
    (nid,) = queue(db, notify.FINAL_FAILURE, NOW)
    clock, sleeps = Clock(NOW), Sleeps()
    event_id = notification(db, nid).event_id
    with pytest.raises(WorkerDied):  # the worker claims the row and dies
        notify.deliver(db.sessions, nid, webhook_senders(clock, die=dies), clock, sleeps)
    assert notification(db, nid).status == "sending"
    # Celery redelivers the task at once: the dead owner's lease still runs, nothing is sent
    assert notify.deliver(db.sessions, nid, webhook_senders(clock), clock, sleeps) == "sending"
    assert walk(db.sessions, clock()).notification_ids == []
    # once the lease has passed, the walk hands the row to the next claimant...
    clock.advance(minutes=3)
    assert walk(db.sessions, clock()).notification_ids == [nid]
    row = notification(db, nid)
    assert (row.status, row.claim_owner) == ("pending", None)
    assert walk(db.sessions, clock()).notification_ids == []  # enqueued once
    # ...which delivers it, with the same event id
    assert notify.deliver(db.sessions, nid, webhook_senders(clock), clock, sleeps) == "sent"
    row = notification(db, nid)
    assert (row.status, row.claim_owner, row.sent_at) == ("sent", None, clock())
    assert [eid for eid, _ in received] == [event_id] * (2 if dies == "after" else 1)
    assert {body["event_id"] for _, body in received} == {event_id}
    assert received[-1][1]["event"] == "charge.final_failure"
    # nothing is left to deliver
    clock.advance(minutes=10)
    assert walk(db.sessions, clock()).notification_ids == []


def test_a_delivery_that_lost_its_claim_writes_nothing(sqlite_db, receiver):
    """A delivery that overstayed its lease (the walk gave the row to another delivery, which
    sent it) must not put the row back to ``pending`` when its own send then fails."""
    url, received = receiver
    seed(sqlite_db, webhook_url=url)
    (nid,) = queue(sqlite_db, notify.FINAL_FAILURE, NOW)
    clock, sleeps = Clock(NOW), Sleeps()

    def slow_then_broken(notification, merchant, sub):
        # while this delivery hangs, its lease passes and the next claimant delivers
        clock.advance(minutes=3)
        assert walk(sqlite_db.sessions, clock()).notification_ids == [nid]
        assert notify.deliver(sqlite_db.sessions, nid, webhook_senders(clock), clock, sleeps) == "sent"
        raise ConnectionError("the slow delivery finally fails")

    assert notify.deliver(sqlite_db.sessions, nid, {"webhook": slow_then_broken}, clock, sleeps) == "sent"
    row = notification(sqlite_db, nid)
    assert (row.status, row.last_error) == ("sent", None)  # the live claimant's result stands
    clock.advance(hours=1)
    assert walk(sqlite_db.sessions, clock()).notification_ids == []
    assert len(received) == 1
