"""Time and identifiers: one injectable clock in KST, NAVER's time format, and id shapes.

Every state function takes ``now`` from a :class:`Clock` instead of reading the system time, so
unit tests drive reserve windows and cancel delays without sleeping, and the control API can
move the sandbox's time forward (``POST /_sandbox/clock``).
"""

from __future__ import annotations

import base64
import itertools
import random
import string
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

KST = timezone(timedelta(hours=9), "KST")
YMDT_FORMAT = "%Y%m%d%H%M%S"

Now = Callable[[], datetime]
"""A source of aware datetimes; the sandbox never calls ``datetime.now`` elsewhere."""

_ALNUM = string.ascii_letters + string.digits


def system_now() -> datetime:
    """The real time in KST (the default base of every :class:`Clock`)."""
    return datetime.now(KST)


class Clock:
    """The sandbox clock: a base time source plus an offset that tests may advance."""

    def __init__(self, base: Now = system_now) -> None:
        self._base = base
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return self._base() + self.offset

    def advance(self, seconds: float) -> None:
        """Move this clock forward (or back, with a negative number) by ``seconds``."""
        self.offset += timedelta(seconds=seconds)


def ymdt(moment: datetime) -> str:
    """``moment`` as NAVER writes times: ``YYYYMMDDHHMMSS`` in KST."""
    return moment.astimezone(KST).strftime(YMDT_FORMAT)


def parse_ymdt(text: str) -> datetime:
    """The KST datetime of a ``YYYYMMDDHHMMSS`` string; ValueError if it is not one."""
    if len(text) != 14 or not text.isdigit():
        raise ValueError(f"not a YYYYMMDDHHMMSS time: {text!r}")
    return datetime.strptime(text, YMDT_FORMAT).replace(tzinfo=KST)


class IdFactory:
    """Makes identifiers in the shapes seen in NAVER's dev sandbox.

    One sequence feeds every numbered id, and the factory outlives ``/_sandbox/reset``, so a
    process never hands out the same paymentId twice (clients keep old ids in their databases).
    """

    def __init__(self, seed: int | None = None) -> None:
        self._seq = itertools.count(1_000_000_001)
        self._rng = random.Random(seed)

    def _day(self, now: datetime) -> str:
        return now.astimezone(KST).strftime("%Y%m%d")

    def _alnum(self, size: int) -> str:
        return "".join(self._rng.choices(_ALNUM, k=size))

    def payment_id(self, now: datetime) -> str:
        """``YYYYMMDD`` + ``NP`` + 10 digits."""
        return f"{self._day(now)}NP{next(self._seq):010d}"

    def pay_hist_id(self, now: datetime) -> str:
        """History row ids share the paymentId shape (and its sequence, so both stay unique)."""
        return self.payment_id(now)

    def recurrent_id(self, now: datetime) -> str:
        """``YYYYMMDD`` + ``RE`` + 10 digits + 6 letters or digits."""
        return f"{self._day(now)}RE{next(self._seq):010d}{self._alnum(6)}"

    def temp_receipt_id(self, now: datetime) -> str:
        """``YYYYMMDD`` + ``TP`` + 10 digits + 6 letters or digits."""
        return f"{self._day(now)}TP{next(self._seq):010d}{self._alnum(6)}"

    def reserve_id(self, now: datetime) -> str:
        """``YYYYMMDD`` + base64 text, like the dev sandbox's registration reserve ids."""
        token = f"{next(self._seq)}{self._alnum(16)}".encode()
        return self._day(now) + base64.b64encode(token).decode()

    def card_auth_no(self) -> str:
        """An 8-digit card approval number."""
        return f"{self._rng.randrange(10**8):08d}"
