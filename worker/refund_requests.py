"""Refund requests, refund events and the walk's part for refunds (the engine is ``refunds``).

``request_refund`` is the only way a refund row is born. In ONE transaction::

    UPDATE charges SET refund_total = refund_total + :amount
     WHERE id = :charge AND status = 'succeeded' AND payment_id IS NOT NULL
       AND refund_total + :amount <= approved_amount          -- the over-refund guard
    (0 rows: refused, saying how much is left)
    tax-free part checked against what is left of it (read under the row lock just taken)
    INSERT INTO refunds (... status 'requested', idempotency_key ...)
    COMMIT

The conditional UPDATE is the compare-and-set: on PostgreSQL it locks the charge row and is
re-evaluated after a concurrent request commits; on SQLite the transaction holds the write lock
(``BEGIN IMMEDIATE``). Two racing requests can therefore never both fit into what is left: the
second is refused with a clear message, and ``charges.refund_total <= approved_amount`` is
also a CHECK constraint. ``refund_total`` counts every refund not failed (requested, in
progress, done); a failed refund gives its amount back in the transaction that fails it.

The idempotency key (``rf`` + 30 hex digits) is stored here, before any call, and is sent on
every resend of that refund, also as ``merchantPayTransactionKey`` (NAVER echoes it on the
history row, which is how an unknown outcome is recognised as ours).
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from models import (
    FINAL_REFUND_STATUSES,
    REFUNDED_STATUSES,
    Charge,
    Merchant,
    Notification,
    Refund,
    Subscription,
)
from models import ChargeStatus as CS
from models import NotificationStatus as NS
from models import RefundStatus as RS
from models.db import rowcount
from worker import notify

log = logging.getLogger(__name__)

DEFAULT_REASON = "가맹점 요청 환불"
MAX_REASON_BYTES = 256  # NAVER's cancelReason limit
FINAL_STATUSES = frozenset(s.value for s in FINAL_REFUND_STATUSES)
NOT_FAILED = [s.value for s in RS if s != RS.FAILED]
REFUNDED = [s.value for s in REFUNDED_STATUSES]
# Not final; a run may hold (or may have held) them; the walk enqueues them when due.
OPEN = [RS.REQUESTED.value, RS.CANCELLING.value, RS.UNKNOWN.value, RS.COMPLETING.value, RS.HELD.value]
# A refund of the same charge in one of these blocks the newer ones (NAVER: one at a time).
UNSETTLED = [RS.REQUESTED.value, RS.CANCELLING.value, RS.UNKNOWN.value, RS.HELD.value]


class RefundRefused(Exception):
    """The refund cannot be requested; the message says why and what is possible."""


@dataclass(frozen=True)
class Totals:
    """What a charge's refunds amount to, in won."""

    approved: int
    reserved: int  # refund_total: every refund not failed
    refunded: int  # succeeded or completing (NAVER took the money back, or will by itself)
    tax_free_reserved: int

    @property
    def refundable(self) -> int:
        """What may still be requested."""
        return self.approved - self.reserved


def totals(session: Session, charge: Charge) -> Totals:
    """The charge's refund figures as committed (or as this transaction sees them)."""
    sums = session.execute(
        select(func.coalesce(func.sum(Refund.amount).filter(Refund.status.in_(REFUNDED)), 0),
               func.coalesce(func.sum(Refund.tax_free_amount).filter(Refund.status.in_(NOT_FAILED)), 0))
        .where(Refund.charge_id == charge.id)).one()
    return Totals(approved=charge.approved_amount or 0, reserved=charge.refund_total,
                  refunded=int(sums[0]), tax_free_reserved=int(sums[1]))


def new_key() -> str:
    """A fresh refund idempotency key (``[A-Za-z0-9]``, 32 characters)."""
    return "rf" + uuid.uuid4().hex[:30]


def request_refund(sessions: sessionmaker[Session], charge_id: int, now: datetime, *,
                   amount: int | None = None, tax_free: int | None = None,
                   reason: str | None = None) -> Refund:
    """Store one refund of ``charge_id`` (``amount`` None: everything left) and return it.

    Raises :class:`RefundRefused` (nothing stored) for a charge that is not refundable, an
    amount over what is left, a tax-free part over its own rest, or a bad reason.
    """
    reason = _check_reason(reason)
    if amount is not None and amount <= 0:
        raise RefundRefused(f"the refund amount must be a positive number of won, got {amount}")
    if tax_free is not None and tax_free < 0:
        raise RefundRefused(f"the tax-free part must be 0 or more won, got {tax_free}")
    with sessions.begin() as s:
        charge = _refundable_charge(s, charge_id)
        before = totals(s, charge)
        wanted = before.refundable if amount is None else amount
        if wanted <= 0:
            raise RefundRefused(f"charge {charge_id} is already fully refunded "
                                f"({before.reserved:,} of {before.approved:,} won requested or done)")
        _reserve(s, charge_id, wanted, before)
        # Read again under the row lock just taken: a racing request may have committed since.
        s.refresh(charge)
        locked = totals(s, charge)
        others = Totals(locked.approved, locked.reserved - wanted, locked.refunded, locked.tax_free_reserved)
        tax_free_part = _tax_split(charge, others, wanted, tax_free)
        refund = Refund(charge_id=charge_id, subscription_id=charge.subscription_id,
                        payment_id=charge.payment_id, amount=wanted, tax_free_amount=tax_free_part,
                        reason=reason, status=RS.REQUESTED, idempotency_key=new_key(),
                        # the requester enqueues it now; the walk only if that message is lost
                        lease_until=now + timedelta(minutes=1), created_at=now, updated_at=now)
        s.add(refund)
        s.flush()
    log.info("refund %s of charge %s requested: %s won (tax-free %s)", refund.id, charge_id, wanted,
             tax_free_part, extra={"charge_id": charge_id})
    return refund


def _check_reason(reason: str | None) -> str:
    text = (reason or "").strip() or DEFAULT_REASON
    if len(text.encode()) > MAX_REASON_BYTES:
        raise RefundRefused(f"the reason is {len(text.encode())} bytes; NAVER accepts at most "
                            f"{MAX_REASON_BYTES} (UTF-8)")
    return text


def _refundable_charge(s: Session, charge_id: int) -> Charge:
    charge = s.get(Charge, charge_id)
    if charge is None:
        raise RefundRefused(f"no charge with id {charge_id}; see `npay-billing charges list`")
    if charge.status != CS.SUCCEEDED or not charge.payment_id or not charge.approved_amount:
        raise RefundRefused(f"charge {charge_id} is {charge.status}: only a succeeded charge "
                            "(money taken) can be refunded")
    return charge


def _reserve(s: Session, charge_id: int, amount: int, before: Totals) -> None:
    """The over-refund guard: one conditional UPDATE (the row lock serialises racers)."""
    moved = rowcount(s.execute(
        update(Charge).where(Charge.id == charge_id, Charge.status == CS.SUCCEEDED,
                             Charge.refund_total + amount <= Charge.approved_amount)
        .values(refund_total=Charge.refund_total + amount)))
    if moved:
        return
    s.expire_all()
    charge = s.get(Charge, charge_id)
    left = (charge.approved_amount or 0) - charge.refund_total if charge else 0
    raise RefundRefused(
        f"refund of {amount:,} won refused: charge {charge_id} has only {max(left, 0):,} won left "
        f"to refund (approved {before.approved:,} won; refunds requested, in progress or done "
        f"{before.approved - max(left, 0):,} won)")


def _tax_split(charge: Charge, before: Totals, amount: int, tax_free: int | None) -> int:
    """The tax-free part (NAVER's ``taxExScopeAmount``) of this refund, checked against what
    is left of each part; by default in proportion to what is left (all of it at the end)."""
    free_left = charge.tax_free_amount - before.tax_free_reserved
    taxable_left = (before.approved - charge.tax_free_amount) - (before.reserved - before.tax_free_reserved)
    if tax_free is None:
        left = free_left + taxable_left
        tax_free = min(free_left, amount * free_left // left) if left > 0 else 0
        tax_free = max(tax_free, amount - taxable_left)
    if tax_free > amount:
        raise RefundRefused(f"the tax-free part ({tax_free:,} won) is more than the refund ({amount:,} won)")
    if tax_free > free_left or amount - tax_free > taxable_left:
        raise RefundRefused(
            f"the tax split does not fit: {amount - tax_free:,} won taxable + {tax_free:,} won tax-free "
            f"asked, but only {taxable_left:,} won taxable and {free_left:,} won tax-free are left "
            f"of charge {charge.id}")
    return tax_free


# --- events -------------------------------------------------------------------------------------

def refund_payload(refund: Refund, charge: Charge, sub: Subscription, refunded: int) -> dict[str, Any]:
    """The ``refund`` and ``charge`` members of a refund event (also the CLI's JSON)."""
    return {
        "subscription": {"id": sub.id, "recurrent_id": sub.recurrent_id, "status": sub.status,
                         "merchant_user_id": sub.merchant_user_id, "product_code": sub.product_code},
        "charge": {"id": charge.id, "payment_id": charge.payment_id, "cycle_at": charge.cycle_at.isoformat(),
                   "approved_amount": charge.approved_amount, "refunded_amount": refunded,
                   "refund_total": charge.refund_total},
        "refund": {"id": refund.id, "amount": refund.amount, "tax_free_amount": refund.tax_free_amount,
                   "tax_scope_amount": refund.amount - refund.tax_free_amount, "reason": refund.reason,
                   "status": refund.status, "naver_code": refund.last_code,
                   "naver_message": refund.last_message, "pay_hist_id": refund.pay_hist_id,
                   "completing": refund.status == RS.COMPLETING},
    }


def queue_refund_event(s: Session, event: str, refund_id: int, now: datetime) -> list[int]:
    """One webhook outbox row for ``event`` in the caller's transaction (once per refund and
    event: ``dedupe_key`` is unique per channel); none when the merchant has no webhook."""
    refund = s.get(Refund, refund_id, populate_existing=True)
    assert refund is not None
    charge = s.get(Charge, refund.charge_id, populate_existing=True)
    sub = s.get(Subscription, refund.subscription_id)
    assert charge is not None and sub is not None
    merchant = s.get(Merchant, sub.merchant_id)
    key = f"{event}:{refund_id}"
    if merchant is None or not merchant.webhook_url or s.scalar(
            select(Notification.id).where(Notification.dedupe_key == key)) is not None:
        return []
    event_id = uuid.uuid4().hex
    refunded = totals(s, charge).refunded
    payload = {"event_id": event_id, "event": event, "occurred_at": now.isoformat(),
               "merchant_id": sub.merchant_id, **refund_payload(refund, charge, sub, refunded)}
    row = Notification(event_id=event_id, dedupe_key=key, event=event, channel="webhook",
                       subscription_id=sub.id, charge_id=charge.id,
                       payload=json.dumps(payload, ensure_ascii=False), status=NS.PENDING,
                       created_at=now, lease_until=now + timedelta(minutes=2))
    s.add(row)
    s.flush()
    return [row.id]


# --- the walk's part ------------------------------------------------------------------------

def claim_due_refunds(s: Session, now: datetime, limit: int, marker: timedelta) -> list[int]:
    """Refunds to (re-)enqueue: open ones whose ``next_attempt_at`` has come and that no run
    holds (a run that died leaves its lease to run out). Each is claimed by moving
    ``lease_until`` forward (``marker``) so the next walk does not enqueue it again; the run
    itself may take a refund whose owner is NULL."""
    free = or_(Refund.lease_until.is_(None), Refund.lease_until < now)
    due = or_(Refund.next_attempt_at.is_(None), Refund.next_attempt_at <= now)
    ids = list(s.scalars(select(Refund.id).where(Refund.status.in_(OPEN), free, due)
                         .order_by(Refund.id).limit(limit).with_for_update(skip_locked=True)))
    claimed = []
    for refund_id in ids:
        if rowcount(s.execute(update(Refund).where(Refund.id == refund_id, free)
                              .values(lease_until=now + marker, lease_owner=None))):
            claimed.append(refund_id)
    return claimed


def surface_stuck_refunds(s: Session, now: datetime, after: timedelta, limit: int = 500) -> int:
    """Refunds open for longer than ``after`` and not surfaced yet: ``surfaced_at`` set, an
    error logged and a ``refund.stuck`` alert queued, once each (invariant 10)."""
    rows = list(s.scalars(select(Refund).where(Refund.status.in_(OPEN), Refund.surfaced_at.is_(None),
                                               Refund.created_at < now - after)
                          .order_by(Refund.id).limit(limit).with_for_update(skip_locked=True)))
    for refund in rows:
        refund.surfaced_at = now
        sub = s.get(Subscription, refund.subscription_id)
        assert sub is not None
        notify.queue_alert(
            s, notify.REFUND_STUCK, sub, now, dedupe=f"refund-{refund.id}",
            message=(f"refund {refund.id} of charge {refund.charge_id} ({refund.amount:,} won) has been "
                     f"{refund.status} since {refund.created_at.isoformat()} (last NAVER code "
                     f"{refund.last_code}); it is still worked on with the same key. Check payment "
                     f"{refund.payment_id} in NAVER Pay (`npay-billing charges show {refund.charge_id}`)."),
            details={"refund_id": refund.id, "status": refund.status, "last_code": refund.last_code})
    return len(rows)
