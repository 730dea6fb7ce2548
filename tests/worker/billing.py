"""Helpers for charge tests: a controllable clock, recorded sleeps, sandbox control calls."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

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


class Sandbox:
    """The control API of the running sandbox."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=10)

    def register(self, user: str = "user-1", behaviour: dict[str, Any] | None = None) -> str:
        body = {"merchantUserId": user, "productCode": "PLAN-M", "productName": "월간 구독",
                "behaviour": behaviour or {}}
        response = self.http.post("/_sandbox/registrations", json=body)
        response.raise_for_status()
        return str(response.json()["recurrentId"])

    def ledger(self, recurrent_id: str | None = None) -> dict[str, Any]:
        params = {"recurrentId": recurrent_id} if recurrent_id else {}
        response = self.http.get("/_sandbox/ledger", params=params)
        response.raise_for_status()
        return dict(response.json())

    def payments(self, recurrent_id: str) -> list[dict[str, Any]]:
        return [p for p in self.ledger(recurrent_id)["payments"] if p["recurrentId"] == recurrent_id]

    def approved(self, recurrent_id: str) -> list[dict[str, Any]]:
        return [p for p in self.payments(recurrent_id) if p["state"] == "APPROVED"]

    def registration(self, recurrent_id: str) -> dict[str, Any]:
        regs = self.ledger(recurrent_id)["registrations"]
        return next(r for r in regs if r["recurrentId"] == recurrent_id)


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
