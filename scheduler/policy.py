"""A merchant's retry policy, read from plain columns and expressed as tenacity strategies.

Columns (set them with SQL; see the README):

* ``retry_delays``  e.g. ``'1h,1d,3d'``: the wait before the 2nd, 3rd, 4th ... attempt; the
  last delay repeats. Units ``s``, ``m``, ``h``, ``d``.
* ``max_attempts``  attempts in total, the first included.
* ``retryable_codes`` NAVER codes worth another attempt (comma separated; ``*`` = every decline).
* ``min_cycle_interval`` e.g. ``'1d'``: crons whose consecutive cycles come closer are refused
  (same units; read by :func:`parse_interval`).

A declined attempt asks :meth:`RetryPolicy.next_attempt_at`; ``None`` means "give up": the
charge fails finally and the merchant's ``final_action`` runs. The decision itself is
tenacity's: ``stop_after_attempt`` + ``wait_chain`` + ``retry_if_exception``, evaluated on a
``RetryCallState`` built for the attempt, so the strategies are exactly tenacity's own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from tenacity import (
    Future,
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_chain,
    wait_fixed,
)

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DELAY = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")

DEFAULT_DELAYS = "1h,1d,3d"
DEFAULT_MAX_ATTEMPTS = 4
DEFAULT_MIN_CYCLE_INTERVAL = "1d"
DEFAULT_RETRYABLE = "NotEnoughAccountBalance,BankMaintenance,FaultCheckOngoing,BankCheckTime,TimeExpired,Fail"


class PolicyError(ValueError):
    """A merchant's policy columns cannot be used; the message names the column and value."""


class Declined(Exception):
    """The outcome tenacity looks at: a declined attempt and its NAVER code."""

    def __init__(self, code: str | None) -> None:
        super().__init__(code)
        self.code = code


def parse_delays(text: str | None) -> tuple[timedelta, ...]:
    """``'1h,1d,3d'`` -> delays; a PolicyError names the bad part."""
    if not text or not text.strip():
        raise PolicyError("retry_delays is empty; write e.g. '1h,1d,3d' (units s, m, h, d)")
    delays = []
    for part in text.split(","):
        match = _DELAY.match(part)
        if match is None:
            raise PolicyError(
                f"retry_delays {text!r}: cannot read {part.strip()!r}; "
                "write a number and a unit s, m, h or d, e.g. '1h,1d,3d'"
            )
        delays.append(timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)]))
    return tuple(delays)


def parse_interval(text: str | None, column: str = "min_cycle_interval") -> timedelta:
    """``'1d'`` -> one positive duration; a PolicyError names the column and the bad value."""
    match = _DELAY.match(text or "")
    if match is None or int(match.group(1)) < 1:
        raise PolicyError(
            f"{column} {text!r}: write one positive number and a unit s, m, h or d, e.g. '1d'")
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def parse_codes(text: str | None) -> frozenset[str] | None:
    """Comma-separated codes; ``*`` (or empty) means every decline (returns None)."""
    if text is None or text.strip() in ("", "*"):
        return None
    return frozenset(code.strip() for code in text.split(",") if code.strip())


@dataclass(frozen=True)
class RetryPolicy:
    """When to try a declined charge again, and when to give up."""

    delays: tuple[timedelta, ...]
    max_attempts: int
    retryable: frozenset[str] | None  # None: every decline code is retryable

    @classmethod
    def from_columns(
        cls, retry_delays: str | None, max_attempts: int | None, retryable_codes: str | None
    ) -> RetryPolicy:
        """Build from a merchant row's columns, or raise PolicyError saying what is wrong."""
        # SQLite keeps whatever an operator's UPDATE wrote ('three', 2.5) in an INTEGER column.
        whole = isinstance(max_attempts, int) and not isinstance(max_attempts, bool)
        whole = whole or (isinstance(max_attempts, float) and max_attempts.is_integer())
        if max_attempts is None or not whole or max_attempts < 1:
            raise PolicyError(f"max_attempts must be a whole number, 1 or more, got {max_attempts!r}")
        return cls(parse_delays(retry_delays), int(max_attempts), parse_codes(retryable_codes))

    @classmethod
    def default(cls) -> RetryPolicy:
        """The policy of a merchant row left at its defaults."""
        return cls.from_columns(DEFAULT_DELAYS, DEFAULT_MAX_ATTEMPTS, DEFAULT_RETRYABLE)

    def _retrying(self) -> Retrying:
        retryable = self.retryable
        return Retrying(
            stop=stop_after_attempt(self.max_attempts),
            wait=wait_chain(*(wait_fixed(d.total_seconds()) for d in self.delays)),
            retry=retry_if_exception(
                lambda exc: isinstance(exc, Declined)
                and (retryable is None or (exc.code or "") in retryable)
            ),
        )

    def next_attempt_at(self, attempt_number: int, code: str | None, now: datetime) -> datetime | None:
        """After declined attempt ``attempt_number`` (1-based) with ``code``: when to try
        again, or None when the policy gives up."""
        retrying = self._retrying()
        state = RetryCallState(retrying, fn=None, args=(), kwargs={})
        state.attempt_number = attempt_number
        state.outcome = Future.construct(attempt_number, Declined(code), True)
        if not retrying.retry(state) or retrying.stop(state):
            return None
        return now + timedelta(seconds=retrying.wait(state))
