"""Deterministic regressions for what the property suite found on ``main`` (``findings.py``).

Each test plays the minimal scenario hypothesis shrank a failure to and requires it to be
clean. They are strict xfails while the defect is there: the day one passes, the run fails with
XPASS(strict) and its mark must go (the property tests stop excusing the finding by themselves).
Those without a mark failed on 13ee2f9 and pass since the fix named above them.
"""

from __future__ import annotations

from tests.property.findings import EVERY_5_MIN, FINDINGS
from tests.property.world import Scenario, SubSpec, explain, run_scenario


def clean(tag: str) -> None:
    world = run_scenario(FINDINGS[tag].scenario)
    assert not world.violations, explain(world)


# Fixed by the walk claiming held charges and newer cycles not waiting behind a held one.
def test_a_held_charge_resumes_once_the_credentials_work_and_later_cycles_do_not_wait_silently() -> None:
    """401 on the first reserve (held), NAVER heals: the held charge and the next cycle's charge
    (pending behind it) must both end."""
    clean("held-never-resumed")


# Fixed on main (829734b: settle window; each approval try re-reads the subscription).
def test_an_approval_naver_commits_after_the_client_gave_up_is_never_on_a_canceled_charge() -> None:
    """The approval times out on our side, NAVER commits it 5 minutes later; meanwhile the
    subscription is canceled and the next run finds history empty."""
    clean("late-approval-on-given-up-charge")


# Fixed on main (829734b: settle window; each approval try re-reads the subscription).
def test_a_run_that_takes_over_never_cancels_an_approval_still_in_navers_hands() -> None:
    """NAVER holds the first run's approval past its lease; a second worker takes the charge
    over, history is empty, its resend is answered AlreadyOnGoing; the subscription is canceled
    while it sleeps before the next history read; then NAVER commits the first request."""
    clean("approval-in-flight-when-taken-over")


# Fixed on main (829734b: settle window; each approval try re-reads the subscription).
def test_no_approval_is_resent_after_a_cancel_between_two_tries() -> None:
    """The approval gets a 500; the subscription is canceled while the run sleeps before its
    second try; the second try must not reach NAVER."""
    clean("resent-after-cancel-in-sleep")


# Fixed on main: TimeExpired reserves again within the same attempt (charging._reserve_again).
def test_a_reservation_that_expired_while_we_were_down_is_not_the_customers_decline() -> None:
    """The worker dies before sending the approval; the walk re-enqueues the charge 15 minutes
    later, past the 10-minute reservation window; NAVER answers TimeExpired. With one attempt
    allowed, 13ee2f9 failed the charge finally, told the customer and expired them; now the
    charge reserves again within the same attempt and is approved."""
    clean("time-expired-counted-as-decline")


# Fixed by the walk isolating every row (issue 7, defect 1).
def test_the_walk_survives_a_cron_changed_to_an_impossible_date() -> None:
    clean("walk-raised:CroniterBadDateError")


def test_the_happy_path_is_clean() -> None:
    """The harness itself: a healthy NAVER, two subscriptions, an hour of walks and deliveries."""
    world = run_scenario(Scenario(subs=(EVERY_5_MIN, SubSpec("*/15 * * * *", 100)),
                                  steps=(("tick", 60), ("tick", 300), ("tick", 600), ("tick", 1800))))
    assert not world.violations, explain(world)
    assert len(world.fake.approvals) >= 4
