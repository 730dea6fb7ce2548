"""Thin Celery tasks: ids in, plain functions do the work, follow-ups enqueued after commit.

Task arguments are ids only (charge, subscription, notification ids, or a recurrentId for a
manual retry): no secret or personal data ever reaches the broker, Flower or logs.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from datetime import datetime

from celery import Task

from models import utcnow
from scheduler.walk import walk
from worker import consent, metrics
from worker.app import app
from worker.charging import ChargeOutcome, process_charge
from worker.enqueue import BackgroundSender, enqueue_tasks
from worker.finalize import begin_merchant_cancels, expire_registration
from worker.manual import RetryRefused, prepare_retry
from worker.notify import deliver
from worker.reconciliation import Reconciler, TableRefunds, parse_day, previous_day, reconcile_pass
from worker.refund_requests import claim_due_refunds, surface_stuck_refunds
from worker.refunds import process_refund
from worker.runtime import Runtime, runtime
from worker.surfacing import surface_stuck

log = logging.getLogger(__name__)


def _dispatch(outcome: ChargeOutcome) -> None:
    for notification_id in outcome.notification_ids:
        deliver_notification.delay(notification_id)
    if outcome.expire_subscription_id is not None:
        expire_subscription.delay(outcome.expire_subscription_id)


@app.task(name="scheduler.walk", ignore_result=True)
def walk_task() -> dict[str, int]:
    """Beat's one entry: walk the subscriptions table and enqueue what is due."""
    rt = runtime()
    now = utcnow()
    # Due charges, enqueued batch by batch as the walk commits them, by a thread of their own
    # while the walk goes on; what failed to go out is sent again below.
    with BackgroundSender(app, charge) as sender:
        report = walk(rt.sessions, now, rt.settings.walk, on_new_charges=sender.send)
    sent = sender.sent
    metrics.WALKS.inc()
    cancels: list[int] = []
    surfaced = 0
    try:  # after the walk (cancel wins has run); a failure here never stops the rest
        with rt.sessions.begin() as s:
            cancels = begin_merchant_cancels(s, now, rt.settings.walk.batch_size, rt.settings.walk.lease)
        with rt.sessions.begin() as s:
            surfaced = surface_stuck(s, now, rt.settings.surface_after, rt.settings.walk.batch_size)
    except Exception:
        log.exception("walk: merchant cancels / surfacing failed; retried on the next walk")
    refund_ids = _walk_refunds(rt, now)
    # Consent rule: price-change and upcoming-charge notices, consent_held alerts (outbox).
    notices = consent.after_walk(rt.sessions, now, rt.settings.consent, rt.settings.walk.batch_size)
    sent_set = set(sent)
    for reason, ids in (("new", report.new_charge_ids), ("retry", report.retry_charge_ids),
                        ("held", report.held_charge_ids), ("stuck", report.stuck_charge_ids),
                        ("consent", report.consent_resumed_ids)):
        metrics.WALK_ENQUEUED.labels(reason=reason).inc(len(ids))
        # One pipeline per kind (worker.enqueue); what went out batch by batch is not sent again.
        enqueue_tasks(app, charge, [i for i in ids if i not in sent_set] if reason == "new" else ids)
    for subscription_id in [*report.revoking_subscription_ids, *cancels]:
        expire_subscription.delay(subscription_id)
    for notification_id in [*report.notification_ids, *notices]:
        deliver_notification.delay(notification_id)
    for refund_id in refund_ids:
        refund_charge.delay(refund_id)
    summary = {"refunds": len(refund_ids), "scheduled": report.scheduled, "invalid": len(report.invalid),
               "charges": len(report.charge_ids), "skipped": report.skipped,
               "canceled": report.canceled, "merchant_cancels": len(cancels), "surfaced": surfaced,
               "conflicts": report.conflicts, "failed_steps": len(report.failed_steps)}
    for step, error in report.failed_steps:
        log.error("walk step %s failed: %s", step, error)
    if any(summary.values()):
        log.info("walk: %s", summary)
    return summary


@app.task(name="worker.charge", bind=True, ignore_result=True, max_retries=60)
def charge(self: Task, charge_id: int) -> str | None:
    """Reserve-then-approve one charge (keyed by its recurrentId's lease)."""
    rt = runtime()
    owner = f"{self.request.id or 'local'}:{uuid.uuid4().hex[:8]}"
    outcome = process_charge(rt.charge_engine(), charge_id, owner)
    _dispatch(outcome)
    if outcome.busy:
        # Another run holds this registration; try again shortly (never a long countdown).
        raise self.retry(countdown=5)
    if outcome.status:
        metrics.CHARGES.labels(outcome=outcome.status, code=outcome.code or "none").inc()
    # (the run logged its path in one INFO line: worker.charging)
    log.debug("charge %s -> %s", charge_id, outcome.status, extra={"charge_id": charge_id})
    return outcome.status


@app.task(name="worker.retry_charge", ignore_result=True)
def retry_charge(target: str, reopen: bool = False) -> dict[str, object]:
    """Manual retry by charge id or recurrentId; see ``worker.manual`` for the rules."""
    rt = runtime()
    try:
        decision = prepare_retry(rt.sessions, str(target), utcnow(), reopen=reopen)
    except RetryRefused as exc:
        log.warning("retry of %s refused: %s", target, exc)
        return {"ok": False, "error": str(exc)}
    charge.delay(decision.charge_id)
    return {"ok": True, "charge_id": decision.charge_id, "action": decision.action}


@app.task(name="worker.expire_subscription", ignore_result=True)
def expire_subscription(subscription_id: int) -> str:
    """Final action ``expire``: end the registration at NAVER Pay."""
    rt = runtime()
    status = expire_registration(rt.sessions, rt.client_for, subscription_id, utcnow, time.sleep)
    if status == "revoked":
        metrics.EXPIRED.inc()
    return status


@app.task(name="worker.deliver_notification", ignore_result=True)
def deliver_notification(notification_id: int) -> str:
    """Deliver one outbox row (webhook or e-mail)."""
    rt = runtime()
    status = deliver(rt.sessions, notification_id, rt.senders, utcnow, time.sleep)
    metrics.NOTIFICATIONS.labels(channel="any", status=status).inc()
    return status


# --- refunds (issue 9) ------------------------------------------------------------------------


def _walk_refunds(rt: Runtime, now: datetime) -> list[int]:
    """The walk's part for refunds: claim the due ones, surface the stuck ones; a failure here
    is logged and retried on the next walk, never stops the rest of it."""
    try:
        with rt.sessions.begin() as s:
            ids = claim_due_refunds(s, now, rt.settings.walk.batch_size, rt.settings.walk.lease)
        with rt.sessions.begin() as s:
            surface_stuck_refunds(s, now, rt.settings.surface_after, rt.settings.walk.batch_size)
    except Exception:
        log.exception("walk: refunds failed; retried on the next walk")
        return []
    return ids


@app.task(name="worker.refund_charge", bind=True, ignore_result=True, max_retries=60)
def refund_charge(self: Task, refund_id: int) -> str | None:
    """Send (or resolve) one refund; the refund id is the only argument."""
    rt = runtime()
    owner = f"{self.request.id or 'local'}:{uuid.uuid4().hex[:8]}"
    outcome = process_refund(rt.refund_engine(), refund_id, owner)
    for notification_id in outcome.notification_ids:
        deliver_notification.delay(notification_id)
    if outcome.busy:
        raise self.retry(countdown=5)  # another run holds it; never a long countdown
    if outcome.status:
        metrics.REFUNDS.labels(outcome=outcome.status, code=outcome.code or "none").inc()
    log.info("refund %s -> %s", refund_id, outcome.status)
    return outcome.status
@app.task(name="worker.reconcile", ignore_result=True)
def reconcile(day: str | None = None) -> dict[str, int]:
    """Beat's daily entry: reconcile yesterday (KST) with NAVER's history, and each earlier
    day no run finished (``BILLING_RECONCILE_CATCHUP_DAYS``), once per merchant and day; with
    ``day``, that day (a new run). Returns the differences left per run."""
    from worker.reconciliation import daily_pass
    from worker.settings import reconcile_catch_up

    rt = runtime()
    rec = Reconciler(rt.charge_engine(), TableRefunds(rt.sessions))
    if day:
        reports = reconcile_pass(rec, parse_day(day))
    else:
        try:
            catch_up = reconcile_catch_up()
        except ValueError as exc:
            log.error("%s; looking back 7 days", exc)
            catch_up = 7
        reports = daily_pass(rec, previous_day(utcnow()), catch_up)
    for report in reports:
        for notification_id in report.notification_ids:
            deliver_notification.delay(notification_id)
        for subscription_id in report.expire_subscription_ids:
            expire_subscription.delay(subscription_id)
        log.info("reconciliation of %s (merchant %s): %s repaired, %s left", report.day, report.merchant_id,
                 len(report.repaired), len(report.remaining))
    return {f"run {r.run_id}": len(r.remaining) for r in reports}
# --- issue 9: registration sync, purchase confirm / point accrual (their own beat entries) ----

@app.task(name="worker.sync_registrations", ignore_result=True)
def sync_registrations_task() -> dict[str, int]:
    """A paced pass over NAVER's registration list: subscriptions whose registration the
    customer ended in NAVER Pay are revoked. Separate from the walk: it never stops billing."""
    from worker.registration_sync import SyncConfig, sync_registrations

    rt = runtime()
    raw = os.environ.get("BILLING_REGISTRATION_SYNC_PAGES", "5")
    try:
        pages = int(raw)
    except ValueError:
        log.error("BILLING_REGISTRATION_SYNC_PAGES=%r is not a whole number; using 5", raw)
        pages = 5
    report = sync_registrations(rt.sessions, rt.client_for, utcnow(), SyncConfig(max_pages=max(1, pages)))
    for notification_id in report.notification_ids:
        deliver_notification.delay(notification_id)
    ended = sum(len(m.ended) for m in report.merchants)
    errors = [m for m in report.merchants if m.error]
    for m in errors:
        log.warning("registration sync of merchant %s: %s", m.merchant_id, m.error)
    if ended:
        log.info("registration sync: %d subscription(s) revoked (ended in NAVER Pay)", ended)
    return {"merchants": len(report.merchants), "ended": ended, "errors": len(errors)}


@app.task(name="worker.followups", ignore_result=True)
def followups_task() -> dict[str, int]:
    """Purchase confirms and point accruals that have come due (worker/followups.py)."""
    from worker.followups import run_followups

    rt = runtime()
    report = run_followups(rt.sessions, rt.client_for, utcnow(), clock=utcnow)
    for notification_id in report.notification_ids:
        deliver_notification.delay(notification_id)
    return {name: len(ids) for name, ids in report.to_json().items()}
