"""Cycle math, pinned by a table (5- and 6-field cron, zones, DST, leap days, month ends)."""

import re
from datetime import UTC, datetime, timedelta
from itertools import islice
from zoneinfo import ZoneInfo

import pytest

from scheduler.cycles import (
    CycleError,
    due_cycles,
    iter_cycles,
    next_cycle,
    schedule_problem,
    validate_cron,
)

SEOUL = ZoneInfo("Asia/Seoul")
NY = ZoneInfo("America/New_York")


def kst(*args: int) -> datetime:
    return datetime(*args, tzinfo=SEOUL)


def ny(*args: int, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=NY, fold=fold)


@pytest.mark.parametrize(
    ("cron", "tz", "after", "expected"),
    [
        # 09:00 KST on the 1st of each month (the README's example)
        ("0 9 1 * *", "Asia/Seoul", kst(2026, 11, 28, 12, 0), [kst(2026, 12, 1, 9), kst(2027, 1, 1, 9)]),
        # strictly after: a cycle exactly at `after` is not returned again
        ("0 9 1 * *", "Asia/Seoul", kst(2026, 12, 1, 9), [kst(2027, 1, 1, 9)]),
        # 6 fields, seconds last: every 5 seconds
        ("* * * * * */5", "Asia/Seoul", kst(2026, 1, 1, 0, 0, 1),
         [kst(2026, 1, 1, 0, 0, 5), kst(2026, 1, 1, 0, 0, 10)]),
        # month ends are clamped: day 31 bills the last day of shorter months
        ("0 9 31 * *", "Asia/Seoul", kst(2027, 1, 31, 10),
         [kst(2027, 2, 28, 9), kst(2027, 3, 31, 9), kst(2027, 4, 30, 9)]),
        ("0 9 30 * *", "Asia/Seoul", kst(2028, 1, 31), [kst(2028, 2, 29, 9), kst(2028, 3, 30, 9)]),
        # day 29: February in a leap year bills the 29th, in other years the 28th
        ("0 0 29 * *", "Asia/Seoul", kst(2028, 1, 30), [kst(2028, 2, 29), kst(2028, 3, 29)]),
        ("0 0 29 2 *", "Asia/Seoul", kst(2026, 1, 1), [kst(2026, 2, 28), kst(2027, 2, 28), kst(2028, 2, 29)]),
        # L = last day of the month
        ("0 9 L * *", "Asia/Seoul", kst(2026, 2, 1), [kst(2026, 2, 28, 9), kst(2026, 3, 31, 9)]),
        # DST spring forward: 02:30 does not exist on 8 Mar 2026 in New York -> 03:00
        ("30 2 * * *", "America/New_York", ny(2026, 3, 7, 12),
         [ny(2026, 3, 8, 3, 0), ny(2026, 3, 9, 2, 30)]),
        # DST fall back: 01:30 happens twice on 1 Nov 2026; a daily cycle bills it once
        ("30 1 * * *", "America/New_York", ny(2026, 10, 31, 12),
         [ny(2026, 11, 1, 1, 30), ny(2026, 11, 2, 1, 30)]),
        # ...and so does an hourly one, like cron itself: the repeated hour runs once
        ("30 * * * *", "America/New_York", ny(2026, 11, 1, 0, 45),
         [ny(2026, 11, 1, 1, 30), ny(2026, 11, 1, 2, 30)]),
        # weekdays, in the subscription's zone (Monday 09:00 KST is Monday 00:00 UTC)
        ("0 9 * * 1", "Asia/Seoul", kst(2026, 11, 28), [kst(2026, 11, 30, 9), kst(2026, 12, 7, 9)]),
    ],
)
def test_cycles_table(cron, tz, after, expected):
    got = list(islice(iter_cycles(cron, tz, after), len(expected)))
    assert got == [e.astimezone(UTC) for e in expected]
    assert all(g.tzinfo is UTC for g in got)


def test_next_cycle_is_utc_and_strictly_after():
    after = datetime(2026, 11, 28, 0, 0, tzinfo=UTC)  # 09:00 KST exactly
    assert next_cycle("0 9 * * *", "Asia/Seoul", after) == datetime(2026, 11, 29, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("cron", "fragment"),
    [
        ("61 * * * *", "invalid minute field '61'"),
        ("0 25 * * *", "invalid hour field '25'"),
        ("0 9 32 * *", "invalid day-of-month field '32'"),
        ("0 9 1 13 *", "invalid month field '13'"),
        ("0 9 * * 9", "invalid day-of-week field '9'"),
        ("* * * * * 61", "invalid second field '61'"),
        ("* * *", "has 3 fields"),
        ("R 9 * * *", "minute field 'R' uses croniter's random or hashed value"),
        ("0 R * * *", "hour field 'R'"),
        ("H 9 * * *", "minute field 'H'"),
        ("0 H(0-5) * * *", "hour field 'H(0-5)'"),
        ("0 9 * * 1,R", "day-of-week field '1,R'"),
        ("", "cron is empty"),
        (None, "cron is empty"),
    ],
)
def test_invalid_cron_names_the_field(cron, fragment):
    with pytest.raises(CycleError, match=re.escape(fragment)):
        validate_cron(cron)


def test_unknown_zone_is_a_clear_error():
    with pytest.raises(CycleError, match="unknown time zone 'Mars/Base'"):
        next_cycle("0 9 * * *", "Mars/Base", datetime(2026, 1, 1, tzinfo=UTC))


def test_naive_after_is_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        next_cycle("0 9 * * *", "Asia/Seoul", datetime(2026, 1, 1))  # noqa: DTZ001


def test_due_cycles_stops_at_now_and_at_the_limit():
    first = datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC)
    now = datetime(2026, 1, 1, 0, 0, 27, tzinfo=UTC)
    due, following = due_cycles("* * * * * */5", "UTC", first, now, limit=100)
    assert [d.second for d in due] == [5, 10, 15, 20, 25]
    assert following == datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC)
    due, following = due_cycles("* * * * * */5", "UTC", first, now, limit=2)
    assert [d.second for d in due] == [5, 10]
    assert following.second == 15  # the rest stays due for the next walk


@pytest.mark.parametrize("cron", ["0 9 * * THU", "0 9 * * FRI", "0 9 * MAR *", "0 9 * * MON-FRI"])
def test_names_containing_r_or_h_are_not_random_tokens(cron):
    assert validate_cron(cron) == cron


DAY = timedelta(days=1)


@pytest.mark.parametrize(
    ("cron", "interval", "fragment"),
    [
        # never fires: croniter raised CroniterBadDateError inside every walk
        ("0 9 30 2 *", DAY, "never fires: no month in its month field '2' has a day 30; "
                            "for the last day of the month write 'L' ('0 9 L 2 *')"),
        ("0 9 31 4 *", DAY, "never fires"),
        ("0 9 31 4,6,9,11 *", DAY, "never fires"),
        # seconds-first 6-field crons, read seconds last, bill 60 times a minute
        ("0 0 9 * * *", DAY, "has 6 fields; the 6th is read as seconds"),
        ("* * * * * */10", DAY, "write 5 fields (minute hour day month weekday)"),
        # cycles closer than the merchant's min_cycle_interval
        ("*/5 * * * *", DAY, "bills cycles 5m apart"),
        ("0 9,21 * * *", DAY, "bills cycles 12h apart"),
        ("0 9 1,2 * *", 2 * DAY, "bills cycles 1d apart"),  # only once a month: scanned far enough
        ("0 9 * * 1,2", 7 * DAY, "bills cycles 1d apart"),
        ("0 0 9 * * *", timedelta(seconds=5), "bills cycles 1s apart"),
    ],
)
def test_schedules_that_cannot_bill_say_what_to_write(cron, interval, fragment):
    problem = schedule_problem(cron, interval)
    assert problem is not None and fragment in problem
    assert "write" in problem


@pytest.mark.parametrize(
    ("cron", "interval"),
    [
        ("0 9 1 * *", DAY), ("0 9 * * *", DAY), ("0 9 1,2 * *", DAY), ("0 9 31 * *", DAY),
        ("0 9 29 2 *", DAY), ("0 9 L * *", DAY), ("0 9 31 4,5 *", DAY), ("0 9 * * 1-5", DAY),
        ("0 9 1 * *", 28 * DAY),  # February's 28 days are the shortest gap
        ("* * * * * */10", timedelta(seconds=5)), ("* * * * * */5", timedelta(seconds=1)),
        ("30 2 * * *", DAY),  # a DST day is 23 h long in New York; wall-clock gaps are checked
    ],
)
def test_schedules_that_are_fine(cron, interval):
    assert schedule_problem(cron, interval) is None
