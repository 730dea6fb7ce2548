"""The charge's storage primitives: run ownership, the per-registration lease, compare-and-set.

* :func:`acquire_lease` takes the subscription's lease (``lock_owner``/``lock_until``), which
  makes "one charge per recurrentId at a time" hold across processes and machines, and makes
  the run the charge's owner (``lease_owner``). A lease that ran out (its worker died, or a
  run overstayed) can be taken over; the new run then resolves whatever state the old one left.
* :func:`compare_and_set` moves a charge to a new status only if it is still in one of the
  expected ones **and the run still owns it**: two runs racing on a transition cannot both
  win it, and a run that lost its lease (:class:`LeaseLost`) stops without writing. Every
  transition renews the lease and records the status the row actually moved from
  (``prev_status``, returned by the same UPDATE), which is what the log line prints.
* :func:`renew` extends both leases after each NAVER call; a run that finds it no longer owns
  the charge stops there.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, case, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.expression import ClauseElement

from models import (
    FINAL_CHARGE_STATUSES,
    NONFINAL_CHARGE_STATUSES,
    UNSETTLED_CHARGE_STATUSES,
    Charge,
    ChargeAttempt,
    Subscription,
)
from models import ChargeStatus as CS
from models.db import rowcount

log = logging.getLogger(__name__)
CHARGES = cast(Table, Charge.__table__)  # Core statements: these run several times per charge
SUBSCRIPTIONS = cast(Table, Subscription.__table__)
ATTEMPTS = cast(Table, ChargeAttempt.__table__)
SETTLED = [CS.RETRY_WAIT.value, CS.HELD.value, *(status.value for status in FINAL_CHARGE_STATUSES)]
WAITED_FOR = [status.value for status in NONFINAL_CHARGE_STATUSES if status != CS.HELD]
UNSETTLED = [status.value for status in UNSETTLED_CHARGE_STATUSES]


class LeaseLost(Exception):
    """Another run owns this charge now (ours overstayed its lease): stop, write nothing."""


def acquire_lease(sessions: sessionmaker[Session], charge_id: int, owner: str, now: datetime,
                  lease: timedelta) -> Charge | None:
    """Take the charge's subscription lease for ``owner`` and own the charge; the charge (with
    its subscription and merchant), or None when it does not exist or is busy."""
    with sessions.begin() as s:
        charge = s.get(Charge, charge_id)
        if charge is None:
            log.error("charge %s does not exist", charge_id, extra={"charge_id": charge_id})
            return None
        if charge.status in FINAL_CHARGE_STATUSES:
            return charge  # nothing to do; no lease needed
        got = rowcount(s.execute(
            update(SUBSCRIPTIONS)
            .where(SUBSCRIPTIONS.c.id == charge.subscription_id,
                   or_(SUBSCRIPTIONS.c.lock_until.is_(None), SUBSCRIPTIONS.c.lock_until < now,
                       SUBSCRIPTIONS.c.lock_owner == owner))
            .values(lock_owner=owner, lock_until=now + lease)
        ))
        if not got:
            log.info("charge %s is busy (another run holds its registration)", charge_id)
            return None
        # From here on only this run's transitions can move the charge (a run that held it
        # before and overstayed finds lease_owner changed and stops).
        s.execute(update(CHARGES).where(CHARGES.c.id == charge_id)
                  .values(lease_owner=owner, lease_until=now + lease))
        charge.lease_owner, charge.lease_until = owner, now + lease
        return charge


def older_open_charge(sessions: sessionmaker[Session], charge: Charge) -> int | None:
    """An older cycle of the same subscription that is not final and not surfaced to a human
    (a held charge has alerted the merchant; a surfaced one a human): cycles of one
    registration run oldest first, so the caller must wait for it."""
    with sessions() as s:
        return s.scalar(
            select(CHARGES.c.id).where(
                CHARGES.c.subscription_id == charge.subscription_id,
                CHARGES.c.cycle_at < charge.cycle_at,
                CHARGES.c.status.in_(WAITED_FOR), CHARGES.c.surfaced_at.is_(None))
            .order_by(CHARGES.c.cycle_at).limit(1))


def last_approval_at(sessions: sessionmaker[Session], charge: Charge) -> datetime | None:
    """When this charge's latest approval call ended (as the engine's clock recorded it), or
    the charge entered ``approving`` if that is later (a run may have died mid-call before
    recording it): NAVER may still be processing a request sent around then."""
    with sessions() as s:
        recorded: datetime | None = s.scalar(select(func.max(ATTEMPTS.c.created_at))
                            .where(ATTEMPTS.c.charge_id == charge.id, ATTEMPTS.c.kind == "approve"))
    if charge.status == CS.APPROVING and charge.updated_at is not None:
        return max(recorded, charge.updated_at) if recorded else charge.updated_at
    return recorded


def later_success(session: Session, charge: Charge) -> int | None:
    """A later cycle of the same subscription that succeeded (its registration works)."""
    return session.scalar(select(CHARGES.c.id).where(
        CHARGES.c.subscription_id == charge.subscription_id, CHARGES.c.cycle_at > charge.cycle_at,
        CHARGES.c.status == CS.SUCCEEDED).limit(1))


def renew(s: Session, charge: Charge, owner: str, now: datetime, lease: timedelta) -> bool:
    """Extend the run's leases; False when the run no longer owns the charge."""
    owned = rowcount(s.execute(
        update(CHARGES).where(CHARGES.c.id == charge.id, CHARGES.c.lease_owner == owner)
        .values(lease_until=now + lease)))
    if owned:
        s.execute(update(SUBSCRIPTIONS).where(SUBSCRIPTIONS.c.id == charge.subscription_id,
                                              SUBSCRIPTIONS.c.lock_owner == owner)
                  .values(lock_until=now + lease))
    return bool(owned)


def release_lease(sessions: sessionmaker[Session], charge: Charge, owner: str,
                  resume_at: datetime | None = None) -> None:
    """Give the leases back (only what ``owner`` still holds).

    A settled charge (waiting for ``next_attempt_at``, held, or final) is left for the walk to
    claim when it is due. An in-flight one keeps ``lease_until`` (or gets ``resume_at``: a
    backoff), after which the walk takes it again.
    """
    with sessions.begin() as s:
        s.execute(update(CHARGES).where(CHARGES.c.id == charge.id, CHARGES.c.lease_owner == owner)
                  .values(lease_owner=None,
                          lease_until=case((CHARGES.c.status.in_(SETTLED), None),
                                           else_=resume_at if resume_at is not None
                                           else CHARGES.c.lease_until)))
        s.execute(update(SUBSCRIPTIONS)
                  .where(SUBSCRIPTIONS.c.id == charge.subscription_id,
                         SUBSCRIPTIONS.c.lock_owner == owner)
                  .values(lock_owner=None, lock_until=None))


def subscription_status(sessions: sessionmaker[Session], subscription_id: int) -> str | None:
    """The subscription's status as committed now (cancel wins: read before each NAVER call)."""
    with sessions() as s:
        return s.scalar(select(SUBSCRIPTIONS.c.status).where(SUBSCRIPTIONS.c.id == subscription_id))


def compare_and_set(s: Session, charge: Charge, sources: Iterable[CS], target: CS, now: datetime, *,
                    owner: str | None, lease: timedelta | None = None, **values: Any) -> bool:
    """Move ``charge`` to ``target`` only if it is still in ``sources`` and (with ``owner``)
    still owned by this run; whether it moved. Raises :class:`LeaseLost` when another run
    owns the charge. With ``lease``, the run's lease is renewed in the same statement."""
    conditions = [CHARGES.c.id == charge.id, CHARGES.c.status.in_([c.value for c in sources])]
    if owner is not None:
        conditions.append(CHARGES.c.lease_owner == owner)
    if lease is not None:
        values.setdefault("lease_until", now + lease)
    if target in UNSETTLED_CHARGE_STATUSES:
        # Unsettled since when: kept across unknown <-> approving <-> held, for surfacing.
        values["stuck_since"] = func.coalesce(CHARGES.c.stuck_since, now)
    else:
        values["stuck_since"] = None
        values.setdefault("surfaced_at", None)
    row = s.execute(
        update(CHARGES).where(*conditions)
        .values(status=target.value, prev_status=CHARGES.c.status, updated_at=now, **values)
        .returning(CHARGES.c.prev_status)
    ).first()
    if row is not None:
        log.info("charge %s: %s -> %s", charge.id, row.prev_status, target.value)
        charge.status, charge.updated_at = target.value, now
        for name, value in values.items():
            if not isinstance(value, ClauseElement):  # keep the in-memory row true to the row
                setattr(charge, name, value)
        if owner is not None and lease is not None:
            s.execute(update(SUBSCRIPTIONS).where(SUBSCRIPTIONS.c.id == charge.subscription_id,
                                                  SUBSCRIPTIONS.c.lock_owner == owner)
                      .values(lock_until=now + lease))
        return True
    actual = s.execute(select(CHARGES.c.status, CHARGES.c.lease_owner)
                       .where(CHARGES.c.id == charge.id)).first()
    if actual is not None and owner is not None and actual.lease_owner != owner:
        log.warning("charge %s: run %s lost its lease to %s; stopping without writing",
                    charge.id, owner, actual.lease_owner)
        raise LeaseLost(charge.id)
    log.info("charge %s: not moved to %s, it is %s now", charge.id, target.value,
             actual.status if actual else "gone")
    return False
