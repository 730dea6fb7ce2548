"""One read of the system's state, shared by ``npay-billing status``/``watch`` and the
Prometheus endpoint: rows by status, unknown outcomes open, notifications pending, the walk's
lag, the next due items, and what needs a human: held charges (a merchant-side fault),
charges whose NAVER outcome is unsettled (``stuck_since``; the oldest one's age) and those
surfaced for it, subscriptions still ``revoking`` or ``expire_failed``, refunds held (a
merchant-side fault) or unsettled (``cancelling``/``unknown``/``completing``: NAVER's answer is
being resolved through history).

The walk's lag is how late the oldest due item is: the earliest of the active subscriptions'
``next_charge_at`` and the ``retry_wait`` charges' ``next_attempt_at`` that are not after
now, measured to now (0 when nothing is due).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models import Charge, ChargeStatus, Notification, Refund, RefundStatus, Subscription, SubscriptionStatus

CHARGE_STATUSES = tuple(status.value for status in ChargeStatus)
SUBSCRIPTION_STATUSES = tuple(status.value for status in SubscriptionStatus)
REFUND_STATUSES = tuple(status.value for status in RefundStatus)
UNSETTLED_REFUNDS = (RefundStatus.CANCELLING.value, RefundStatus.UNKNOWN.value, RefundStatus.COMPLETING.value)


@dataclass
class Overview:
    """Counts and times read in one pass over the database."""

    now: datetime
    subscriptions: dict[str, int]
    charges: dict[str, int]
    notifications: dict[str, int]
    oldest_due: datetime | None
    next_due: list[dict[str, Any]] = field(default_factory=list)
    stuck: int = 0  # charges unsettled now (reserving/approving/unknown/held)
    surfaced: int = 0  # of those, the ones surfaced to a human (older than the bound)
    oldest_stuck: datetime | None = None  # since when the oldest unsettled one is unsettled
    refunds: dict[str, int] = field(default_factory=dict)

    @property
    def lag_seconds(self) -> float:
        """How late the oldest due item is (0 when nothing is due)."""
        return 0.0 if self.oldest_due is None else max(0.0, (self.now - self.oldest_due).total_seconds())

    @property
    def unknown_open(self) -> int:
        """Charges whose approval outcome is not known yet."""
        return self.charges["unknown"] + self.charges["approving"]

    @property
    def held(self) -> int:
        """Charges held by a merchant-side fault (credentials, our request, a proxy)."""
        return self.charges.get("held", 0)

    @property
    def oldest_stuck_seconds(self) -> float:
        """How long the oldest unsettled charge has been unsettled (0 when none is)."""
        if self.oldest_stuck is None:
            return 0.0
        return max(0.0, (self.now - self.oldest_stuck).total_seconds())

    @property
    def refunds_held(self) -> int:
        """Refunds held by a merchant-side fault (they resume by themselves once it is fixed)."""
        return self.refunds.get(RefundStatus.HELD.value, 0)

    @property
    def refunds_unsettled(self) -> int:
        """Refunds whose cancel may have been carried out: resolved through NAVER's history."""
        return sum(self.refunds.get(status, 0) for status in UNSETTLED_REFUNDS)

    @property
    def notifications_pending(self) -> int:
        """Outbox rows not delivered yet."""
        return self.notifications.get("pending", 0) + self.notifications.get("sending", 0)

    def to_json(self) -> dict[str, Any]:
        """The overview for ``--json``."""
        return {"now": self.now, "subscriptions": self.subscriptions, "charges": self.charges,
                "notifications": self.notifications, "walk_lag_seconds": round(self.lag_seconds, 3),
                "oldest_due_at": self.oldest_due, "unknown_open": self.unknown_open,
                "notifications_pending": self.notifications_pending, "next_due": self.next_due,
                "held": self.held, "stuck": self.stuck, "surfaced": self.surfaced,
                "consent_held": self.charges.get("consent_held", 0),
                "oldest_stuck_at": self.oldest_stuck,
                "oldest_stuck_seconds": round(self.oldest_stuck_seconds, 3),
                "revoking": self.subscriptions.get("revoking", 0),
                "expire_failed": self.subscriptions.get("expire_failed", 0),
                "refunds": self.refunds, "refunds_held": self.refunds_held,
                "refunds_unsettled": self.refunds_unsettled}


def _counts(session: Session, column: Any, names: tuple[str, ...] = ()) -> dict[str, int]:
    found = {str(k): int(v) for k, v in session.execute(select(column, func.count()).group_by(column))}
    return {**{name: 0 for name in names}, **found}


def _next_due(session: Session, limit: int) -> list[dict[str, Any]]:
    cycles = session.execute(
        select(Subscription.id, Subscription.recurrent_id, Subscription.amount, Subscription.next_charge_at)
        .where(Subscription.status == "active", Subscription.next_charge_at.is_not(None))
        .order_by(Subscription.next_charge_at).limit(limit))
    retries = session.execute(
        select(Charge.subscription_id, Charge.recurrent_id, Charge.amount, Charge.next_attempt_at, Charge.id)
        .where(Charge.status == "retry_wait", Charge.next_attempt_at.is_not(None))
        .order_by(Charge.next_attempt_at).limit(limit))
    due = [{"kind": "cycle", "at": at, "subscription_id": sid, "charge_id": None,
            "recurrent_id": rid, "amount": amount} for sid, rid, amount, at in cycles]
    due += [{"kind": "retry", "at": at, "subscription_id": sid, "charge_id": cid,
             "recurrent_id": rid, "amount": amount} for sid, rid, amount, at, cid in retries]
    return sorted(due, key=lambda d: d["at"])[:limit]


def overview(session: Session, now: datetime, next_limit: int = 5) -> Overview:
    """Read the counts, the walk's lag and the next due items."""
    oldest = [session.scalar(select(func.min(Subscription.next_charge_at)).where(
                  Subscription.status == "active", Subscription.next_charge_at <= now)),
              session.scalar(select(func.min(Charge.next_attempt_at)).where(
                  Charge.status == "retry_wait", Charge.next_attempt_at <= now))]
    due = [t for t in oldest if t is not None]  # min() keeps the column's type: aware UTC
    # Served by ix_charges_stuck_since: only unsettled charges have a stuck_since.
    stuck, surfaced, oldest_stuck = session.execute(
        select(func.count(), func.count(Charge.surfaced_at), func.min(Charge.stuck_since))
        .where(Charge.stuck_since.is_not(None))).one()
    return Overview(now=now, subscriptions=_counts(session, Subscription.status, SUBSCRIPTION_STATUSES),
                    charges=_counts(session, Charge.status, CHARGE_STATUSES),
                    notifications=_counts(session, Notification.status),
                    oldest_due=min(due) if due else None, next_due=_next_due(session, next_limit),
                    stuck=int(stuck), surfaced=int(surfaced), oldest_stuck=oldest_stuck,
                    refunds=_counts(session, Refund.status, REFUND_STATUSES))


