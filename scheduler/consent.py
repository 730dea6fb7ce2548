"""The consent gate: how much a cycle may be billed (전자상거래법 as amended, in force since
2025-02-14). A safe default, **not legal advice**.

The amended act requires a seller of a recurring paid service to obtain the customer's consent
before a recurring price rises or a free period turns into a paid one, with a notice (price,
date, how to cancel) within the 30 days before the change. The model:

* ``subscriptions.agreed_amount`` is the most the customer agreed to per cycle. The walk sets
  it when it first sees the row (the amount; 0 during a free trial), a consented price change
  raises it, and billing a lower amount lowers it (decreases apply directly).
* ``price_changes`` rows (inserted with SQL or the CLI) say "from ``effective_at`` on, bill
  ``new_amount``". A free trial (``trial_ends_at``) is such a change from 0 to the amount; the
  walk adds its row (kind ``trial``).
* The worker queues the notice (webhook + Korean e-mail, with a consent link) once the change
  is within :data:`NOTICE_WINDOW` of its date (``worker/consent.py``).

:func:`gate` decides one billed cycle, pure::

    changes effective at the cycle (effective_at <= cycle), oldest first:
      new_amount <= agreed (a decrease)      applied: amount = agreed = new_amount
      consented                              applied: amount = agreed = new_amount
      a raise without consent                blocks (later changes wait behind it)
    then:
      cycle before trial_ends_at             skip   (free trial)
      blocked, merchant consent_missing:
        pause                                pause  (subscription paused, cycle not billed)
        keep_old, agreed amount 0            skip   (the old amount, 0, is not billed)
        keep_old                             the old amount, as below
      amount <= agreed                       bill amount; agreed = amount (a decrease sticks)
      amount > agreed (raised by SQL,        hold   (charge ``consent_held``, merchant alerted;
        no consented change)                          resumes when the amount is lowered or
                                                      consent recorded; skipped when the next
                                                      cycle comes due)

So no cycle is ever billed above what the customer agreed to. The charge engine re-checks the
charge's amount against the gate's answer (``charges.agreed_amount``) before every attempt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from models import ConsentMissing, PriceChangeStatus

NOTICE_WINDOW = timedelta(days=30)  # the notice goes out within the 30 days before the change
OPEN_STATUSES = (PriceChangeStatus.PENDING.value, PriceChangeStatus.CONSENTED.value)

BILL, SKIP, HOLD, PAUSE = "bill", "skip", "hold", "pause"


@dataclass(frozen=True)
class Change:
    """An open ``price_changes`` row, as the gate needs it."""

    id: int
    new_amount: int
    effective_at: datetime
    consented: bool
    kind: str = "change"


@dataclass
class Verdict:
    """The gate's answer for one cycle, and the subscription's state after it."""

    action: str  # bill | skip | hold | pause
    amount: int  # the subscription's amount after the changes applied (what ``bill`` bills)
    agreed: int  # the agreed amount after this cycle
    reason: str | None = None  # why not billed (skip, hold, pause), or why the old amount
    applied: list[int] = field(default_factory=list)  # change ids applied at this cycle
    blocked_by: Change | None = None  # the raise waiting for consent


def _won(amount: int) -> str:
    return f"{amount:,}원"


def gate(*, amount: int, agreed: int, cycle_at: datetime, changes: Sequence[Change],
         trial_ends_at: datetime | None, missing: str) -> Verdict:
    """What to do with the cycle at ``cycle_at``; see the module docstring. ``changes`` are
    the subscription's open changes (any order); ``missing`` the merchant's consent_missing."""
    applied: list[int] = []
    blocked: Change | None = None
    for change in sorted(changes, key=lambda c: (c.effective_at, c.id)):
        if change.effective_at > cycle_at:
            break
        if change.new_amount <= agreed or change.consented:
            amount = agreed = change.new_amount
            applied.append(change.id)
            continue
        blocked = change
        break
    if trial_ends_at is not None and cycle_at < trial_ends_at:
        return Verdict(SKIP, amount, agreed, f"free trial until {trial_ends_at:%Y-%m-%d %H:%M} UTC",
                       applied, blocked)
    if blocked is not None:
        what = ("the paid conversion after the free trial" if blocked.kind == "trial"
                else f"price change {blocked.id} ({_won(blocked.new_amount)})")
        if missing == ConsentMissing.PAUSE:
            return Verdict(PAUSE, amount, agreed, f"{what} has no consent recorded; subscription "
                           "paused (consent_missing=pause)", applied, blocked)
        if agreed == 0:
            return Verdict(SKIP, amount, agreed, f"{what} has no consent recorded; the old amount, "
                           "0, is not billed (consent_missing=keep_old)", applied, blocked)
    if amount <= agreed:
        note = None if blocked is None else (f"{what} has no consent recorded; the old amount "
                                             f"{_won(amount)} is billed (consent_missing=keep_old)")
        return Verdict(BILL, amount, amount, note, applied, blocked)
    return Verdict(HOLD, amount, agreed, f"amount {_won(amount)} is above the {_won(agreed)} the customer "
                   "agreed to and no consented price change covers it: held until consent is recorded "
                   "or the amount is lowered", applied, blocked)


def initial_agreed(amount: int, trial_ends_at: datetime | None) -> int:
    """What a row the walk sees for the first time was agreed at: its amount, or nothing
    during a free trial (the paid conversion is a price change needing consent)."""
    return 0 if trial_ends_at is not None else amount


def in_notice_window(effective_at: datetime, now: datetime) -> bool:
    """Whether the notice of a change effective at ``effective_at`` is due at ``now``."""
    return now >= effective_at - NOTICE_WINDOW
