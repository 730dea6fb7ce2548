"""What the walk does with one subscription row it picked up: pure decisions, no database.

:func:`decide` reads the row (and its merchant) and ``now``, and answers::

    the row, as the walk finds it                     decision
    ------------------------------------------------  -------------------------------------------
    problems(row) not empty                           invalid, last_error = every reason
    seen_status is not 'active' (the walk last saw    reschedule from now ("resumed"): a cycle
      it paused, invalid, ...; resumed by SQL/CLI)      that fell while it was not active is
                                                        never billed
    next_charge_at NULL (a new row)                   schedule the first cycle after now ("new")
    cron/timezone differ from scheduled_cron/         reschedule from now on the new schedule
      scheduled_timezone (edited with SQL)              ("schedule changed"): the old schedule's
                                                        pending cycle is not billed
    next_charge_at <= now                             one row per due cycle (plan_cycles);
                                                        next_charge_at = the cycle after them
    otherwise                                         nothing to do yet

A changed cron is noticed when the row next comes before the walk: at the old schedule's next
due cycle (the walk reads only what is due, never the whole table). That cycle is not billed;
the new schedule counts from that moment. To make a change take effect at once, also set
``next_charge_at = NULL``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from models import MissedCycles, Subscription
from models import SubscriptionStatus as SS
from scheduler.cycles import due_cycles, next_cycle
from scheduler.validation import problems

# A subscription id has at most 19 digits (a 64-bit key): "NPB-" + 19 + "-" + 14 = 38 chars,
# so the merchantPayId we send (+ "-attempt") and the idempotency key built from it
# (+ "-attempt-approve-round") stay inside NAVER's 64-character limit.
MERCHANT_PAY_ID_MAX = 38


@dataclass(frozen=True)
class Decision:
    """The walk's verdict on one row; see the module docstring."""

    problems: tuple[str, ...] = ()
    next_charge_at: datetime | None = None
    cycles: tuple[tuple[datetime, str | None], ...] = ()  # (cycle, skip reason or None = bill)
    rescheduled: str | None = None  # "new" | "resumed" | "schedule changed"


def merchant_pay_id(subscription_id: int, cycle_at: datetime) -> str:
    """Unique per (subscription, cycle) by construction: the subscription id is unique and
    a cron cycle is a whole second (UTC). ``NPB-`` cannot be mistaken for the older
    ``NPB<hex digest>-`` ids, so new rows never collide with rows made before."""
    return f"NPB-{subscription_id}-{_stamp(cycle_at)}"


def _stamp(cycle_at: datetime) -> str:
    if cycle_at.tzinfo is UTC and type(cycle_at) is datetime:  # what the walk passes: cached
        return _stamp_utc(cycle_at)
    # (another zone's instant equal to a UTC one would share its cache entry, not its digits)
    return f"{cycle_at:%Y%m%d%H%M%S}"


@lru_cache(maxsize=4096)
def _stamp_utc(cycle_at: datetime) -> str:
    return f"{cycle_at:%Y%m%d%H%M%S}"


def decide(sub: Subscription, now: datetime, *, missed_grace: timedelta, max_cycles: int) -> Decision:
    """What to do with ``sub`` at ``now``; pure apart from reading the row."""
    reasons = problems(sub)
    if reasons:
        return Decision(problems=tuple(reasons))
    question = (sub.seen_status, sub.next_charge_at, sub.cron, sub.scheduled_cron, sub.timezone,
                sub.scheduled_timezone, sub.merchant.missed_cycles, now, missed_grace, max_cycles)
    if all(v is None or type(v) is datetime and v.tzinfo is UTC for v in (sub.next_charge_at, now)):
        try:
            return _plan_cached(*question)  # a spike's rows all ask the same question
        except TypeError:  # an unhashable value (a row built by hand): asked uncached below
            pass
    return _plan(*question)


def _plan(seen_status: str, next_charge_at: datetime | None, cron: str, scheduled_cron: str | None,
          timezone: str, scheduled_timezone: str | None, missed_cycles: str, now: datetime,
          missed_grace: timedelta, max_cycles: int) -> Decision:
    """``decide`` for a row without problems: pure in these columns (a cached copy answers the
    rows that share them; UTC instants only, see ``_next_cycle``)."""
    why = _reschedule_reason(seen_status, next_charge_at, cron, scheduled_cron, timezone, scheduled_timezone)
    if why:
        return Decision(next_charge_at=_next_cycle(cron, timezone, now), rescheduled=why)
    assert next_charge_at is not None  # reschedule_reason covers NULL
    if next_charge_at > now:
        return Decision(next_charge_at=next_charge_at)
    cycles, following = _due_cycles(cron, timezone, next_charge_at, now, max_cycles)
    plan = plan_cycles(cycles, complete=following > now, rule=missed_cycles, cutoff=now - missed_grace)
    return Decision(next_charge_at=following, cycles=tuple(plan))


_plan_cached = lru_cache(maxsize=1024)(_plan)


# Cycle math is pure, and a month-start spike asks the same question of every row (one cron,
# one zone, one due instant, one walk's now): croniter runs once per distinct question. The
# instants are keyed in UTC: an aware datetime in a DST zone compares (and hashes) by its wall
# time, fold ignored, so two instants an hour apart would share a key; in UTC they cannot.
# The answers depend only on the instant (tests/scheduler/test_walk_memo.py pins both).
def _next_cycle(cron: str, tz: str, after: datetime) -> datetime:
    return _next_cycle_utc(cron, tz, after.astimezone(UTC))


@lru_cache(maxsize=4096)
def _next_cycle_utc(cron: str, tz: str, after: datetime) -> datetime:
    return next_cycle(cron, tz, after)


def _due_cycles(cron: str, tz: str, first: datetime, now: datetime,
                limit: int) -> tuple[tuple[datetime, ...], datetime]:
    return _due_cycles_utc(cron, tz, first.astimezone(UTC), now.astimezone(UTC), limit)


@lru_cache(maxsize=4096)
def _due_cycles_utc(cron: str, tz: str, first: datetime, now: datetime,
                    limit: int) -> tuple[tuple[datetime, ...], datetime]:
    due, following = due_cycles(cron, tz, first, now, limit)
    return tuple(due), following


def reschedule_reason(sub: Subscription) -> str | None:
    """Why ``next_charge_at`` cannot be trusted and is computed again from now (or None)."""
    return _reschedule_reason(sub.seen_status, sub.next_charge_at, sub.cron, sub.scheduled_cron,
                              sub.timezone, sub.scheduled_timezone)


def _reschedule_reason(seen_status: str, next_charge_at: datetime | None, cron: str,
                       scheduled_cron: str | None, timezone: str,
                       scheduled_timezone: str | None) -> str | None:
    if seen_status != SS.ACTIVE:
        return "resumed"
    if next_charge_at is None:
        return "new"
    # NULL scheduled_*: next_charge_at was set by hand (or before these columns): trusted.
    if scheduled_cron is not None and " ".join(cron.split()) != " ".join(scheduled_cron.split()):
        return "schedule changed"
    if scheduled_timezone is not None and timezone != scheduled_timezone:
        return "schedule changed"
    return None


def plan_cycles(
    cycles: Sequence[datetime], *, complete: bool, rule: str, cutoff: datetime
) -> list[tuple[datetime, str | None]]:
    """Pair each due cycle with a skip reason (None = bill it), per the missed-cycle rule.

    A cycle is *missed* when a later cycle of the same subscription is also already due (an
    outage, a stopped walk): every cycle but the last, and the last too when ``complete`` is
    False (more cycles are due than one walk enumerates; the rest come in the next walk). The
    grace period bounds how late the newest due cycle may still be billed: it must be at or
    after ``cutoff`` (now minus the grace).

    * ``all``: every due cycle is billed, missed ones included.
    * ``latest``: only the newest due cycle, if within the grace (one charge however long
      the gap was).
    * ``skip``: no missed cycle; the newest due cycle if within the grace. Since a missed cycle
      is one that a newer due cycle supersedes, this bills what ``latest`` bills.

    Every cycle gets a row (a skipped one carries its reason), so no cycle is silently lost.
    """
    if rule == MissedCycles.ALL:
        return [(c, None) for c in cycles]
    newest = cycles[-1] if complete and cycles else None
    plan: list[tuple[datetime, str | None]] = []
    for cycle in cycles:
        if cycle != newest:
            plan.append((cycle, f"missed cycle: a later cycle is also due (missed_cycles={rule})"))
        elif cycle < cutoff:
            plan.append((cycle, f"missed cycle: due since {cycle:%Y-%m-%d %H:%M:%S} UTC, past the "
                                f"grace period (missed_cycles={rule})"))
        else:
            plan.append((cycle, None))
    return plan
