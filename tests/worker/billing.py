"""Helpers for charge tests: a controllable clock, recorded sleeps, sandbox control calls."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.sandbox_control import SandboxControl
from worker.charging import ChargeEngine
from worker.naverpay.client import NaverPayClient
from worker.naverpay.config import NaverPayConfig


@dataclass
class Clock:
    """A clock tests move by hand."""

    now: datetime = field(default_factory=lambda: datetime(2026, 11, 28, 3, 0, tzinfo=UTC))

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> datetime:
        self.now += timedelta(**kwargs)
        return self.now


@dataclass
class Sleeps:
    """Records the sleeps the code asked for instead of sleeping."""

    calls: list[float] = field(default_factory=list)

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


Sandbox = SandboxControl  # the name these tests use


def make_client(url: str, **overrides: Any) -> NaverPayClient:
    """A client for the sandbox at ``url`` (short timeouts by default for tests)."""
    config = NaverPayConfig(api_base=url, approval_timeout=overrides.pop("approval_timeout", 5.0),
                            read_timeout=overrides.pop("read_timeout", 5.0), **overrides)
    return NaverPayClient(config)


def make_engine(db: Any, client: NaverPayClient, clock: Clock, sleeps: Sleeps,
                **kwargs: Any) -> ChargeEngine:
    """A charge engine over ``db`` talking to the sandbox through ``client``."""
    return ChargeEngine(sessions=db.sessions, client_for=lambda _merchant: client, clock=clock,
                        sleep=sleeps, **kwargs)
