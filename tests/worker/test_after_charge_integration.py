"""Issue 9, "After the charge", through real processes: `celery -A worker worker` and `beat`, a
real redis-server, the sandbox over HTTP, SQLite and PostgreSQL.

One story, in order, on one stack:

(a) a refund, partial then the rest, asked for with ``npay-billing refund --wait`` and done by
    the worker: the charge's refunded total equals its approved amount;
(b) a registration the customer ends inside NAVER Pay (sandbox control ``.../expire``): beat's
    registration-sync entry (every second here) revokes the subscription, and while a control
    subscription keeps being billed, no further charge of the ended one is made or approved;
(c) the ``worker.reconcile`` task, run by the worker for today's KST day: it repairs a charge
    left ``unknown`` (an approval whose answer was lost) through the charge state machine,
    reports an approval and a cancel injected at NAVER, and finds (a)'s refunds clean (the
    refunds table is wired into reconciliation).
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import redis

from models import utcnow
from scheduler.walk import walk
from tests.processes import Processes, wait_for
from tests.worker.billing import Sandbox, Sleeps, make_client, make_engine
from tests.worker.cli_helpers import cli
from tests.worker.test_celery_integration import INSERT, charges_of, settled, subscribe
from worker.app import app
from worker.charging import process_charge
from worker.naverpay.kst import KST


@pytest.fixture
def stack(db, redis_service, sandbox_url, request):
    """Worker processes wired to this test's database, the shared Redis and the sandbox; the
    registration sync runs every second."""
    redis.Redis.from_url(redis_service.url).flushdb()
    env = {
        "DATABASE_URL": db.url, "CELERY_BROKER_URL": redis_service.url,
        "NAVERPAY_API_BASE": sandbox_url, "NAVERPAY_APPROVAL_TIMEOUT": "1.5",
        "BILLING_WALK_INTERVAL": "1", "BILLING_LEASE_SECONDS": "6",
        "BILLING_VISIBILITY_TIMEOUT": "20", "BILLING_REGISTRATION_SYNC_INTERVAL": "1",
    }
    db.sql("UPDATE merchants SET min_cycle_interval = '1s' WHERE id = 1")
    procs = Processes(env)
    procs.db, procs.sandbox = db, Sandbox(sandbox_url)
    yield procs
    procs.stop_all()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(procs.dump_logs())


def _paid(stack, rid):
    return [r for r in charges_of(stack, rid) if r[1] == "succeeded"]


def _sub(stack, rid):
    return tuple(stack.db.sql("SELECT status, revoke_reason FROM subscriptions WHERE recurrent_id = :r",
                              r=rid)[0])


def test_refund_registration_end_and_reconciliation_through_worker_and_beat(stack):
    db, sandbox = stack.db, stack.sandbox
    refunded, ended, control = (subscribe(stack, cron="* * * * * */2") for _ in range(3))
    stack.worker(concurrency=2)
    stack.beat()

    # (a) a refund, partial then the rest, done by the worker.
    wait_for(lambda: _paid(stack, refunded), 45, "a paid charge to refund")
    db.sql("UPDATE subscriptions SET status = 'paused' WHERE recurrent_id = :r", r=refunded)
    charge_id = _paid(stack, refunded)[0][0]
    broker = {"CELERY_BROKER_URL": stack.env["CELERY_BROKER_URL"]}
    first = cli(db.url, "refund", str(charge_id), "--amount", "3000", "--wait", "--timeout", "40",
                "--json", env=broker)
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["status"] == "succeeded"
    rest = cli(db.url, "refund", str(charge_id), "--wait", "--timeout", "40", "--json", env=broker)
    assert rest.exit_code == 0, rest.output
    assert json.loads(rest.stdout)["charge"]["refunded_amount"] == 9900
    approved, total = db.sql("SELECT approved_amount, refund_total FROM charges WHERE id = :i",
                             i=charge_id)[0]
    assert total == approved == 9900
    assert [tuple(r) for r in db.sql("SELECT status, amount FROM refunds ORDER BY id")] == [
        ("succeeded", 3000), ("succeeded", 6900)]
    payment_id = db.sql("SELECT payment_id FROM charges WHERE id = :i", i=charge_id)[0][0]
    assert sandbox.payment(payment_id)["state"] == "FULLY_CANCELLED"

    # (b) the customer ends a registration in NAVER Pay; the sync (beat) revokes it.
    wait_for(lambda: _paid(stack, ended), 45, "a paid charge of the subscription to end")
    sandbox.end_registration(ended)
    wait_for(lambda: _sub(stack, ended)[0] == "revoked", 45, "the registration sync to revoke it")
    assert _sub(stack, ended) == ("revoked", "registration_ended")
    assert "worker.sync_registrations" in stack.log("beat")
    ids_at_revoke = {r[0] for r in charges_of(stack, ended)}
    control_paid = len(_paid(stack, control))
    wait_for(lambda: len(_paid(stack, control)) >= control_paid + 2, 45,
             "two more paid cycles of the control subscription (the walk kept running)")
    after = charges_of(stack, ended)
    assert [r for r in after if r[0] not in ids_at_revoke and r[1] != "canceled"] == []
    assert all(r[1] != "succeeded" for r in after if r[0] not in ids_at_revoke)
    ours = {r[2] for r in after if r[1] == "succeeded"}
    assert {p["paymentId"] for p in sandbox.approved(ended)} == ours  # nothing approved beyond ours

    # Quiet the walk: no new cycles, nothing in flight, beat stopped (the worker keeps running).
    db.sql("UPDATE subscriptions SET next_charge_at = :far", far="2099-01-01 00:00:00")
    wait_for(lambda: settled(stack), 45, "in-flight charges to finish")
    stack.stop("beat")

    # (c) a charge whose approval answer is lost: NAVER approved it, we stay `unknown`.
    lost = sandbox.register(behaviour={"timeoutAfterCommitTimes": 1, "timeoutSeconds": 2})
    db.sql(INSERT, rid=lost, user="user-lost", amount=9900, cron="* * * * * */2", email=None)
    walk(db.sessions, utcnow())
    (lost_charge,) = wait_for(lambda: walk(db.sessions, utcnow()).new_charge_ids, 10, "the lost charge")
    with make_client(sandbox.url, approval_timeout=0.5) as client:
        tight = make_engine(db, client, utcnow, Sleeps(), call_budget=2, lease=timedelta(seconds=2))
        assert process_charge(tight, lost_charge, "crashed-worker").status == "unknown"
    db.sql("UPDATE subscriptions SET next_charge_at = :far WHERE recurrent_id = :r",
           far="2099-01-01 00:00:00", r=lost)
    # NAVER's books changed behind our back: an approval and a cancel we never made.
    stranger = sandbox.inject("approval", amount=12000, merchantPayId="not-ours")["paymentId"]
    control_payment = _paid(stack, control)[0][2]
    sandbox.inject("cancel", paymentId=control_payment, amount=1000)

    today = utcnow().astimezone(KST).date().isoformat()
    app.conf.broker_url = stack.env["CELERY_BROKER_URL"]
    with app.connection_for_write() as conn:
        app.send_task("worker.reconcile", kwargs={"day": today}, connection=conn)
    run = wait_for(lambda: db.sql("SELECT id, status, repaired, remaining FROM reconciliation_runs "
                                  "WHERE status != 'running'"), 60, "the reconciliation run")
    (run_id, status, repaired, remaining) = run[0]
    items = sorted((k, r, p) for k, r, p in db.sql(
        "SELECT kind, resolution, payment_id FROM reconciliation_items WHERE run_id = :i", i=run_id))
    lost_payment = db.sql("SELECT payment_id FROM charges WHERE id = :i", i=lost_charge)[0][0]
    assert (status, repaired, remaining) == ("done", 1, 2), items
    assert items == sorted([("unsettled_here", "repaired", lost_payment),
                            ("unknown_here", "reported", stranger),
                            ("refund_unknown_here", "reported", control_payment)])
    # Repaired through the state machine from history: one approval at NAVER, never a second.
    assert charges_of(stack, lost)[0][1] == "succeeded"
    (approval,) = sandbox.approved(lost)
    assert approval["approvalRequests"] == 1
    assert "reconciliation of" in stack.log("worker")
