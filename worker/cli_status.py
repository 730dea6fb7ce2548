"""``npay-billing status`` (an overview) and ``watch`` (one live line per interval).

The walk's lag is how late the oldest due item is: the earliest of the active subscriptions'
``next_charge_at`` and the ``retry_wait`` charges' ``next_attempt_at`` that are not after
now, measured to now (0 when nothing is due). A lag that keeps growing means beat or the
workers are not keeping up (or not running).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from worker.cli_charges import CHARGE_STATUSES
from worker.cli_format import clock_time, duration, emit_json, fields, table, when, won
from worker.cli_subscriptions import SUBSCRIPTION_STATUSES
from worker.cli_support import current_env, json_option

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


@dataclass
class Overview:
    """Counts and times read in one pass over the database."""

    now: datetime
    subscriptions: dict[str, int]
    charges: dict[str, int]
    notifications: dict[str, int]
    oldest_due: datetime | None
    next_due: list[dict[str, Any]] = field(default_factory=list)

    @property
    def lag_seconds(self) -> float:
        """How late the oldest due item is (0 when nothing is due)."""
        return 0.0 if self.oldest_due is None else max(0.0, (self.now - self.oldest_due).total_seconds())

    @property
    def unknown_open(self) -> int:
        """Charges whose approval outcome is not known yet."""
        return self.charges["unknown"] + self.charges["approving"]

    @property
    def notifications_pending(self) -> int:
        """Outbox rows not delivered yet."""
        return self.notifications.get("pending", 0) + self.notifications.get("sending", 0)

    def to_json(self) -> dict[str, Any]:
        """The overview for ``--json``."""
        return {"now": self.now, "subscriptions": self.subscriptions, "charges": self.charges,
                "notifications": self.notifications, "walk_lag_seconds": round(self.lag_seconds, 3),
                "oldest_due_at": self.oldest_due, "unknown_open": self.unknown_open,
                "notifications_pending": self.notifications_pending, "next_due": self.next_due}


def _counts(session: Session, column: Any, names: tuple[str, ...] = ()) -> dict[str, int]:
    from sqlalchemy import func, select

    found = {str(k): int(v) for k, v in session.execute(select(column, func.count()).group_by(column))}
    return {**{name: 0 for name in names}, **found}


def _next_due(session: Session, limit: int) -> list[dict[str, Any]]:
    from sqlalchemy import select

    from models import Charge, Subscription

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
    from sqlalchemy import func, select

    from models import Charge, Notification, Subscription

    oldest = [session.scalar(select(func.min(Subscription.next_charge_at)).where(
                  Subscription.status == "active", Subscription.next_charge_at <= now)),
              session.scalar(select(func.min(Charge.next_attempt_at)).where(
                  Charge.status == "retry_wait", Charge.next_attempt_at <= now))]
    due = [t for t in oldest if t is not None]  # min() keeps the column's type: aware UTC
    return Overview(now=now, subscriptions=_counts(session, Subscription.status, SUBSCRIPTION_STATUSES),
                    charges=_counts(session, Charge.status, CHARGE_STATUSES),
                    notifications=_counts(session, Notification.status),
                    oldest_due=min(due) if due else None, next_due=_next_due(session, next_limit))


def _nonzero(counts: dict[str, int]) -> str:
    shown = [f"{name} {n}" for name, n in counts.items() if n]
    return " · ".join(shown) + f"  (total {sum(counts.values())})" if shown else "none"


def _read(next_limit: int = 5) -> Overview:
    from models import utcnow

    with current_env().sessions()() as session:
        return overview(session, utcnow(), next_limit)


@click.command()
@json_option
def status(as_json: bool) -> None:
    """Counts by state, the walk's lag, open unknown outcomes and the next due charges."""
    view = _read()
    if as_json:
        emit_json(view.to_json())
        return
    lag = duration(view.lag_seconds) + (f" (oldest due {when(view.oldest_due)})" if view.oldest_due
                                        else " (nothing overdue)")
    click.echo(fields([
        ("subscriptions", _nonzero(view.subscriptions)), ("charges", _nonzero(view.charges)),
        ("walk lag", lag),
        ("unknown open", f"{view.unknown_open} (unknown/approving: resolved via NAVER history)"),
        ("notifications", f"{view.notifications_pending} pending, "
                          f"{view.notifications.get('failed', 0)} failed"),
        ("now", when(view.now)),
    ]))
    if view.next_due:
        click.echo("\nnext due:")
        click.echo(table(["WHEN", "KIND", "SUB", "CHARGE", "RECURRENT ID", "AMOUNT"],
                         [[when(d["at"]), d["kind"], d["subscription_id"], d["charge_id"],
                           d["recurrent_id"], won(d["amount"])] for d in view.next_due],
                         right=["SUB", "CHARGE", "AMOUNT"]))


def watch_line(view: Overview) -> str:
    """One compact progress line."""
    c = view.charges
    failed = c["failed"] + c["amount_mismatch"]
    nxt = view.next_due[0]["at"] if view.next_due else None
    return (f"{when(view.now)}  succeeded {c['succeeded']} · retrying {c['retry_wait']} · "
            f"failed {failed} · expired {view.subscriptions['revoked']} · "
            f"unknown {view.unknown_open} · notify {view.notifications_pending} · "
            f"next {clock_time(nxt)} · lag {duration(view.lag_seconds)}")


@click.command()
@click.option("--interval", type=click.FloatRange(min=0.1), default=2.0, show_default=True,
              help="Seconds between two lines.")
@click.option("--once", is_flag=True, help="Print one line and exit.")
def watch(interval: float, once: bool) -> None:
    """Print live progress, one line every --interval seconds, until Ctrl-C.

    Columns: charges succeeded, retrying (retry_wait), failed (incl. amount mismatch),
    registrations expired (subscriptions revoked), unknown outcomes open, notifications
    pending, the next due time and the walk's lag.
    """
    try:
        while True:
            click.echo(watch_line(_read(next_limit=1)))
            if once:
                return
            time.sleep(interval)
    except KeyboardInterrupt:
        click.echo("", err=True)
