"""The walk: turn due subscriptions into charges, and find charges that need a worker again.

Beat runs one task, ``scheduler.walk``, every ``BILLING_WALK_INTERVAL`` seconds; it calls
:func:`walk`, then enqueues the returned ids. Data flow of one walk (each step its own short
transactions, bounded batches; PostgreSQL claims rows with ``FOR UPDATE SKIP LOCKED``)::

    1. cancel wins     charges pending/retry_wait/reserved of a non-active subscription -> canceled
    2. schedule        active rows with next_charge_at NULL: validate, compute the first cycle
    3. due             active rows with next_charge_at <= now: validate, create one charge per
                       (subscription, cycle) (insert-or-ignore on the unique pair), apply the
                       missed-cycle rule, advance next_charge_at with croniter, commit
    4. retries         retry_wait charges whose next_attempt_at has come
    5. stuck           charges in a non-final state whose lease ran out (a worker died, a
                       message was lost) and subscriptions stuck in ``revoking``
    6. notifications   outbox rows not delivered (their lease ran out)
    -> WalkReport: ids to enqueue, *after* commit. A lost message is simply found again.

Two walks at once cannot bill a cycle twice: the charge row is unique per (subscription,
cycle), and each enqueue is claimed by moving ``lease_until`` forward with a compare-and-set.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from models import INFLIGHT_CHARGE_STATUSES, Charge, ChargeStatus, MissedCycles, Notification, Subscription
from models import NotificationStatus as NS
from models import SubscriptionStatus as SS
from models.db import rowcount
from scheduler.cycles import due_cycles, next_cycle
from scheduler.validation import problems

log = logging.getLogger(__name__)

CANCELABLE = (ChargeStatus.PENDING, ChargeStatus.RETRY_WAIT, ChargeStatus.RESERVED)


@dataclass(frozen=True)
class WalkConfig:
    """Knobs of the walk (defaults suit production; tests shorten the lease)."""

    batch_size: int = 500
    lease: timedelta = timedelta(minutes=6)
    missed_grace: timedelta = timedelta(hours=1)
    max_cycles_per_subscription: int = 100


@dataclass
class WalkReport:
    """What one walk did; the ``*_ids`` lists are what the caller enqueues after commit."""

    scheduled: int = 0
    invalid: list[tuple[int, str]] = field(default_factory=list)
    canceled: int = 0
    skipped: int = 0
    new_charge_ids: list[int] = field(default_factory=list)
    retry_charge_ids: list[int] = field(default_factory=list)
    stuck_charge_ids: list[int] = field(default_factory=list)
    revoking_subscription_ids: list[int] = field(default_factory=list)
    notification_ids: list[int] = field(default_factory=list)

    @property
    def charge_ids(self) -> list[int]:
        """Every charge to enqueue."""
        return [*self.new_charge_ids, *self.retry_charge_ids, *self.stuck_charge_ids]


def merchant_pay_id(recurrent_id: str, cycle_at: datetime) -> str:
    """Deterministic per (registration, cycle): the same cycle always gets the same id."""
    digest = hashlib.sha256(recurrent_id.encode()).hexdigest()[:10]
    return f"NPB{digest}-{cycle_at:%Y%m%d%H%M%S}"


def walk(sessions: sessionmaker[Session], now: datetime, config: WalkConfig = WalkConfig()) -> WalkReport:
    """One pass over the database; see the module docstring."""
    report = WalkReport()
    with sessions.begin() as session:
        report.canceled = cancel_inactive(session, now)
    _in_batches(sessions, lambda s: _schedule_new(s, now, config, report), config)
    _in_batches(sessions, lambda s: _bill_due(s, now, config, report), config)
    with sessions.begin() as session:
        report.retry_charge_ids = _claim_charges(
            session, now, config,
            and_(Charge.status == ChargeStatus.RETRY_WAIT, Charge.next_attempt_at <= now))
    with sessions.begin() as session:
        report.stuck_charge_ids = _claim_charges(
            session, now, config,
            and_(Charge.status.in_([c.value for c in INFLIGHT_CHARGE_STATUSES]), Charge.lease_until < now))
    with sessions.begin() as session:
        report.revoking_subscription_ids = _claim_revoking(session, now, config)
    with sessions.begin() as session:
        report.notification_ids = _claim_notifications(session, now, config)
    return report


def _in_batches(sessions: sessionmaker[Session], step: Any, config: WalkConfig) -> None:
    # Each batch commits on its own, so a crash loses at most one uncommitted batch.
    for _ in range(10_000):
        with sessions.begin() as session:
            if step(session) < config.batch_size:
                return


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


def _locked(query: Select[Any], limit: int) -> Select[Any]:
    # SKIP LOCKED: concurrent walks on PostgreSQL take disjoint rows; ignored on SQLite,
    # where BEGIN IMMEDIATE serialises writers anyway.
    return query.limit(limit).with_for_update(skip_locked=True, of=Subscription)


def _mark_invalid(sub: Subscription, reasons: Sequence[str], now: datetime, report: WalkReport) -> None:
    message = "; ".join(reasons)
    sub.status, sub.last_error, sub.updated_at = SS.INVALID, message, now
    report.invalid.append((sub.id, message))
    log.error("subscription %s is invalid: %s", sub.id, message,
              extra={"subscription_id": sub.id, "recurrent_id": sub.recurrent_id})


def _schedule_new(session: Session, now: datetime, config: WalkConfig, report: WalkReport) -> int:
    # No ORDER BY: sorting by id would tempt SQLite to walk the whole primary key instead
    # of the (status, next_charge_at) index.
    query = select(Subscription).where(Subscription.status == SS.ACTIVE,
                                       Subscription.next_charge_at.is_(None))
    subs = session.scalars(_locked(query, config.batch_size)).unique().all()
    for sub in subs:
        reasons = problems(sub)
        if reasons:
            _mark_invalid(sub, reasons, now, report)
            continue
        sub.next_charge_at = next_cycle(sub.cron, sub.timezone, now)
        sub.last_error, sub.updated_at = None, now
        report.scheduled += 1
    return len(subs)


def _bill_due(session: Session, now: datetime, config: WalkConfig, report: WalkReport) -> int:
    query = select(Subscription).where(Subscription.status == SS.ACTIVE,
                                       Subscription.next_charge_at <= now).order_by(
        Subscription.next_charge_at)
    subs = session.scalars(_locked(query, config.batch_size)).unique().all()
    rows: list[dict[str, Any]] = []
    for sub in subs:
        reasons = problems(sub)
        if reasons:
            _mark_invalid(sub, reasons, now, report)
            continue
        assert sub.next_charge_at is not None
        cycles, following = due_cycles(sub.cron, sub.timezone, sub.next_charge_at, now,
                                       config.max_cycles_per_subscription)
        plan = plan_cycles(cycles, complete=following > now, rule=sub.merchant.missed_cycles,
                           cutoff=now - config.missed_grace)
        rows += [_charge_row(sub, cycle_at, reason, now, config) for cycle_at, reason in plan]
        sub.next_charge_at, sub.updated_at = following, now
    for charge_id, status in _insert_charges(session, rows):
        if status == ChargeStatus.SKIPPED:
            report.skipped += 1
        else:
            report.new_charge_ids.append(charge_id)
    return len(subs)


def _charge_row(sub: Subscription, cycle_at: datetime, skip_reason: str | None, now: datetime,
                config: WalkConfig) -> dict[str, Any]:
    return {"subscription_id": sub.id, "recurrent_id": sub.recurrent_id, "cycle_at": cycle_at,
            "merchant_pay_id": merchant_pay_id(sub.recurrent_id, cycle_at), "amount": sub.amount,
            "tax_free_amount": sub.tax_free_amount,
            "status": ChargeStatus.SKIPPED if skip_reason else ChargeStatus.PENDING,
            "reason": skip_reason, "lease_until": None if skip_reason else now + config.lease,
            "created_at": now, "updated_at": now}


def plan_cycles(
    cycles: Sequence[datetime], *, complete: bool, rule: str, cutoff: datetime
) -> list[tuple[datetime, str | None]]:
    """Pair each due cycle with a skip reason (None = bill it), per the missed-cycle rule.

    Cycles at or after ``cutoff`` (now minus the grace period) are simply due and always
    billed. Older ones were *missed* (an outage): ``all`` bills them, ``skip`` skips them,
    ``latest`` bills only the newest missed one, and none if a recent cycle stands in for
    it. ``complete`` is False when more cycles are due than one walk enumerates; then none
    of these is the latest. Every cycle gets a row, so no cycle is ever silently lost.
    """
    recent = [c for c in cycles if c >= cutoff]
    missed = [c for c in cycles if c < cutoff]
    if rule == MissedCycles.ALL:
        billed = set(cycles)
    elif rule == MissedCycles.SKIP or recent or not complete:
        billed = set(recent)
    else:  # latest, and only missed cycles are due
        billed = {missed[-1]} if missed else set()
    reason = f"missed cycle, not billed (missed_cycles={rule})"
    return [(c, None if c in billed else reason) for c in cycles]


def _insert_charges(session: Session, rows: list[dict[str, Any]]) -> list[tuple[int, str]]:
    """Insert-or-ignore on (subscription, cycle); returns (id, status) of the rows inserted.

    A cycle that already has its charge (another walk made it) is silently left alone.
    """
    if not rows:
        return []
    from sqlalchemy.dialects import postgresql, sqlite

    table = Charge.__table__
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    stmt = (dialect.insert(table)
            .on_conflict_do_nothing(index_elements=["subscription_id", "cycle_at"])
            .returning(table.c.id, table.c.status))
    session.flush()  # the subscriptions' new next_charge_at goes out in the same transaction
    return [(row.id, row.status) for row in session.execute(stmt, rows)]


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
