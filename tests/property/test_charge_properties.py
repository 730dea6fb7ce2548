"""Property-based tests of the charge state machine and the walk (issue 7, "make the class of
defect hard to reintroduce").

Each test draws scenarios (``strategies.scenarios``) of one family of faults, plays them with
``world.run_scenario`` against the project's own ``scheduler.walk.walk`` and
``worker.charging.process_charge`` talking through the real ``NaverPayClient`` to a scripted,
stateful NAVER, and requires that no invariant (``world`` module docstring, (a)-(g)) is ever
violated, after any step, and that everything ends once NAVER heals.

Profiles and figures: ``conftest.py`` and the README's testing section.
"""

from __future__ import annotations

from hypothesis import event, given

from tests.property.strategies import Family, scenarios
from tests.property.world import Scenario, explain, features, run_scenario


def check(scenario: Scenario) -> None:
    world = run_scenario(scenario)
    for name in features(world):
        event(name)
    assert not world.violations, explain(world)


@given(scenarios(Family()))
def test_core_faults_crashes_and_interleavings_keep_every_invariant(scenario: Scenario) -> None:
    """5xx before/after commit, drops, timeouts, garbled answers, declines, AlreadyOnGoing /
    AlreadyComplete, crashes before/after NAVER acted and in sleeps, duplicate and stale runs,
    lost and duplicated messages, SQL pauses/cancels/resumes, cron and amount changes."""
    check(scenario)


@given(scenarios(Family(merchant_faults=True)))
def test_merchant_side_faults_hold_and_resume_without_touching_the_customer(scenario: Scenario) -> None:
    """The core, plus 401, InvalidMerchant, InvalidParameter, unknown codes and broken then
    fixed credentials: never an attempt, a final action or a customer notice, and resumed."""
    check(scenario)


@given(scenarios(Family(late=True)))
def test_late_approvals_are_never_lost_or_contradicted(scenario: Scenario) -> None:
    """The core, plus approvals NAVER commits after the client stopped waiting."""
    check(scenario)


@given(scenarios(Family(cancel_in_run=True)))
def test_a_cancel_between_two_tries_of_a_call_wins(scenario: Scenario) -> None:
    """The core, plus pauses and cancels landing while a run sleeps between two tries."""
    check(scenario)


@given(scenarios(Family(bad_crons=True)))
def test_the_walk_survives_crons_changed_to_anything(scenario: Scenario) -> None:
    """The core, plus crons changed by SQL to impossible dates, R, seconds-first, garbage."""
    check(scenario)


@given(scenarios(Family(merchant_faults=True, late=True, cancel_in_run=True, bad_crons=True), max_steps=32))
def test_everything_at_once(scenario: Scenario) -> None:
    """Every family of faults together (the soak run's main course)."""
    check(scenario)
