"""Hypothesis strategies for scenarios (see ``world.Scenario``), by family of faults.

A ``Family`` says which kinds of trouble a test draws on top of the core ones (5xx before and
after NAVER committed, dropped connections, timeouts, unreadable answers, every customer
decline, ``AlreadyOnGoing``, ``AlreadyComplete``, workers dying before or after NAVER acted or
in a sleep, duplicate and stale runs, lost and duplicated messages, pauses, cancels and
resumes between runs, cron and amount changes by SQL). Every list shrinks toward "ok" and
fewer steps, so a failure comes back as a short story.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st

from tests.property import fake_naver as fn
from tests.property.world import Policy, Scenario, SubSpec

CRONS = ("*/10 * * * *", "*/5 * * * *", "0 * * * *", "*/15 * * * *")
BAD_CRONS = ("0 9 30 2 *", "0 9 31 4 *", "R 9 * * *", "0 0 9 * * *", "61 * * * *")
AMOUNTS = (9900, 100, 15000, 50000)
SECONDS = (300, 600, 60, 5, 30, 120, 1800, 3600)
SUB_INDEX = st.integers(0, 1)


@dataclass(frozen=True)
class Family:
    merchant_faults: bool = False  # 401, InvalidMerchant, InvalidParameter, unknown codes, bad creds
    late: bool = False  # approvals NAVER commits after the client gave up
    cancel_in_run: bool = False  # pause/cancel between two tries of one call (at a sleep)
    bad_crons: bool = False  # cron changes to expressions the walk must refuse or survive


CORE_RESERVE = tuple(t for t in fn.RESERVE_TOKENS if t not in fn.MERCHANT_SIDE_TOKENS)
CORE_APPROVE = tuple(t for t in fn.APPROVE_TOKENS
                     if t not in fn.MERCHANT_SIDE_TOKENS and t not in fn.LATE_TOKENS)
CORE_HISTORY = tuple(t for t in fn.HISTORY_TOKENS if t not in fn.MERCHANT_SIDE_TOKENS)
CORE_EXPIRE = tuple(t for t in fn.EXPIRE_TOKENS if t not in fn.MERCHANT_SIDE_TOKENS)


def _script(tokens: tuple[str, ...], min_size: int = 1,
            max_size: int = 8) -> st.SearchStrategy[tuple[str, ...]]:
    # "ok" is the first choice: what shrinking moves toward.
    return st.lists(st.sampled_from(tokens), min_size=min_size, max_size=max_size).map(tuple)


TRANSIENT = ("5xx", "maintenance")


def _tokens(core: tuple[str, ...], full: tuple[str, ...], family: Family) -> tuple[str, ...]:
    """The core tokens, plus the family's own, repeated so that they are about a third of the
    draws (a family test is about its faults)."""
    extra = [t for t in full if (family.merchant_faults and t in fn.MERCHANT_SIDE_TOKENS)
             or (family.late and t in fn.LATE_TOKENS)
             or (family.cancel_in_run and t in TRANSIENT)]
    weight = max(1, len(core) // (2 * len(extra))) if extra else 0
    # "ok" first (what shrinking moves toward), then the family's own: Hypothesis's first,
    # simplest examples favour the start of the list.
    return ("ok", *(extra * weight), *(t for t in core if t != "ok"))


def steps(family: Family) -> st.SearchStrategy[tuple[object, ...]]:
    crons = CRONS + (BAD_CRONS if family.bad_crons else ())
    tick = st.tuples(st.just("tick"), st.sampled_from(SECONDS))
    choices = [
        tick, tick, tick, tick,
        st.tuples(st.just("walk"), st.sampled_from(SECONDS)),
        st.just(("deliver_all",)),
        st.tuples(st.just("deliver"), st.integers(0, 5)),
        st.tuples(st.just("redeliver"), st.integers(0, 5)),
        st.tuples(st.just("lose"), st.integers(0, 5)),
        st.tuples(st.just("advance"), st.sampled_from(SECONDS)),
        st.tuples(st.sampled_from(("pause", "cancel", "resume")), SUB_INDEX),
        st.tuples(st.just("resume"), SUB_INDEX),
        st.tuples(st.just("cron"), SUB_INDEX, st.sampled_from(crons)),
        st.tuples(st.just("amount"), SUB_INDEX, st.sampled_from(AMOUNTS)),
    ]
    if family.merchant_faults:
        choices += [st.just(("break_creds",)), st.just(("fix_creds",))]
    return st.one_of(*choices)


@st.composite
def scenarios(draw: st.DrawFn, family: Family = Family(), max_steps: int = 24) -> Scenario:
    subs = draw(st.lists(st.builds(SubSpec, st.sampled_from(CRONS), st.sampled_from(AMOUNTS)),
                         min_size=1, max_size=2))
    policy = draw(st.builds(Policy, max_attempts=st.integers(1, 3),
                            final_action=st.sampled_from(("expire", "pause", "none")),
                            missed_cycles=st.sampled_from(("latest", "all", "skip"))))
    in_run = ("crash", "cancel", "pause") if family.cancel_in_run else ("crash",)
    return Scenario(
        subs=tuple(subs), policy=policy,
        reserve=draw(_script(_tokens(CORE_RESERVE, fn.RESERVE_TOKENS, family))),
        approve=draw(_script(_tokens(CORE_APPROVE, fn.APPROVE_TOKENS, family))),
        history=draw(_script(_tokens(CORE_HISTORY, fn.HISTORY_TOKENS, family), min_size=0)),
        expire=draw(_script(_tokens(CORE_EXPIRE, fn.EXPIRE_TOKENS, family), min_size=0, max_size=3)),
        steps=tuple(draw(st.lists(steps(family), min_size=4, max_size=max_steps))),
        sleep_events=tuple(draw(st.lists(
            st.tuples(st.sampled_from(("approve", "any", "approve", "reserve", "history")),
                      st.integers(0, 3), st.sampled_from(in_run)),
            max_size=3, unique_by=lambda e: (e[0], e[1])))),
        seed=draw(st.integers(0, 2**16)),
    )
