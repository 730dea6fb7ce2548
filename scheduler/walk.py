"""The walk: turn due subscriptions into charges, and find charges that need a worker again.

Beat runs one task, ``scheduler.walk``, every ``BILLING_WALK_INTERVAL`` seconds; it calls
:func:`walk`, then enqueues the returned ids. Data flow of one walk (each step its own short
transactions, bounded batches, index-driven queries; PostgreSQL claims rows with
``FOR UPDATE SKIP LOCKED``)::

    1. cancel       charges pending/retry_wait/reserved/consent_held of a non-active
                    subscription -> canceled
    2. statuses     rows that stopped being active: seen_status = status (a resume is noticed)
    3. resume       active rows the walk last saw not active: next cycle after now, so no
                    cycle that fell while paused/invalid is ever billed
    4. schedule     active rows with next_charge_at NULL: validate, compute the first cycle
    5. due          active rows with next_charge_at <= now: validate; a changed cron/zone is
                    rescheduled from now; else one charge row per (subscription, cycle)
                    (insert-or-ignore on every unique column), the missed-cycle rule,
                    next_charge_at advanced with croniter
    5b. consent     consent_held charges: pending again once the consent gate bills their
                    cycle (consent recorded, amount lowered); skipped once a later cycle of
                    the subscription came due (scheduler/consenting.py)
    6. retries      retry_wait charges whose next_attempt_at has come
    7. held         held charges (a merchant-side fault) whose backoff has passed: the engine
                    resumes them where they were held
    8. stuck        charges in a non-final state whose lease ran out (a worker died, a
                    message was lost)
    9. revoking     subscriptions stuck in ``revoking``
   10. notifications  outbox rows not delivered (their lease ran out)
    -> WalkReport: ids to enqueue, *after* commit. A lost message is simply found again.

Steps 2-5 live in :mod:`scheduler.billing` (each row decided on its own by
:mod:`scheduler.planning`). **The walk never raises**: a row that cannot be planned becomes
``invalid`` with the error; a step that fails is logged and named in
``WalkReport.failed_steps``, and the other steps still run.

The due step runs ``WalkConfig.due_loops`` batch loops at once on PostgreSQL (disjoint rows
through ``SKIP LOCKED``; see :mod:`scheduler.billing`). Two walks (or loops) at once cannot
bill a cycle twice: the charge row is unique per (subscription,
cycle), and each enqueue is claimed by moving ``lease_until`` forward with a compare-and-set.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from models import INFLIGHT_CHARGE_STATUSES, Charge, ChargeStatus, Notification, Subscription
from models import NotificationStatus as NS
from models import SubscriptionStatus as SS
from models.db import rowcount
from scheduler import billing, consenting
from scheduler.billing import BatchResult, WalkConfig
from scheduler.planning import merchant_pay_id, plan_cycles

__all__ = ["CANCELABLE", "WalkConfig", "WalkReport", "cancel_inactive", "merchant_pay_id",
           "plan_cycles", "walk"]

log = logging.getLogger(__name__)

CANCELABLE = (ChargeStatus.PENDING, ChargeStatus.RETRY_WAIT, ChargeStatus.RESERVED,
              ChargeStatus.CONSENT_HELD)


@dataclass
class WalkReport(BatchResult):
    """What one walk did; the ``*_ids`` lists are what the caller enqueues after commit."""

    canceled: int = 0
    retry_charge_ids: list[int] = field(default_factory=list)
    held_charge_ids: list[int] = field(default_factory=list)
    stuck_charge_ids: list[int] = field(default_factory=list)
    revoking_subscription_ids: list[int] = field(default_factory=list)
    notification_ids: list[int] = field(default_factory=list)
    consent_resumed_ids: list[int] = field(default_factory=list)  # consent_held -> pending
    consent_superseded: int = 0  # consent_held charges skipped: a later cycle came due
    failed_steps: list[tuple[str, str]] = field(default_factory=list)  # (step, error)

    @property
    def charge_ids(self) -> list[int]:
        """Every charge to enqueue."""
        return [*self.new_charge_ids, *self.retry_charge_ids, *self.held_charge_ids,
                *self.stuck_charge_ids, *self.consent_resumed_ids]


Step = Callable[[sessionmaker[Session], datetime, WalkConfig, WalkReport], None]
OnBatch = Callable[[list[int]], None]


DEFAULT_CONFIG = WalkConfig()


def walk(sessions: sessionmaker[Session], now: datetime, config: WalkConfig = DEFAULT_CONFIG,
         on_new_charges: OnBatch | None = None) -> WalkReport:
    """One pass over the database; see the module docstring. Never raises.

    ``on_new_charges``, if given, is called with each batch's new charge ids right after the
    batch commits (the walk task enqueues them there); they are in ``new_charge_ids`` too."""
    report = WalkReport()
    for name, step in STEPS:
        try:
            if name == "due" and on_new_charges is not None:
                report.add(billing.run_step(sessions, billing.due_rows, now, config, on_new_charges,
                                            loops=config.due_loops))
                continue
            step(sessions, now, config, report)
        except Exception as exc:  # noqa: BLE001 - one failing step never stops the others
            log.exception("walk step %r failed; the other steps still run", name)
            report.failed_steps.append((name, f"{type(exc).__name__}: {exc}"[:500]))
    return report


def _cancel(sessions: sessionmaker[Session], now: datetime, config: WalkConfig, report: WalkReport) -> None:
    with sessions.begin() as session:
        report.canceled = cancel_inactive(session, now)


def _statuses(sessions: sessionmaker[Session], now: datetime, config: WalkConfig, report: WalkReport) -> None:
    report.statuses += billing.record_statuses(sessions, config)


def _rows_step(rows: billing.Selector, *, due: bool = False) -> Step:
    def step(sessions: sessionmaker[Session], now: datetime, config: WalkConfig, report: WalkReport) -> None:
        report.add(billing.run_step(sessions, rows, now, config, loops=config.due_loops if due else 1))
    return step


def _consent(sessions: sessionmaker[Session], now: datetime, config: WalkConfig, report: WalkReport) -> None:
    # consent_held charges (few; the status index): resumed once the gate bills their cycle
    # (consent recorded, amount lowered), skipped once a later cycle came due.
    with sessions.begin() as session:
        report.consent_resumed_ids, report.consent_superseded = consenting.review_held(
            session, now, config.lease, config.batch_size)


def _retries(sessions: sessionmaker[Session], now: datetime, config: WalkConfig, report: WalkReport) -> None:
    with sessions.begin() as session:
        report.retry_charge_ids = _claim_charges(
            session, now, config,
            and_(Charge.status == ChargeStatus.RETRY_WAIT, Charge.next_attempt_at <= now))


def _held(sessions: sessionmaker[Session], now: datetime, config: WalkConfig, report: WalkReport) -> None:
    # Same index as retries, (status, next_attempt_at): the engine resumes a held charge where
    # it was held (held_from), with a new key round.
    with sessions.begin() as session:
        report.held_charge_ids = _claim_charges(
            session, now, config,
            and_(Charge.status == ChargeStatus.HELD, Charge.next_attempt_at <= now))


def _stuck(sessions: sessionmaker[Session], now: datetime, config: WalkConfig, report: WalkReport) -> None:
    with sessions.begin() as session:
        report.stuck_charge_ids = _claim_charges(
            session, now, config,
            and_(Charge.status.in_([c.value for c in INFLIGHT_CHARGE_STATUSES]), Charge.lease_until < now))


def _revoking(sessions: sessionmaker[Session], now: datetime, config: WalkConfig, report: WalkReport) -> None:
    with sessions.begin() as session:
        report.revoking_subscription_ids = _claim_revoking(session, now, config)


def _notifications(sessions: sessionmaker[Session], now: datetime, config: WalkConfig,
                   report: WalkReport) -> None:
    with sessions.begin() as session:
        report.notification_ids = _claim_notifications(session, now, config)


def cancel_inactive(session: Session, now: datetime) -> int:
    """Cancel wins: pending attempts of paused/canceled/revoked subscriptions stop here."""
    # Driven by the (few) cancelable charges, each checked against its subscription by key;
    # never a scan of all subscriptions.
    inactive = (select(Subscription.id)
                .where(Subscription.id == Charge.subscription_id, Subscription.status != SS.ACTIVE)
                .exists())
    result = session.execute(
        update(Charge)
        .where(Charge.status.in_(CANCELABLE), inactive)
        .values(status=ChargeStatus.CANCELED, reason="subscription is no longer active",
                next_attempt_at=None, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return rowcount(result)


def _claim_charges(session: Session, now: datetime, config: WalkConfig, condition: Any) -> list[int]:
    ids = list(session.scalars(
        select(Charge.id).where(condition, or_(Charge.lease_until.is_(None),
                                               Charge.lease_until < now))
        .order_by(Charge.id).limit(config.batch_size).with_for_update(skip_locked=True)))
    if ids:
        session.execute(update(Charge).where(Charge.id.in_(ids))
                        .values(lease_until=now + config.lease)
                        .execution_options(synchronize_session=False))
    return ids


def _claim_revoking(session: Session, now: datetime, config: WalkConfig) -> list[int]:
    """``revoking`` subscriptions whose next expire try has come: ``expire_next_at`` past (the
    expire task's backoff, or the marker below), or NULL and last changed a lease ago (a final
    failure enqueues its expire itself; the walk is the safety net if that message is lost).
    The claim moves ``expire_next_at`` one lease forward, so the next walk does not enqueue
    them again while the task runs; the task writes the real next try when NAVER did not
    settle it."""
    due = (Subscription.status == SS.REVOKING,
           or_(Subscription.expire_next_at <= now,
               and_(Subscription.expire_next_at.is_(None), Subscription.updated_at < now - config.lease)))
    ids = list(session.scalars(
        select(Subscription.id).where(*due)
        .limit(config.batch_size).with_for_update(skip_locked=True)))
    if ids:
        session.execute(update(Subscription).where(Subscription.id.in_(ids), *due)
                        .values(expire_next_at=now + config.lease)
                        .execution_options(synchronize_session=False))
    return ids


def _claim_notifications(session: Session, now: datetime, config: WalkConfig) -> list[int]:
    """Outbox rows to (re-)enqueue: ``pending`` ones whose backoff or enqueue marker passed, and
    ``sending`` ones whose delivery died (its claim's lease passed). A dead delivery's row goes
    back to ``pending`` with its claim cleared, so the next delivery may take it; the walk's
    own marker (``lease_until``) only keeps the next walk from enqueueing it again, a delivery
    ignores it for ``pending`` rows."""
    waiting = (Notification.status.in_((NS.PENDING, NS.SENDING)),
               or_(Notification.lease_until.is_(None), Notification.lease_until < now))
    ids = list(session.scalars(
        select(Notification.id).where(*waiting)
        .limit(config.batch_size).with_for_update(skip_locked=True)))
    if ids:
        # The same condition again: a delivery that claimed a row meanwhile keeps it.
        session.execute(update(Notification).where(Notification.id.in_(ids), *waiting)
                        .values(status=NS.PENDING, claim_owner=None, lease_until=now + config.lease)
                        .execution_options(synchronize_session=False))
    return ids


STEPS: tuple[tuple[str, Step], ...] = (
    ("cancel", _cancel),
    ("statuses", _statuses),
    ("resume", _rows_step(billing.resumed_rows)),
    ("schedule", _rows_step(billing.new_rows)),
    ("due", _rows_step(billing.due_rows, due=True)),
    ("consent", _consent),
    ("retries", _retries),
    ("held", _held),
    ("stuck", _stuck),
    ("revoking", _revoking),
    ("notifications", _notifications),
)
