"""Surfacing: a charge whose NAVER outcome stays unsettled past a bound is shown to a human.

The charge engine is conservative on purpose: an unreadable reserve answer is replayed with
the same key, an ``unknown`` approval is resolved through history and re-sent with the same
key, a held charge waits for its cause to be fixed; none of these ever gets a new key while
the outcome is unknown. That can last for ever, so it must not last *silently*.
``stuck_since`` is set when a charge enters ``reserving``/``approving``/``unknown``/``held``
and cleared when it settles (``worker.charge_store.compare_and_set``); :func:`surface_stuck`
finds the ones unsettled for longer than ``BILLING_SURFACE_AFTER_SECONDS`` and, once per stuck
episode, sets ``surfaced_at``, logs an error and queues a ``charge.stuck`` alert to the
merchant's webhook. The engine keeps working on the charge meanwhile (it may still settle by
itself, which clears ``surfaced_at``); a surfaced charge no longer holds back the newer
cycles of its subscription. ``npay-billing status`` and the metrics show the count and the
oldest age (``worker.overview``).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from models import UNSETTLED_CHARGE_STATUSES, Charge
from worker import notify

UNSETTLED = [status.value for status in UNSETTLED_CHARGE_STATUSES]


def surface_stuck(session: Session, now: datetime, after: timedelta, limit: int = 500) -> int:
    """Surface up to ``limit`` charges unsettled since before ``now - after`` and not surfaced
    yet (oldest first), in the caller's transaction; how many were surfaced."""
    ids = list(session.scalars(
        select(Charge.id).where(Charge.stuck_since < now - after, Charge.surfaced_at.is_(None),
                                Charge.status.in_(UNSETTLED))
        .order_by(Charge.stuck_since).limit(limit).with_for_update(skip_locked=True)))
    surfaced = 0
    for charge_id in ids:
        # Only surfaced_at is written: the engine's compare-and-set (status, owner) is untouched.
        moved = session.execute(
            update(Charge).where(Charge.id == charge_id, Charge.surfaced_at.is_(None),
                                 Charge.status.in_(UNSETTLED), Charge.stuck_since < now - after)
            .values(surfaced_at=now).returning(Charge.id)).first()
        if moved is None:
            continue  # it settled meanwhile
        charge = session.get(Charge, charge_id, populate_existing=True)
        assert charge is not None
        _alert(session, charge, now)
        surfaced += 1
    return surfaced


def _alert(session: Session, charge: Charge, now: datetime) -> None:
    assert charge.stuck_since is not None
    age = now - charge.stuck_since
    hours = age.total_seconds() / 3600
    notify.queue_alert(
        session, notify.CHARGE_STUCK, charge.subscription, now, charge=charge,
        dedupe=f"{charge.id}:{charge.stuck_since.isoformat()}",
        message=(f"charge {charge.id} has been {charge.status} for {hours:.1f} h (since "
                 f"{charge.stuck_since.isoformat()}): NAVER Pay's outcome is not settled. It is "
                 f"still retried with the same key (never a second charge); check the payment "
                 f"{charge.payment_id or '(not reserved yet)'} in NAVER Pay and the charge's "
                 f"attempts (`npay-billing charges show {charge.id}`)."),
        details={"status": charge.status, "stuck_since": charge.stuck_since.isoformat(),
                 "age_seconds": int(age.total_seconds()), "payment_id": charge.payment_id,
                 "last_code": charge.last_code, "held_from": charge.held_from})
