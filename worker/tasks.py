"""Thin Celery tasks: ids in, plain functions do the work, follow-ups enqueued after commit.

Task arguments are ids only (charge, subscription, notification ids, or a recurrentId for a
manual retry): no secret or personal data ever reaches the broker, Flower or logs.
"""

from __future__ import annotations

import logging
import time
import uuid

from celery import Task

from models import utcnow
from scheduler.walk import walk
from worker import metrics
from worker.app import app
from worker.charging import ChargeOutcome, process_charge
from worker.enqueue import enqueue_tasks
from worker.finalize import begin_merchant_cancels, expire_registration
from worker.manual import RetryRefused, prepare_retry
from worker.notify import deliver
from worker.runtime import runtime
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
    sent: list[int] = []  # due charges, enqueued batch by batch as the walk commits them

    def enqueue_batch(ids: list[int]) -> None:
        enqueue_tasks(app, charge, ids)
        sent.extend(ids)

    report = walk(rt.sessions, now, rt.settings.walk, on_new_charges=enqueue_batch)
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
    sent_set = set(sent)
    for reason, ids in (("new", report.new_charge_ids), ("retry", report.retry_charge_ids),
                        ("held", report.held_charge_ids), ("stuck", report.stuck_charge_ids)):
        metrics.WALK_ENQUEUED.labels(reason=reason).inc(len(ids))
        # One pipeline per kind (worker.enqueue); what went out batch by batch is not sent again.
        enqueue_tasks(app, charge, [i for i in ids if i not in sent_set] if reason == "new" else ids)
    for subscription_id in [*report.revoking_subscription_ids, *cancels]:
        expire_subscription.delay(subscription_id)
    for notification_id in report.notification_ids:
        deliver_notification.delay(notification_id)
    summary = {"scheduled": report.scheduled, "invalid": len(report.invalid),
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
    log.info("charge %s -> %s", charge_id, outcome.status, extra={"charge_id": charge_id})
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
