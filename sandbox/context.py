"""What an API handler receives (:class:`Ctx`) and how it is registered (:class:`ApiSpec`).

Handlers are ``async def handler(ctx) -> Answer``; they may raise :class:`~sandbox.codes.ApiError`.
A handler that must answer late after changing state (a response held after the charge) calls
``ctx.settle(answer)`` first, so the idempotency store already holds the answer meanwhile.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from sandbox.codes import Answer
from sandbox.idempotency import Scope
from sandbox.params import Params
from sandbox.state import SandboxState


class IdempotencySlot:
    """The claim one request holds on its (client id, key); finished exactly once."""

    __slots__ = ("_state", "_scope", "done")

    def __init__(self, state: SandboxState, scope: Scope) -> None:
        self._state = state
        self._scope = scope
        self.done = False

    def finish(self, answer: Answer, encoded: bytes) -> None:
        """Store ``encoded`` (the bytes sent for ``answer``) if the answer is final or
        non-final answers are stored; else release the key."""
        if self.done:
            return
        self.done = True
        store = self._state.idempotency
        if answer.final or self._state.config.store_non_final:
            store.store(self._scope, encoded)
        else:
            store.release(self._scope)

    def abandon(self) -> None:
        """Release the claim of a request that ended without an answer (crash, cancellation)."""
        if not self.done:
            self.done = True
            self._state.idempotency.release(self._scope)


@dataclass(slots=True)
class Ctx:
    """One API request as a handler sees it."""

    state: SandboxState
    params: Params
    slot: IdempotencySlot | None = None
    path_arg: str = ""
    api: str = ""  # the API path after /naverpay/payments/ (faults may target it)

    def now(self) -> datetime:
        """The sandbox time (injectable; never the system clock directly)."""
        return self.state.clock()

    def settle(self, answer: Answer) -> None:
        """Make ``answer`` the stored idempotent answer now, before the handler returns it."""
        if self.slot is not None:
            self.slot.finish(answer, answer.encode(self.state.config.extra_response_fields))


Handler = Callable[[Ctx], Awaitable[Answer]]


class ApiSpec(NamedTuple):
    """A NAVER API: its handler and whether it honours ``X-NaverPay-Idempotency-Key``."""

    handler: Handler
    idempotent: bool
