"""Everything one sandbox run holds in memory, built fresh on start and on ``/_sandbox/reset``.

Single process, single asyncio loop: state changes happen between awaits, so no locks are
needed. The one exception is NAVER's rule "one in-flight operation per paymentId": requests
that sleep (scripted latency, a response held after commit) keep their paymentId in
``inflight`` so a concurrent approval or cancel of the same payment answers ``AlreadyOnGoing``.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sandbox.cancels import CancelDesk
from sandbox.clock import Clock, IdFactory, Now, system_now
from sandbox.codes import ApiError, Code
from sandbox.config import SandboxConfig, copy
from sandbox.faults import CancelStep, Faults
from sandbox.history import HistoryLog
from sandbox.idempotency import IdempotencyStore
from sandbox.payments import PaymentBook
from sandbox.registrations import RegistrationBook


@dataclass(slots=True)
class SandboxState:
    """Books, stores and switches of one run; ``clock`` is the only source of time."""

    config: SandboxConfig
    clock: Clock
    ids: IdFactory
    registrations: RegistrationBook
    payments: PaymentBook
    cancels: CancelDesk
    history: HistoryLog
    idempotency: IdempotencyStore
    faults: Faults = field(default_factory=Faults)
    inflight: set[str] = field(default_factory=set)
    cancel_script: list[CancelStep] = field(default_factory=list)  # POST /_sandbox/cancel-script
    rng: random.Random = field(default_factory=lambda: random.Random(0))

    @contextmanager
    def in_flight(self, payment_id: str) -> Iterator[None]:
        """Hold ``payment_id`` for one operation; a second one meanwhile gets AlreadyOnGoing."""
        if payment_id in self.inflight:
            raise ApiError(Code.ALREADY_ON_GOING)
        self.inflight.add(payment_id)
        try:
            yield
        finally:
            self.inflight.discard(payment_id)

    def next_cancel_step(self) -> CancelStep | None:
        """The scripted step the cancel being processed consumes (None: process it normally)."""
        return self.cancel_script.pop(0) if self.cancel_script else None

    def defer_next_cancel(self) -> bool:
        """Whether the cancel being accepted answers CancelNotComplete (count, then share)."""
        if self.config.cancel_not_complete_next > 0:
            self.config.cancel_not_complete_next -= 1
            return True
        rate = self.config.cancel_not_complete_rate
        return bool(rate) and self.rng.random() < rate


def new_state(config: SandboxConfig, clock: Clock, ids: IdFactory) -> SandboxState:
    """A run with nothing in it, using ``config`` (which the state then owns and may change)."""
    history = HistoryLog()
    return SandboxState(
        config=config,
        clock=clock,
        ids=ids,
        registrations=RegistrationBook(ids),
        payments=PaymentBook(config, ids, history),
        cancels=CancelDesk(config, ids, history),
        history=history,
        idempotency=IdempotencyStore(clock),
    )


class Runtime:
    """What outlives ``/_sandbox/reset``: start options, base clock, id sequence; and the state."""

    def __init__(self, start_config: SandboxConfig, base_now: Now = system_now) -> None:
        self.start_config = copy(start_config)
        self.base_now = base_now
        self.ids = IdFactory()
        self.state = self._fresh()

    def reset(self) -> None:
        """Forget everything: registrations, payments, keys, faults, clock offset, options."""
        self.state = self._fresh()

    def _fresh(self) -> SandboxState:
        return new_state(copy(self.start_config), Clock(self.base_now), self.ids)
