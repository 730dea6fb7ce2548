"""The ``X-NaverPay-Idempotency-Key`` store, keyed by (client id, key).

NAVER stores the first answer to a key and answers a repeat with HTTP 409 and that answer's body
(naverpay-api.md §1.5, measured by S4). The sandbox claims a key when a request starts, so a
repeat that arrives while the first is still running is told ``AlreadyOnGoing`` (409). Answers
that are not final (5xx, maintenance, ``AlreadyOnGoing``) release the claim unless the
``storeNonFinal`` option is on, so a retry with the same key runs again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

from sandbox.clock import Now

MAX_KEY_LENGTH = 64

Scope = tuple[str, str]
"""(client id, idempotency key)."""


@dataclass(slots=True)
class _Entry:
    body: bytes | None  # None while the first request is still being processed
    claimed_at: datetime


class Replay(NamedTuple):
    """What a repeat gets: the stored body, or None while the first is still in progress."""

    body: bytes | None


class IdempotencyStore:
    """Claims, stored answers and their (optional) expiry."""

    def __init__(self, now: Now) -> None:
        self._now = now
        self._entries: dict[Scope, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def begin(self, scope: Scope, retention_seconds: float | None) -> Replay | None:
        """Claim ``scope`` for a new request, or say what a repeat of an earlier one gets."""
        if retention_seconds is not None:
            self._forget_older_than(timedelta(seconds=retention_seconds))
        entry = self._entries.get(scope)
        if entry is not None:
            return Replay(entry.body)
        self._entries[scope] = _Entry(None, self._now())
        return None

    def store(self, scope: Scope, body: bytes) -> None:
        """Keep the first answer to ``scope``; later calls for the same scope change nothing."""
        entry = self._entries.get(scope)
        if entry is not None and entry.body is None:
            entry.body = body

    def release(self, scope: Scope) -> None:
        """Drop an unanswered claim, so the next request with this key runs again."""
        entry = self._entries.get(scope)
        if entry is not None and entry.body is None:
            del self._entries[scope]

    def _forget_older_than(self, age: timedelta) -> None:
        # Dicts keep insertion order, so the oldest claims come first: O(1) amortized.
        cutoff = self._now() - age
        while self._entries:
            scope, entry = next(iter(self._entries.items()))
            if entry.claimed_at > cutoff or entry.body is None:
                return
            del self._entries[scope]
