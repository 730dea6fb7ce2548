"""Cycle math: when is a subscription due, computed with croniter in its own time zone.

Pure functions; the caller passes ``after`` (no clock is read here).

* Cron has 5 fields (minute hour day month weekday). A 6th field is read as **seconds,
  last** (croniter's convention) and is accepted only for merchants whose
  ``min_cycle_interval`` is under a minute (demos, tests: ``"* * * * * */5"``); anywhere else
  a 6-field expression is almost always a seconds-*first* cron misread (``0 0 9 * * *`` would
  bill every second of 00:00 on the 9th), so it is refused (:func:`schedule_problem`).
* croniter's ``R`` (random, re-drawn on every parse) and ``H`` (hashed) are refused: a
  schedule must give the same cycles on every walk.
* A cron that never fires (``0 9 30 2 *``: February has no 30th) or whose consecutive cycles
  come closer than the merchant's ``min_cycle_interval`` is refused by
  :func:`schedule_problem`, with what to write instead.
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
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter  # type: ignore[import-untyped]

FIELD_NAMES = ("minute", "hour", "day-of-month", "month", "day-of-week", "second")
# croniter's random (R) and hashed (H, H(0-29), H/5) tokens: a different schedule per parse.
_UNSTABLE = re.compile(r"^[RrHh](\([^)]*\))?(/\d+)?$")


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


@lru_cache(maxsize=4096)
def validate_cron(expr: str | None) -> str:
    """``expr`` normalised, or a CycleError that names the offending field. Cached: croniter's
    parse is the walk's hottest call, and every due row asks it at least twice."""
    if expr is None or not expr.strip():
        raise CycleError("cron is empty; expected 5 fields (minute hour day month weekday)")
    fields = expr.split()
    if len(fields) not in (5, 6):
        raise CycleError(
            f"cron {expr!r} has {len(fields)} fields; expected 5 "
            "(minute hour day month weekday), e.g. '0 9 1 * *' for 09:00 on the 1st"
        )
    for index, field in enumerate(fields):
        if any(_UNSTABLE.match(item) for item in field.split(",")):
            raise CycleError(
                f"cron {expr!r}: the {FIELD_NAMES[index]} field {field!r} uses croniter's random "
                "or hashed value (R/H), which changes on every read; write a fixed value "
                "instead, e.g. '0 9 * * *'")
    if not croniter.is_valid(" ".join(fields)):
        for index, field in enumerate(fields):
            probe = ["*"] * len(fields)
            probe[index] = field
            if not croniter.is_valid(" ".join(probe)):
                raise CycleError(f"cron {expr!r}: invalid {FIELD_NAMES[index]} field {field!r}")
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


# Schedule checks run cycles from a fixed instant in UTC (no DST: a 09:00 daily cron is 24 h
# apart in wall time even where a DST day is 23 h long), over a leap year, bounded in cycles.
_CHECK_FROM = datetime(2027, 12, 31, 0, 0, tzinfo=UTC)
_CHECK_SPAN = timedelta(days=400)
_CHECK_CYCLES = 1000  # a year of daily cycles; sub-minute ones repeat well within it


def _describe(interval: timedelta) -> str:
    seconds = int(interval.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@lru_cache(maxsize=4096)
def schedule_problem(cron: str, min_interval: timedelta) -> str | None:
    """Why ``cron`` (already syntactically valid) cannot bill under ``min_interval``, or None.

    Refused: 6 fields when ``min_interval`` is a minute or more (a seconds-first cron read
    seconds-last), a cron that never fires, and any two consecutive cycles closer than
    ``min_interval``. Pure and cached: the walk asks it for every due row.
    """
    expr = validate_cron(cron)
    fields = expr.split()
    if len(fields) == 6 and min_interval >= timedelta(minutes=1):
        return (f"cron {expr!r} has 6 fields; the 6th is read as seconds (croniter reads seconds "
                f"last, so '0 0 9 * * *' means every second of 00:00 on the 9th); write 5 fields "
                f"(minute hour day month weekday), e.g. '0 9 * * *' for 09:00 every day "
                f"(6 fields are only for merchants whose min_cycle_interval is under 1m)")
    cycles = iter_cycles(expr, "UTC", _CHECK_FROM)
    try:
        previous = next(cycles)
        for _ in range(_CHECK_CYCLES):
            current = next(cycles)
            if current - previous < min_interval:
                return _too_close(expr, previous, current, min_interval)
            if current - _CHECK_FROM > _CHECK_SPAN:
                break
            previous = current
    except (CroniterError, StopIteration, ValueError) as exc:
        return _never_fires(expr, exc)
    return None


def _too_close(expr: str, first: datetime, second: datetime, minimum: timedelta) -> str:
    seconds_note = " (its 6th field is read as seconds, last)" if len(expr.split()) == 6 else ""
    example = "'0 9 1 * *' (monthly)"
    if minimum <= timedelta(days=1):
        example = "'0 9 * * *' (daily) or " + example
    return (f"cron {expr!r} bills cycles {_describe(second - first)} apart{seconds_note} "
            f"(e.g. {first:%d %b %H:%M:%S} and {second:%d %b %H:%M:%S}), closer than the "
            f"merchant's min_cycle_interval {_describe(minimum)}; write a cron whose cycles are "
            f"at least {_describe(minimum)} apart, e.g. {example}, or lower "
            f"merchants.min_cycle_interval if this is intended")


def _never_fires(expr: str, exc: Exception) -> str:
    fields = expr.split()
    hint = ""
    if fields[2].isdigit():
        hint = (f": no month in its month field {fields[3]!r} has a day {fields[2]}; "
                f"for the last day of the month write 'L' ('{fields[0]} {fields[1]} L {fields[3]} "
                f"{fields[4]}')")
    return f"cron {expr!r} never fires{hint} ({type(exc).__name__})"
