"""Cycle math: when is a subscription due, computed with croniter in its own time zone.

Pure functions; the caller passes ``after`` (no clock is read here).

* Cron has 5 fields, or 6 with **seconds last** (croniter's convention), so demos and tests
  can bill every few seconds: ``"* * * * * */5"``.
* Cycles are computed in the subscription's IANA zone (default ``Asia/Seoul``) and returned
  as aware UTC datetimes, the form stored in ``cycle_at``/``next_charge_at``.
* **Month ends are clamped**: when the day-of-month field is a single number 29, 30 or 31,
  months that are too short are billed on their last day (``0 9 31 * *`` bills 28 or 29 Feb,
  30 Apr, ...), instead of croniter's default of silently skipping them. Lists and ranges
  (``1,31``, ``29-31``) are passed to croniter unchanged; ``L`` means the last day.
* DST: a wall time that does not exist (spring forward) fires at the first valid instant
  croniter gives; a wall time that occurs twice (fall back) is billed once, because two
  cycles with the same local wall time are never returned in a row (as cron itself does:
  the repeated hour does not run again).
"""

from __future__ import annotations

import calendar
from collections.abc import Iterator
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter  # type: ignore[import-untyped]


class CycleError(ValueError):
    """A subscription's cron or time zone cannot produce cycles; the message says why."""


def parse_zone(name: str | None) -> ZoneInfo:
    """The zone called ``name``, or a CycleError naming the bad value."""
    if not name:
        raise CycleError("timezone is empty; use an IANA name such as 'Asia/Seoul'")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise CycleError(f"unknown time zone {name!r}; use an IANA name such as 'Asia/Seoul'") from exc


def validate_cron(expr: str | None) -> str:
    """``expr`` normalised, or a CycleError that names the offending field."""
    if expr is None or not expr.strip():
        raise CycleError("cron is empty; expected 5 fields (or 6 with seconds last)")
    fields = expr.split()
    if len(fields) not in (5, 6):
        raise CycleError(
            f"cron {expr!r} has {len(fields)} fields; expected 5 "
            "(minute hour day month weekday) or 6 (... seconds last)"
        )
    if not croniter.is_valid(" ".join(fields)):
        names = ["minute", "hour", "day-of-month", "month", "day-of-week", "second"]
        for index, field in enumerate(fields):
            probe = ["*"] * len(fields)
            probe[index] = field
            if not croniter.is_valid(" ".join(probe)):
                raise CycleError(f"cron {expr!r}: invalid {names[index]} field {field!r}")
        raise CycleError(f"cron {expr!r} is not a valid cron expression")
    return " ".join(fields)


def _clamped_day(fields: list[str]) -> int | None:
    dom = fields[2]
    if dom.isdigit() and 29 <= int(dom) <= 31:
        return int(dom)
    return None


def _iter_raw(expr: str, zone: ZoneInfo, after: datetime) -> Iterator[datetime]:
    it = croniter(expr, after.astimezone(zone))
    while True:
        yield it.get_next(datetime)


def _iter_local(expr: str, zone: ZoneInfo, after: datetime) -> Iterator[datetime]:
    """Local cycle times after ``after``, with month-end clamping applied."""
    fields = expr.split()
    day = _clamped_day(fields)
    if day is None:
        yield from _iter_raw(expr, zone, after)
        return
    # Merge the exact-day schedule with a last-day schedule restricted to short months.
    exact = _iter_raw(expr, zone, after)
    last = (
        t
        for t in _iter_raw(" ".join([*fields[:2], "L", *fields[3:]]), zone, after)
        if calendar.monthrange(t.year, t.month)[1] < day
    )
    a, b = next(exact), next(last)
    while True:
        if a <= b:
            yield a
            a = next(exact)
        else:
            yield b
            b = next(last)


def iter_cycles(cron: str, tz: str, after: datetime) -> Iterator[datetime]:
    """Every cycle strictly after ``after`` (aware), as aware UTC datetimes, in order."""
    if after.tzinfo is None:
        raise ValueError("after must be timezone-aware")
    expr = validate_cron(cron)
    zone = parse_zone(tz)
    # Seeded with ``after``'s own wall time: ``after`` is usually the previous cycle.
    previous_wall: datetime | None = after.astimezone(zone).replace(tzinfo=None, fold=0)
    for local in _iter_local(expr, zone, after):
        wall = local.replace(tzinfo=None, fold=0)
        if wall == previous_wall:  # the same wall time again after a DST fall-back
            continue
        previous_wall = wall
        yield local.astimezone(UTC)


def next_cycle(cron: str, tz: str, after: datetime) -> datetime:
    """The first cycle strictly after ``after``, aware UTC."""
    return next(iter_cycles(cron, tz, after))


def due_cycles(
    cron: str, tz: str, first: datetime, now: datetime, limit: int
) -> tuple[list[datetime], datetime]:
    """Cycles from ``first`` (itself a cycle) up to ``now``, at most ``limit`` of them.

    Returns the due cycles and the next cycle after the last one returned (the new
    ``next_charge_at``). If more than ``limit`` cycles are due, the rest stay for the next
    walk: ``next_charge_at`` then still lies in the past.
    """
    due: list[datetime] = []
    cursor = first
    cycles = iter_cycles(cron, tz, first)
    while cursor <= now and len(due) < limit:
        due.append(cursor)
        cursor = next(cycles)
    return due, cursor
