"""The walk's memos give the answers of the functions they stand for (issue 8, the spike).

A month-start spike asks the same questions of 100,000 rows, so the walk memoizes them:

* ``planning._next_cycle`` / ``planning._due_cycles``: croniter's cycles per (cron, zone,
  instant, ...), keyed in UTC;
* ``validation._shared_problems``: the checks that read only the cron, the zone and the
  merchant's policy columns, keyed by those values and their types.

Each memo is compared with the uncached computation over random crons, zones (two with DST)
and instants, asked in random order and through equal instants written in other zones.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

from croniter import croniter  # type: ignore[import-untyped]
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler import planning, validation
from scheduler.cycles import CycleError, due_cycles, next_cycle, parse_zone, schedule_problem, validate_cron

ZONES = ("Asia/Seoul", "America/New_York", "Europe/Berlin", "UTC")
CRONS = ("0 0 1 * *", "0 9 * * *", "30 2 * * *", "0 1 * * SUN", "15 1,2,3 * * *", "0 9 31 * *",
         "0 9 29 2 *", "0 0 L * *", "*/20 * * * *", "0 2 8-14 3 0", "0 1 1-7 11 0")
# Instants around the DST changes of New York and Berlin (2026: 8 Mar / 29 Mar, 1 Nov / 25 Oct)
# and month ends, in whole minutes.
ANCHORS = [datetime(2026, 3, 8, 6, 0, tzinfo=UTC), datetime(2026, 11, 1, 5, 0, tzinfo=UTC),
           datetime(2026, 3, 29, 0, 30, tzinfo=UTC), datetime(2026, 10, 25, 0, 0, tzinfo=UTC),
           datetime(2026, 1, 31, 14, 59, tzinfo=UTC), datetime(2028, 2, 28, 15, 0, tzinfo=UTC)]

instants = st.builds(lambda base, minutes: base + timedelta(minutes=minutes),
                     st.sampled_from(ANCHORS), st.integers(-180, 180))
# The same instant written in another zone (a DST zone's wall time compares without fold).
views = st.sampled_from((*ZONES, None)).map(lambda name: ZoneInfo(name) if name else UTC)


def _fresh_next(cron: str, tz: str, after: datetime) -> datetime:
    return next_cycle(cron, tz, after)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(CRONS), st.sampled_from(ZONES), instants, views),
                min_size=1, max_size=8))
def test_memoized_next_cycle_is_the_uncached_answer(questions: list[Any]) -> None:
    for cron, tz, after, view in questions:  # in random order, repeated instants included
        assert planning._next_cycle(cron, tz, after.astimezone(view)) == _fresh_next(cron, tz, after)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(CRONS), st.sampled_from(ZONES), instants, st.integers(0, 3000), views, views,
       st.integers(1, 5))
def test_memoized_due_cycles_are_the_uncached_answer(cron: str, tz: str, first: datetime, minutes: int,
                                                      view_first: Any, view_now: Any, limit: int) -> None:
    now = first + timedelta(minutes=minutes)
    expected = due_cycles(cron, tz, first, now, limit)
    got = planning._due_cycles(cron, tz, first.astimezone(view_first), now.astimezone(view_now), limit)
    assert (list(got[0]), got[1]) == expected
    again = planning._due_cycles(cron, tz, first, now, limit)
    assert again == got


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(("0 0 1 * *", "0 9 * * *", "30 2 * * *", "*/20 * * * *", "0 1 * * SUN")),
       st.sampled_from(("Asia/Seoul", "UTC", "America/New_York")), instants)
def test_memoized_next_cycle_is_croniters_away_from_dst_changes(cron: str, tz: str, after: datetime) -> None:
    # croniter itself, in the zone: the memo adds nothing of its own (the DST wall times and
    # month-end clamping are cycles.py's, covered by test_cycles.py's table).
    zone = ZoneInfo(tz)
    raw = croniter(cron, after.astimezone(zone)).get_next(datetime).astimezone(UTC)
    nxt = planning._next_cycle(cron, tz, after)
    near = abs(nxt - after) < timedelta(hours=20)
    if tz != "America/New_York" or near and _no_dst_change(zone, after, nxt):
        assert nxt == raw


def _no_dst_change(zone: ZoneInfo, start: datetime, end: datetime) -> bool:
    return start.astimezone(zone).utcoffset() == end.astimezone(zone).utcoffset()


def test_two_instants_with_the_same_wall_time_are_different_questions() -> None:
    # 01:30 happens twice in New York on 1 Nov 2026; equal as wall times, an hour apart.
    ny = ZoneInfo("America/New_York")
    first, second = datetime(2026, 11, 1, 1, 30, tzinfo=ny), datetime(2026, 11, 1, 1, 30, fold=1, tzinfo=ny)
    assert first == second and first.astimezone(UTC) != second.astimezone(UTC)
    for after in (first, second, first):
        assert planning._next_cycle("*/20 * * * *", "UTC", after) == _fresh_next("*/20 * * * *", "UTC", after)


# --- validation: the shared part of problems() ------------------------------------------------


def _reference_problems(sub: Any) -> list[str]:
    """problems() as written before the memo (every check run for every row)."""
    found: list[str] = []
    for column in validation.REQUIRED_TEXT:
        value = getattr(sub, column)
        if value is None or not str(value).strip():
            found.append(f"{column} is empty")
    found.extend(validation.limit_problems(sub))
    try:
        cron = validate_cron(sub.cron)
    except CycleError as exc:
        found.append(str(exc))
        cron = None
    try:
        parse_zone(sub.timezone)
    except CycleError as exc:
        found.append(str(exc))
    if cron is not None and sub.merchant is not None:
        problem = schedule_problem(cron, validation.min_interval(sub.merchant))
        if problem:
            found.append(problem)
    if sub.merchant is None:
        found.append(f"unknown merchant_id {sub.merchant_id!r}: no such row in merchants")
    else:
        found.extend(validation.merchant_problems(sub.merchant))
    return found


merchants = st.one_of(st.none(), st.builds(
    SimpleNamespace, id=st.sampled_from((1, 2)), name=st.sampled_from(("shop", "other")),
    retry_delays=st.sampled_from(("1h,1d,3d", "1h,bogus", "", None, "5m")),
    max_attempts=st.sampled_from((4, 1, 1.0, True, 0, -1, None, "4")),
    retryable_codes=st.sampled_from(("Fail", "", None)),
    min_cycle_interval=st.sampled_from(("1d", "1s", "soon", None, "40d"))))
rows = st.builds(
    SimpleNamespace, id=st.just(1), merchant_id=st.sampled_from((1, 2, None, 1.0)),
    recurrent_id=st.sampled_from(("R1", "", None, "x" * 65)), merchant_user_id=st.sampled_from(("u", " ")),
    product_code=st.just("P"), product_name=st.sampled_from(("월간 구독", None)),
    amount=st.sampled_from((9900, 99, None)), tax_free_amount=st.sampled_from((0, -1, 10_000, None)),
    cron=st.sampled_from((*CRONS, "0 0 9 * * *", "* * * * * */5", "R 9 * * *", "0 9 30 2 *", "61 * * * *",
                          "", None, "* * * * *")),
    timezone=st.sampled_from((*ZONES, "Mars/Olympus", "", None)), merchant=merchants)


@settings(max_examples=300, deadline=None)
@given(st.lists(rows, min_size=1, max_size=6))
def test_cached_problems_are_the_uncached_ones(subs: list[Any]) -> None:
    for sub in subs:  # rows alike share a cache entry; 1, 1.0 and True are not alike
        assert _outcome(validation.problems, sub) == _outcome(_reference_problems, sub)


def _outcome(check: Any, sub: Any) -> Any:
    # What a check raises counts too (the walk turns it into the row's error).
    try:
        return check(sub)
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {exc}"


def test_an_unhashable_value_is_checked_uncached() -> None:
    sub = SimpleNamespace(id=1, merchant_id=1, recurrent_id="R", merchant_user_id="u", product_code="P",
                          product_name="n", amount=9900, tax_free_amount=0, cron="0 9 * * *",
                          timezone="Asia/Seoul", merchant=SimpleNamespace(
                              id=1, name="m", retry_delays=["1h"], max_attempts=4, retryable_codes="",
                              min_cycle_interval="1d"))
    # The same outcome as without the memo (here the policy's own cache refuses the list too).
    assert _outcome(validation.problems, sub) == _outcome(_reference_problems, sub)
    sub.merchant.retry_delays = "1h"
    assert validation.problems(sub) == _reference_problems(sub) == []


# --- planning.decide: the plan of a row without problems ---------------------------------------

NOW = datetime(2026, 11, 1, 0, 1, tzinfo=UTC)
decided_rows = st.builds(
    SimpleNamespace, id=st.just(7), merchant_id=st.just(1), recurrent_id=st.just("R"),
    merchant_user_id=st.just("u"), product_code=st.just("P"), product_name=st.just("n"),
    amount=st.just(9900), tax_free_amount=st.just(0),
    seen_status=st.sampled_from(("active", "paused", "invalid")),
    next_charge_at=st.one_of(st.none(),
                             st.builds(lambda m: NOW + timedelta(minutes=m), st.integers(-90_000, 600))),
    cron=st.sampled_from(("0 0 1 * *", "0 9 * * *", "*/20 * * * *", " 0 0 1 * * ")),
    scheduled_cron=st.sampled_from((None, "0 0 1 * *", "0 9 * * *")),
    timezone=st.sampled_from(("Asia/Seoul", "America/New_York")),
    scheduled_timezone=st.sampled_from((None, "Asia/Seoul")),
    merchant=st.builds(SimpleNamespace, id=st.just(1), name=st.just("m"), retry_delays=st.just("1h"),
                       max_attempts=st.just(4), retryable_codes=st.just("Fail"),
                       min_cycle_interval=st.just("1m"),
                       missed_cycles=st.sampled_from(("all", "latest", "skip"))))


def _uncached_decision(sub: Any, now: datetime, grace: timedelta, limit: int) -> planning.Decision:
    """decide() as written before its plan was memoized."""
    why = planning.reschedule_reason(sub)
    if why:
        return planning.Decision(next_charge_at=next_cycle(sub.cron, sub.timezone, now), rescheduled=why)
    if sub.next_charge_at > now:
        return planning.Decision(next_charge_at=sub.next_charge_at)
    cycles, following = due_cycles(sub.cron, sub.timezone, sub.next_charge_at, now, limit)
    plan = planning.plan_cycles(cycles, complete=following > now, rule=sub.merchant.missed_cycles,
                                cutoff=now - grace)
    return planning.Decision(next_charge_at=following, cycles=tuple(plan))


@settings(max_examples=300, deadline=None)
@given(st.lists(decided_rows, min_size=1, max_size=6), st.sampled_from((timedelta(hours=1), timedelta(0))),
       st.sampled_from((1, 3, 100)))
def test_a_cached_decision_is_the_uncached_one(subs: list[Any], grace: timedelta, limit: int) -> None:
    for sub in subs * 2:  # the second round is answered from the cache
        got = planning.decide(sub, NOW, missed_grace=grace, max_cycles=limit)
        assert got == _uncached_decision(sub, NOW, grace, limit)
    # The same instants written in other zones (never so from the database, which gives UTC)
    # get the answer of the UTC instants, without the cache: the cycles in UTC, and the skip
    # reason's "UTC" time really UTC (before, such a cycle came back in its own zone, its wall
    # time labelled UTC, or the cached answer of the equal UTC instant, whichever came first).
    sub = subs[0]
    expected = _uncached_decision(sub, NOW, grace, limit)
    sub.next_charge_at = sub.next_charge_at and sub.next_charge_at.astimezone(ZoneInfo("America/New_York"))
    got = planning.decide(sub, NOW.astimezone(ZoneInfo("Asia/Seoul")), missed_grace=grace, max_cycles=limit)
    # (next_charge_at, when not yet due, is handed back as given: compared as an instant;
    # PEP 495 makes a repeated wall time unequal to every other zone's datetime)
    assert _instant(got.next_charge_at) == _instant(expected.next_charge_at)
    assert (got.problems, got.cycles, got.rescheduled) == (expected.problems, expected.cycles,
                                                           expected.rescheduled)
    assert all(cycle.tzinfo is UTC for cycle, _ in got.cycles)


def _instant(at: datetime | None) -> datetime | None:
    return None if at is None else at.astimezone(UTC)
