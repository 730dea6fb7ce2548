"""The walk's side of the consent rule: the gate (:mod:`scheduler.consent`) applied to rows.

Data flow (inside the walk's batch transaction, rows locked by the batch)::

    subscription first seen (agreed_amount NULL)  agreed_amount = amount (0 in a free trial);
                                                  a trial adds its price change (0 -> amount)
    each cycle the missed-cycle rule bills        gate(cycle) -> bill | skip | hold | pause
        bill    charge pending at the gated amount, ``agreed_amount`` = the gate's answer
        skip    charge skipped with the reason (free trial, old amount 0)
        hold    charge ``consent_held`` (surfaced at once; the worker alerts the merchant)
        pause   charge skipped, subscription paused, the change marks ``paused_at``
    changes the gate applied                      status applied; subscription amount/agreed

:func:`review_held` is the walk step for ``consent_held`` charges: superseded by a later cycle
of the same subscription -> skipped; the gate now bills the cycle (consent recorded, amount
lowered) -> pending at the gated amount; otherwise they stay held.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from models import Charge, ChargeStatus, PriceChange, PriceChangeKind, Subscription
from models import PriceChangeStatus as PCS
from models import SubscriptionStatus as SS
from scheduler.batchsql import values_among
from scheduler.consent import BILL, HOLD, OPEN_STATUSES, PAUSE, SKIP, Change, Verdict, gate, initial_agreed


@dataclass(frozen=True)
class Planned:
    """One cycle's charge as the consent gate shaped it."""

    cycle_at: datetime
    status: ChargeStatus
    amount: int
    agreed: int | None
    reason: str | None


def open_changes(session: Session, sub_ids: Iterable[int]) -> dict[int, list[PriceChange]]:
    """Open price changes (pending, consented) of these subscriptions, by subscription."""
    ids = sorted(set(sub_ids))
    found: dict[int, list[PriceChange]] = {i: [] for i in ids}
    if not ids:
        return found
    session.flush()  # what a query would autoflush (the Core probe below does not)
    # Most rows have none (a month-start spike: none at all): a Core probe for which ones do,
    # then ORM objects (the gate writes them) for those only.
    table = cast(Table, PriceChange.__table__)
    having = sorted(values_among(session.connection(), table, "subscription_id", ids,
                                 where=("status", [str(s) for s in OPEN_STATUSES])))
    if not having:
        return found
    rows = session.scalars(select(PriceChange).where(PriceChange.subscription_id.in_(having),
                                                     PriceChange.status.in_(OPEN_STATUSES)))
    for row in rows:
        found[row.subscription_id].append(row)
    return found


def first_sight(session: Session, sub: Subscription, changes: list[PriceChange], now: datetime) -> None:
    """A row the walk has not seen yet: what the customer agreed to at registration."""
    if sub.agreed_amount is not None:
        return
    sub.agreed_amount = initial_agreed(sub.amount, sub.trial_ends_at)
    if sub.trial_ends_at is not None:
        trial = PriceChange(subscription_id=sub.id, new_amount=sub.amount, effective_at=sub.trial_ends_at,
                            kind=PriceChangeKind.TRIAL, status=PCS.PENDING, old_amount=0,
                            created_at=now, updated_at=now)
        session.add(trial)
        session.flush()  # its id, for the gate's messages
        changes.append(trial)


def _as_change(row: PriceChange) -> Change:
    return Change(row.id, row.new_amount, row.effective_at, row.status == PCS.CONSENTED, row.kind)


def verdict_for(sub: Subscription, changes: Sequence[PriceChange], cycle_at: datetime) -> Verdict:
    """The gate's answer for ``sub``'s cycle at ``cycle_at`` (changes nothing)."""
    agreed = sub.agreed_amount
    if agreed is None:
        agreed = initial_agreed(sub.amount, sub.trial_ends_at)
    return gate(amount=sub.amount, agreed=agreed, cycle_at=cycle_at,
                changes=[_as_change(c) for c in changes if c.status in OPEN_STATUSES],
                trial_ends_at=sub.trial_ends_at, missing=sub.merchant.consent_missing)


def _apply_verdict(sub: Subscription, changes: Sequence[PriceChange], verdict: Verdict,
                   now: datetime) -> None:
    """Write what the gate applied: the subscription's amounts and the changes' states."""
    by_id = {c.id: c for c in changes}
    for change_id in verdict.applied:
        row = by_id[change_id]
        row.status, row.applied_at, row.updated_at = PCS.APPLIED, now, now
        if row.old_amount is None:
            row.old_amount = sub.agreed_amount
    if sub.amount != verdict.amount:
        # tax_free_amount stays within the new amount (the CHECK constraint would refuse it)
        sub.tax_free_amount = min(sub.tax_free_amount, verdict.amount)
        sub.amount = verdict.amount
    sub.agreed_amount = verdict.agreed
    if verdict.blocked_by is not None:
        row = by_id[verdict.blocked_by.id]
        row.note = verdict.reason
        if verdict.action == PAUSE:
            row.paused_at = now


def plan_amounts(sub: Subscription, cycles: Sequence[tuple[datetime, str | None]],
                 changes: list[PriceChange], now: datetime) -> list[Planned]:
    """The charge of each cycle the walk creates (``cycles``: (cycle, missed-cycle skip reason
    or None)), through the gate; writes the subscription and its changes accordingly."""
    planned: list[Planned] = []
    paused: str | None = None
    for cycle_at, skip_reason in cycles:
        if skip_reason is not None or paused is not None:
            planned.append(Planned(cycle_at, ChargeStatus.SKIPPED, sub.amount, None, skip_reason or paused))
            continue
        verdict = verdict_for(sub, changes, cycle_at)
        _apply_verdict(sub, changes, verdict, now)
        if verdict.action == BILL:
            planned.append(Planned(cycle_at, ChargeStatus.PENDING, verdict.amount, verdict.agreed, None))
        elif verdict.action == HOLD:
            planned.append(Planned(cycle_at, ChargeStatus.CONSENT_HELD, verdict.amount, verdict.agreed,
                                   verdict.reason))
        else:
            planned.append(Planned(cycle_at, ChargeStatus.SKIPPED, sub.amount, None, verdict.reason))
            if verdict.action == PAUSE:
                paused = verdict.reason
                sub.status = sub.seen_status = SS.PAUSED
                sub.last_error = verdict.reason
        assert verdict.action in (BILL, HOLD, SKIP, PAUSE)
    return planned


def held_values(planned: Planned, now: datetime) -> dict[str, Any]:
    """Columns of a charge the walk creates ``consent_held``: surfaced at once (it is in
    ``npay-billing status`` and the logs), its merchant alert due now (``next_attempt_at``,
    picked up by the worker's consent step)."""
    return {"surfaced_at": now, "next_attempt_at": now, "last_code": "ConsentRequired",
            "lease_until": None}


def review_held(session: Session, now: datetime, lease: timedelta, limit: int) -> tuple[list[int], int]:
    """The walk step for ``consent_held`` charges of active subscriptions: (charge ids resumed
    to pending, to enqueue; how many were skipped as superseded)."""
    held = list(session.scalars(
        select(Charge).join(Subscription, Subscription.id == Charge.subscription_id)
        .where(Charge.status == ChargeStatus.CONSENT_HELD, Subscription.status == SS.ACTIVE)
        .order_by(Charge.cycle_at).limit(limit).with_for_update(skip_locked=True, of=Charge)).unique())
    resumed: list[int] = []
    skipped = 0
    changes = open_changes(session, [c.subscription_id for c in held])
    for charge in held:
        sub = charge.subscription
        newer = session.scalar(select(Charge.id).where(Charge.subscription_id == sub.id,
                                                       Charge.cycle_at > charge.cycle_at).limit(1))
        if newer is not None:
            charge.status, charge.next_attempt_at, charge.updated_at = ChargeStatus.SKIPPED, None, now
            charge.reason = (f"{charge.reason}; not billed: the next cycle came due while it was held "
                             "for consent")
            skipped += 1
            continue
        verdict = verdict_for(sub, changes[sub.id], charge.cycle_at)
        if verdict.action != BILL:
            continue
        _apply_verdict(sub, changes[sub.id], verdict, now)
        sub.updated_at = now
        charge.status, charge.amount = ChargeStatus.PENDING, verdict.amount
        charge.agreed_amount = verdict.agreed
        charge.tax_free_amount = min(charge.tax_free_amount, verdict.amount)
        charge.reason, charge.last_code, charge.surfaced_at = None, None, None
        charge.next_attempt_at, charge.lease_until, charge.updated_at = None, now + lease, now
        resumed.append(charge.id)
    session.flush()
    return resumed, skipped
