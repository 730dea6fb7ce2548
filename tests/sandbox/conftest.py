"""Fixtures for sandbox tests: a hand-driven clock, a bare state, and API helpers.

``state`` is the pure logic with an injected clock (no HTTP); ``naver`` drives the Starlette app
in-process (``TestClient``) with the same kind of clock; ``live`` drives a real ``python -m
sandbox`` on loopback (the session's ``sandbox_service``, reset for each test).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from sandbox.clock import KST, Clock, IdFactory
from sandbox.config import SandboxConfig
from sandbox.server import create_app
from sandbox.state import SandboxState, new_state

HEADERS = {
    "X-Naver-Client-Id": "sandbox-client-id",
    "X-Naver-Client-Secret": "sandbox-client-secret",
    "X-NaverPay-Chain-Id": "sandbox-recurrent-chain-id",
}
START = datetime(2026, 11, 28, 9, 0, 0, tzinfo=KST)


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, start: datetime = START) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class Naver:
    """Calls the sandbox like a merchant server would (form bodies, NAVER's headers)."""

    def __init__(self, http: httpx.Client, partner: str = "naverpay-partner") -> None:
        self.http = http
        self.partner = partner

    def call(
        self, api: str, data: dict[str, Any] | None = None, *, json: Any = None,
        key: str | None = None, headers: dict[str, str] | None = None, **kwargs: Any,
    ) -> httpx.Response:
        sent = {**HEADERS, **(headers or {})}
        if key is not None:
            sent["X-NaverPay-Idempotency-Key"] = key
        url = f"/{self.partner}/naverpay/payments/{api}"
        return self.http.post(url, data=data, json=json, headers=sent, **kwargs)

    def registration(self, **behaviour: Any) -> str:
        reply = self.http.post("/_sandbox/registrations",
                               json={"merchantUserId": "user-42", "productCode": "PLAN-M",
                                     "productName": "월간 구독", "behaviour": behaviour})
        assert reply.status_code == 200, reply.text
        return str(reply.json()["recurrentId"])

    def reserve(self, recurrent_id: str, amount: int = 9900, merchant_pay_id: str = "order-1",
                tax_free: int = 0) -> str:
        reply = self.call("recurrent/pay/v3/reserve", {
            "recurrentId": recurrent_id, "totalPayAmount": amount,
            "taxScopeAmount": amount - tax_free, "taxExScopeAmount": tax_free,
            "productName": "월간 구독", "merchantPayId": merchant_pay_id,
            "merchantUserId": "user-42"})
        assert reply.json()["code"] == "Success", reply.text
        return str(reply.json()["body"]["paymentId"])

    def approve(self, recurrent_id: str, payment_id: str, key: str | None = None,
                **kwargs: Any) -> httpx.Response:
        return self.call("recurrent/pay/v3/approval",
                         {"recurrentId": recurrent_id, "paymentId": payment_id}, key=key, **kwargs)

    def charged(self, amount: int = 9900, tax_free: int = 0) -> str:
        """An approved recurrent payment; returns its paymentId."""
        recurrent_id = self.registration()
        payment_id = self.reserve(recurrent_id, amount, tax_free=tax_free)
        assert self.approve(recurrent_id, payment_id).json()["code"] == "Success"
        return payment_id

    def cancel(self, payment_id: str, amount: int, *, tax_free: int = 0, key: str | None = None,
               **extra: Any) -> httpx.Response:
        return self.call("v1/cancel", {
            "paymentId": payment_id, "cancelAmount": amount, "cancelReason": "고객 요청",
            "cancelRequester": "2", "taxScopeAmount": amount - tax_free,
            "taxExScopeAmount": tax_free, **extra}, key=key)

    def history(self, payment_id: str) -> httpx.Response:
        return self.call("v2.2/list/history", json={"paymentId": payment_id})

    def control(self, path: str, body: Any = None) -> Any:
        reply = self.http.post(f"/_sandbox/{path}", json=body if body is not None else {})
        assert reply.status_code == 200, reply.text
        return reply.json()

    def ledger(self, **query: str) -> Any:
        return self.http.get("/_sandbox/ledger", params=query).json()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def config() -> SandboxConfig:
    return SandboxConfig()


@pytest.fixture
def state(clock: FakeClock, config: SandboxConfig) -> SandboxState:
    return new_state(config, Clock(clock), IdFactory(seed=1))


@pytest.fixture
def naver(clock: FakeClock) -> Iterator[Naver]:
    with TestClient(create_app(now=clock)) as http:
        yield Naver(http)


@pytest.fixture
def live(sandbox_url: str) -> Iterator[Naver]:
    with httpx.Client(base_url=sandbox_url, timeout=10) as http:
        yield Naver(http)
