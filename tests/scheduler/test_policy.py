"""Merchant retry policies built from plain columns, decided by tenacity strategies."""

from datetime import UTC, datetime, timedelta

import pytest

from scheduler.policy import PolicyError, RetryPolicy, parse_delays

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def test_delays_follow_the_list_then_repeat_the_last():
    policy = RetryPolicy.from_columns("1h,1d,3d", 6, "*")
    waits = [policy.next_attempt_at(n, "NotEnoughAccountBalance", NOW) for n in range(1, 7)]
    assert [w - NOW for w in waits[:5]] == [
        timedelta(hours=1), timedelta(days=1), timedelta(days=3), timedelta(days=3), timedelta(days=3)]
    assert waits[5] is None  # the 6th attempt was the last one


def test_max_attempts_counts_the_first_attempt():
    policy = RetryPolicy.from_columns("5s", 1, "*")
    assert policy.next_attempt_at(1, "NotEnoughAccountBalance", NOW) is None


def test_only_listed_codes_are_retried():
    policy = RetryPolicy.from_columns("5s", 4, "NotEnoughAccountBalance, BankMaintenance")
    assert policy.next_attempt_at(1, "BankMaintenance", NOW) == NOW + timedelta(seconds=5)
    assert policy.next_attempt_at(1, "OwnerAuthFail", NOW) is None
    assert policy.next_attempt_at(1, None, NOW) is None


def test_default_policy_matches_the_column_defaults():
    policy = RetryPolicy.default()
    assert policy.max_attempts == 4
    assert policy.next_attempt_at(1, "NotEnoughAccountBalance", NOW) == NOW + timedelta(hours=1)
    assert policy.next_attempt_at(1, "OwnerAuthFail", NOW) is None


@pytest.mark.parametrize(
    ("delays", "attempts", "fragment"),
    [("", 3, "retry_delays is empty"), ("1h,soon", 3, "cannot read 'soon'"),
     ("10", 3, "cannot read '10'"), ("1h", 0, "max_attempts must be a whole number, 1 or more"),
     ("1h", None, "max_attempts must be a whole number, 1 or more, got None"),
     ("1h", "three", "max_attempts must be a whole number, 1 or more, got 'three'"),
     ("1h", 2.5, "got 2.5"), ("1h", True, "got True")],
)
def test_bad_policy_columns_say_what_is_wrong(delays, attempts, fragment):
    with pytest.raises(PolicyError, match=fragment):
        RetryPolicy.from_columns(delays, attempts, "*")


def test_units():
    assert parse_delays("5s, 2m,3h ,1d") == (
        timedelta(seconds=5), timedelta(minutes=2), timedelta(hours=3), timedelta(days=1))
