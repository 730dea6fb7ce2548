"""Invariant violations the property suite found on ``main``, each with its minimal scenario.

Each :class:`Finding` names the tag ``world`` puts on the violations it causes and a minimal
reproduction. ``test_findings.py`` pins every reproduction as a strict xfail (it turns into
an XPASS failure the day the defect is fixed: then drop the mark). The property tests excuse
an example whose every violation carries the tag of a finding whose reproduction *still
fails on the code under test* (checked once per session), and report it as an xfail; any
other violation fails them. So a fixed finding is no longer excused anywhere, and a new
defect is never hidden behind a known one.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from tests.property.world import Policy, Scenario, SubSpec, World, run_scenario

EVERY_5_MIN = SubSpec("*/5 * * * *", 9900)


@dataclass(frozen=True)
class Finding:
    tag: str
    summary: str
    scenario: Scenario


FINDINGS = {f.tag: f for f in (
    Finding(
        "held-never-resumed",
        "(c) a held charge is never resumed by the walk once the cause is fixed (release_lease "
        "leaves it with lease_until NULL; the walk re-enqueues retry_wait and in-flight statuses "
        "only), and the later cycles of its subscription wait behind it silently as pending; "
        "when it was held after NAVER had approved (history answered 401), the money taken stays "
        "on a held charge for ever",
        # one 401 on the first reserve; the next cycle falls before NAVER heals
        Scenario(subs=(EVERY_5_MIN,), reserve=("auth401",), steps=(("tick", 60), ("tick", 300)))),
    Finding(
        "late-approval-on-given-up-charge",
        "(g) an approval NAVER commits after the client timed out lands on a charge the engine "
        "canceled meanwhile: history was still empty and the subscription had been canceled",
        # the approval lands 179 s after it was sent (119 s after our client gave up); the
        # subscription is canceled and the charge run again before that
        Scenario(subs=(EVERY_5_MIN,), approve=("late179",),
                 steps=(("tick", 60), ("cancel", 0), ("tick", 30), ("tick", 300)))),
    Finding(
        "approval-in-flight-when-taken-over",
        "(g) a run that takes over an approving charge whose first run overstayed its lease (its "
        "approval still in NAVER's hands) reads an empty history, is answered AlreadyOnGoing on "
        "the resend, and cancels the charge after a cancel; NAVER then commits the first request",
        Scenario(subs=(EVERY_5_MIN,), approve=("stale_dup",), sleep_events=(("any", 0, "cancel"),),
                 steps=(("tick", 60),))),
    Finding(
        "resent-after-cancel-in-sleep",
        "(b) tenacity's retries inside one approval call resend the approval after a cancel that "
        "was committed between two tries (the subscription is not read again)",
        Scenario(subs=(EVERY_5_MIN,), approve=("5xx",), sleep_events=(("approve", 0, "cancel"),),
                 steps=(("tick", 60),))),
    Finding(
        "time-expired-counted-as-decline",
        "(d) TimeExpired, NAVER's answer to an approval of a reservation that outlived its window "
        "because WE waited (a worker died, a hold, a backoff), is judged as the customer's "
        "decline: it consumes an attempt, tells the customer their payment failed and, on the "
        "last attempt, expires the registration",
        Scenario(subs=(EVERY_5_MIN,), policy=Policy(max_attempts=1), approve=("crash_before",),
                 steps=(("tick", 60), ("tick", 900)))),
    Finding(
        "walk-raised:CroniterBadDateError",
        "(e) a cron with an impossible date (0 9 30 2 *) makes every walk raise (issue 7 "
        "defect 1)",
        Scenario(subs=(EVERY_5_MIN, EVERY_5_MIN), steps=(("cron", 0, "0 9 30 2 *"), ("tick", 60)))),
)}


def violations_of(world: World, tag: str) -> list[str]:
    return [v for v in world.violations if tag in world.tags[v]]


@functools.cache
def still_present(tag: str) -> bool:
    """Whether the finding's minimal scenario still shows its violation on this code."""
    return bool(violations_of(run_scenario(FINDINGS[tag].scenario), tag))


def excused_by(world: World) -> set[str]:
    """The known findings that explain every violation of ``world`` (empty: something else is
    wrong, or nothing is)."""
    found: set[str] = set()
    for violation in world.violations:
        known = {tag for tag in world.tags[violation] if tag in FINDINGS and still_present(tag)}
        if not known:
            return set()
        found |= known
    return found
