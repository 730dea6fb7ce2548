"""``npay-billing subscriptions pause | resume | cancel``: status changes an operator may make.

Allowed transitions (anything else is refused with the reason and what to do)::

    active ──pause──▶ paused ──resume──▶ active
    active | paused | invalid ──cancel──▶ canceled        (final)
    invalid ──resume (the row re-validated)──▶ active     (last_error, next_charge_at cleared)

Each change is a compare-and-set on ``status``, so a walk or a charge racing with the command
cannot be overwritten. Cancel wins: pausing or canceling also cancels the subscription's
charges that have not started (pending, retry_wait, reserved), as the walk would.
Resuming a paused subscription does not bill the cycles that came due while it was paused: a
``next_charge_at`` in the past is cleared, so the walk schedules the next cycle after now.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import click

from worker.cli.output import emit_json
from worker.cli.support import Refused, current_env, find_subscription, json_option

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from models import Subscription


@dataclass(frozen=True)
class Change:
    """What a lifecycle command did."""

    id: int
    previous: str
    status: str
    canceled_charges: int = 0
    note: str = ""


Plan = Callable[["Session", "Subscription", datetime], Change]


def blocked(sub: Subscription, done: str) -> str:
    """Why ``sub`` cannot be ``done`` (paused, resumed, canceled) now, and what to do."""
    sid, status = sub.id, sub.status
    reasons = {
        "revoked": f"subscription {sid} is revoked: its NAVER Pay registration was expired; "
                   "the customer must register again",
        "revoking": f"subscription {sid} is revoking: its NAVER Pay registration is being "
                    "expired after a final failure; the customer must register again",
        "canceled": f"subscription {sid} is canceled, which is final; it cannot be {done}",
        "invalid": f"subscription {sid} is invalid ({sub.last_error or 'see last_error'}); fix the "
                   f"row with SQL, then run `npay-billing subscriptions resume {sid}`",
        "active": f"subscription {sid} is active; only a paused or invalid one can be resumed",
    }
    return reasons.get(status, f"subscription {sid} is {status}; it cannot be {done}")


def _cancel_pending(session: Session, sub: Subscription, now: datetime, why: str) -> int:
    from sqlalchemy import update

    from models import Charge
    from scheduler.walk import CANCELABLE

    result = session.execute(
        update(Charge).where(Charge.subscription_id == sub.id, Charge.status.in_(CANCELABLE))
        .values(status="canceled", reason=f"subscription {why} by an operator",
                next_attempt_at=None, updated_at=now)
        .execution_options(synchronize_session=False))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def _set(session: Session, sub: Subscription, **values: object) -> None:
    """Compare-and-set: change ``sub`` only if its status is still the one read."""
    from sqlalchemy import update

    from models import Subscription

    result = session.execute(
        update(Subscription).where(Subscription.id == sub.id, Subscription.status == sub.status)
        .values(**values).execution_options(synchronize_session=False))
    if not result.rowcount:  # type: ignore[attr-defined]
        raise Refused(f"subscription {sub.id} changed while this command ran; run it again")


def _apply(key: str, plan: Plan) -> Change:
    from models import utcnow

    now = utcnow()
    with current_env().sessions().begin() as session:
        return plan(session, find_subscription(session, key), now)


def _stop(target: str, allowed: tuple[str, ...]) -> Plan:
    """The plan of pause (target ``paused``) or cancel (target ``canceled``)."""
    def plan(session: Session, sub: Subscription, now: datetime) -> Change:
        previous = sub.status
        if previous == target:
            return Change(sub.id, previous, target)
        if previous not in allowed:
            raise Refused(blocked(sub, target))
        _set(session, sub, status=target, updated_at=now)
        return Change(sub.id, previous, target, _cancel_pending(session, sub, now, target))
    return plan


def _resume(session: Session, sub: Subscription, now: datetime) -> Change:
    from scheduler.validation import problems

    previous = sub.status
    if previous == "active":
        return Change(sub.id, previous, previous)
    if previous == "invalid":
        found = problems(sub)
        if found:
            raise Refused(f"subscription {sub.id} is still invalid: {'; '.join(found)}; fix the row "
                          "with SQL and run resume again")
        _set(session, sub, status="active", last_error=None, next_charge_at=None, updated_at=now)
        return Change(sub.id, previous, "active", note="the walk schedules its next charge")
    if previous != "paused":
        raise Refused(blocked(sub, "resumed"))
    late = sub.next_charge_at is not None and sub.next_charge_at <= now
    _set(session, sub, status="active", updated_at=now,
         next_charge_at=None if late else sub.next_charge_at)
    return Change(sub.id, previous, "active",
                  note="cycles due while paused are not billed" if late else "")


def _report(change: Change, as_json: bool) -> None:
    if as_json:
        emit_json({"id": change.id, "previous_status": change.previous, "status": change.status,
                   "canceled_charges": change.canceled_charges, "note": change.note or None})
        return
    if change.previous == change.status:
        click.echo(f"subscription {change.id} is already {change.status}; nothing to do")
        return
    line = f"subscription {change.id}: {change.previous} -> {change.status}"
    if change.canceled_charges:
        line += f"; canceled {change.canceled_charges} charge(s) not yet started"
    if change.note:
        line += f"; {change.note}"
    click.echo(line)


KEY = click.argument("key", metavar="ID_OR_RECURRENT_ID")


@click.command()
@KEY
@json_option
def pause(key: str, as_json: bool) -> None:
    """Stop billing an active subscription (its waiting retries are canceled)."""
    _report(_apply(key, _stop("paused", ("active",))), as_json)


@click.command()
@KEY
@json_option
def resume(key: str, as_json: bool) -> None:
    """Bill a paused subscription again, or an invalid one once its row is fixed."""
    _report(_apply(key, _resume), as_json)


@click.command()
@KEY
@json_option
def cancel(key: str, as_json: bool) -> None:
    """End a subscription for good (its charges not yet started are canceled)."""
    _report(_apply(key, _stop("canceled", ("active", "paused", "invalid"))), as_json)
