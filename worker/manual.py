"""Manual retry of a charge by an operator, safe to call at any time.

Rules (``retry_charge``):
* ``succeeded``: refused. The cycle is paid; it is never charged again.
* ``amount_mismatch``: refused. Money moved differently than reserved; a human must look.
* in flight (``pending``, ``reserving``, ``reserved``, ``approving``, ``unknown``): nothing
  to change; the charge is enqueued again (the lease and compare-and-set make a duplicate
  run harmless).
* ``retry_wait``: the next attempt is moved to now.
* ``held`` (a merchant-side fault, e.g. credentials just fixed): resumed now, where it was
  held, without consuming an attempt.
* ``consent_held``: refused; recording the consent or lowering the amount resumes it.
* ``failed``, ``canceled``, ``skipped``: re-opened (``retry_wait``, due now) only when
  ``reopen=True`` and the subscription is active; a revoked registration cannot be charged.
A recurrentId stands for its subscription's most recent charge that is not succeeded.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from models import INFLIGHT_CHARGE_STATUSES, Charge, Subscription
from models import ChargeStatus as CS
from models import SubscriptionStatus as SS
from models.db import rowcount


class RetryRefused(Exception):
    """The charge cannot be retried; the message says why and what to do instead."""


@dataclass(frozen=True)
class RetryDecision:
    """Which charge to run now, and what was changed to make it runnable."""

    charge_id: int
    previous_status: str
    action: str  # "enqueued" | "due_now" | "resume_now" | "reopened"


def find_charge(session: Session, target: str) -> Charge:
    """A charge by id (digits) or by recurrentId (its latest charge not succeeded)."""
    if target.isdigit():
        charge = session.get(Charge, int(target))
        if charge is None:
            raise RetryRefused(f"no charge with id {target}; see `npay-billing charges list`")
        return charge
    charge = session.scalars(
        select(Charge).where(Charge.recurrent_id == target, Charge.status != CS.SUCCEEDED)
        .order_by(Charge.cycle_at.desc()).limit(1)).first()
    if charge is None:
        exists = session.scalar(select(Subscription.id).where(Subscription.recurrent_id == target))
        if exists is None:
            raise RetryRefused(f"no subscription with recurrentId {target!r}")
        raise RetryRefused(f"recurrentId {target!r} has no charge to retry (all succeeded or none yet)")
    return charge


def prepare_retry(sessions: sessionmaker[Session], target: str, now: datetime,
                  reopen: bool = False) -> RetryDecision:
    """Make the charge runnable now (or refuse, saying why); the caller enqueues it."""
    with sessions.begin() as s:
        charge = find_charge(s, target)
        status = charge.status
        action = retry_action(charge, reopen)
        if action == "enqueued":
            return RetryDecision(charge.id, status, action)
        if action == "resume_now":
            moved = rowcount(s.execute(update(Charge).where(Charge.id == charge.id, Charge.status == CS.HELD)
                                       .values(next_attempt_at=now, lease_until=None, updated_at=now)))
            if not moved:
                raise RetryRefused(f"charge {charge.id} changed while retrying; run the command again")
            return RetryDecision(charge.id, status, action)
        moved = rowcount(s.execute(update(Charge).where(Charge.id == charge.id, Charge.status == status)
                          .values(status=CS.RETRY_WAIT, next_attempt_at=now, lease_until=None,
                                  reason=None if action == "reopened" else charge.reason,
                                  updated_at=now)))
        if not moved:
            raise RetryRefused(f"charge {charge.id} changed while retrying; run the command again")
        return RetryDecision(charge.id, status, action)


def retry_action(charge: Charge, reopen: bool = False) -> str:
    """What :func:`prepare_retry` would do with ``charge`` ("enqueued", "due_now",
    "resume_now" or "reopened"), or RetryRefused with its reason. Pure: changes nothing (the CLI uses it to
    fail fast before sending the task; the task decides again under its own transaction)."""
    status = CS(charge.status)
    if status == CS.SUCCEEDED:
        raise RetryRefused(f"charge {charge.id} already succeeded (paymentId "
                           f"{charge.payment_id}); a paid cycle is never charged again")
    if status == CS.AMOUNT_MISMATCH:
        raise RetryRefused(f"charge {charge.id} was approved for {charge.approved_amount} won "
                           f"instead of {charge.amount}; check it with NAVER Pay before anything else")
    if status in INFLIGHT_CHARGE_STATUSES:
        return "enqueued"
    if status == CS.RETRY_WAIT:
        return "due_now"
    if status == CS.HELD:
        return "resume_now"
    if status == CS.CONSENT_HELD:
        raise RetryRefused(f"charge {charge.id} is held for the customer's consent ({charge.reason}); "
                           "record the consent (`npay-billing consent record`) or lower the amount: "
                           "the walk then resumes it")
    if not reopen:
        raise RetryRefused(f"charge {charge.id} is {status}; pass --reopen to try it again")
    sub = charge.subscription
    if sub.status in (SS.REVOKING, SS.REVOKED):
        raise RetryRefused(f"charge {charge.id}: subscription {sub.id} is {sub.status}: its NAVER Pay "
                           "registration was expired; the customer must register again")
    if sub.status != SS.ACTIVE:
        raise RetryRefused(f"charge {charge.id}: subscription {sub.id} is {sub.status}; "
                           "only an active subscription can be charged (resume it first)")
    return "reopened"
