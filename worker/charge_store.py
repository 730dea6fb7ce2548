"""The charge's storage primitives: the per-registration lease and compare-and-set.

* :func:`acquire_lease` takes the subscription's lease (``lock_owner``/``lock_until``), which
  makes "one charge per recurrentId at a time" hold across processes and machines. A lease
  that ran out (its worker died) can be taken over; the new run then resolves whatever state
  the dead one left.
* :func:`compare_and_set` moves a charge to a new status only if it is still in one of the
  expected ones: two runs racing on a transition cannot both win it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, or_, update
from sqlalchemy.orm import Session, sessionmaker

from models import FINAL_CHARGE_STATUSES, Charge, Subscription
from models import ChargeStatus as CS
from models.db import rowcount

log = logging.getLogger(__name__)


def acquire_lease(sessions: sessionmaker[Session], charge_id: int, owner: str, now: datetime,
                  lease: timedelta) -> Charge | None:
    """Take the charge's subscription lease for ``owner``; the charge, or None when busy."""
    with sessions.begin() as s:
        charge = s.get(Charge, charge_id)
        if charge is None:
            log.error("charge %s does not exist", charge_id, extra={"charge_id": charge_id})
            return None
        got = rowcount(s.execute(
            update(Subscription)
            .where(Subscription.id == charge.subscription_id,
                   or_(Subscription.lock_until.is_(None), Subscription.lock_until < now,
                       Subscription.lock_owner == owner))
            .values(lock_owner=owner, lock_until=now + lease)
        ))
        if not got:
            log.info("charge %s is busy (another run holds its registration)", charge_id)
            return None
        charge.lease_until = now + lease  # the walk leaves it alone while this run lasts
        return charge


def release_lease(sessions: sessionmaker[Session], charge: Charge, owner: str) -> None:
    """Give the lease back (only if ``owner`` still holds it)."""
    settled = [CS.RETRY_WAIT.value, *(status.value for status in FINAL_CHARGE_STATUSES)]
    with sessions.begin() as s:
        # Waiting for next_attempt_at (or done): the walk may claim it when it is due. An
        # in-flight charge keeps its lease, after which the walk takes it again.
        s.execute(update(Charge).where(Charge.id == charge.id, Charge.status.in_(settled))
                  .values(lease_until=None))
        s.execute(update(Subscription)
                  .where(Subscription.id == charge.subscription_id, Subscription.lock_owner == owner)
                  .values(lock_owner=None, lock_until=None))


def load_charge(sessions: sessionmaker[Session], charge_id: int) -> Charge:
    """The charge with its subscription and merchant, as committed now."""
    with sessions() as s:
        charge = s.get(Charge, charge_id)
        assert charge is not None
        return charge


def compare_and_set(s: Session, charge: Charge, sources: Iterable[CS], target: CS, now: datetime,
                    **values: Any) -> bool:
    """Move ``charge`` to ``target`` only if it is still in ``sources``; whether it moved."""
    table = cast(Table, Charge.__table__)  # a Core UPDATE: this runs several times per charge, keep it lean
    moved = rowcount(s.connection().execute(
        update(table)
        .where(table.c.id == charge.id, table.c.status.in_([c.value for c in sources]))
        .values(status=target, updated_at=now, **values)
    ))
    if moved:
        log.info("charge %s: %s -> %s", charge.id, charge.status, target.value)
    else:
        log.info("charge %s: lost the race to move to %s", charge.id, target.value)
    return bool(moved)
