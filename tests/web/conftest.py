"""Fixtures for the registration flow: NAVER's window driven over HTTP, a Registrar on a real
database talking to the real sandbox, and flows as the state token carries them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from tests.conftest import Database
from tests.sandbox_control import SandboxControl
from tests.worker.billing import Clock, Sleeps, make_client
from worker.naverpay.client import NaverPayClient
from worker.web.flow import Flow
from worker.web.registration import Registrar
from worker.web.state_token import new_nonce

RETURN_URL = "http://merchant.example/registrations/return?state=opaque"


def new_flow(**overrides: Any) -> Flow:
    """A NEW flow as the demo page would start it."""
    values: dict[str, Any] = {"action": "NEW", "nonce": new_nonce(), "merchant_id": 1,
                              "product_code": "PLAN-M", "product_name": "월간 구독", "amount": 9900,
                              "merchant_user_id": "user-42", "customer_email": "user42@example.com",
                              "cron": "0 9 1 * *"}
    values.update(overrides)
    return Flow(**values)


def change_flow(subscription_id: int, target: str, **overrides: Any) -> Flow:
    """A CHANGE flow for ``subscription_id`` (currently on ``target``)."""
    values: dict[str, Any] = {"action": "CHANGE", "nonce": new_nonce(), "merchant_id": 1,
                              "product_code": "PLAN-M", "product_name": "월간 구독", "amount": 9900,
                              "subscription_id": subscription_id, "target_recurrent_id": target}
    values.update(overrides)
    return Flow(**values)


class Window:
    """NAVER Pay's registration window in the sandbox, driven the way a browser would."""

    def __init__(self, sandbox_url: str) -> None:
        self.http = httpx.Client(base_url=sandbox_url, follow_redirects=False, timeout=5)

    def open(self, *, action: str = "NEW", target: str | None = None, return_url: str = RETURN_URL,
             client_id: str = "sandbox-client-id", amount: int = 9900) -> str:
        """What the SDK shim submits; the new reserveId."""
        answer = self.http.post("/window/recurrent/regist", data={
            "clientId": client_id, "actionType": action, "targetRecurrentId": target or "",
            "productCode": "PLAN-M", "productName": "월간 구독", "totalPayAmount": str(amount),
            "returnUrl": return_url, "openType": "page"})
        assert answer.status_code == 303, answer.text
        return dict(parse_qsl(urlsplit(answer.headers["location"]).query))["reserveId"]

    def decide(self, reserve_id: str, decision: str = "confirm", means: str = "CARD") -> dict[str, str]:
        """Press 등록 or 취소; the parameters NAVER appends to returnUrl."""
        answer = self.http.post("/window/recurrent/regist/decide", data={
            "reserveId": reserve_id, "decision": decision, "means": means, "openType": "page"})
        assert answer.status_code == 303, answer.text
        return dict(parse_qsl(urlsplit(answer.headers["location"]).query))

    def register(self, **kwargs: Any) -> tuple[str, str]:
        """Open and confirm: (reserveId, tempReceiptId)."""
        result = self.decide(self.open(**kwargs))
        assert result["resultCode"] == "Success"
        return result["reserveId"], result["tempReceiptId"]


@dataclass
class World:
    """A migrated database, the sandbox, and a Registrar between them."""

    db: Database
    sandbox: SandboxControl
    window: Window
    client: NaverPayClient
    clock: Clock
    sleeps: Sleeps
    registrar: Registrar

    def subscriptions(self) -> list[Any]:
        return self.db.sql("SELECT id, recurrent_id, merchant_user_id, product_code, amount, cron, "
                           "status, customer_email FROM subscriptions ORDER BY id")

    def attempts(self) -> list[Any]:
        return self.db.sql("SELECT reserve_id, status, action_type, recurrent_id, subscription_id "
                           "FROM registration_attempts ORDER BY id")


def make_world(db: Database, sandbox_url: str) -> World:
    client = make_client(sandbox_url)
    clock, sleeps = Clock(), Sleeps()
    registrar = Registrar(sessions=db.sessions, client_for=lambda _m: client, clock=clock, sleep=sleeps)
    return World(db, SandboxControl(sandbox_url), Window(sandbox_url), client, clock, sleeps, registrar)


@pytest.fixture
def world(db: Database, sandbox_url: str) -> Iterator[World]:
    """On SQLite and on PostgreSQL."""
    w = make_world(db, sandbox_url)
    yield w
    w.client.close()
    w.window.http.close()


@pytest.fixture
def sqlite_world(sqlite_db: Database, sandbox_url: str) -> Iterator[World]:
    w = make_world(sqlite_db, sandbox_url)
    yield w
    w.client.close()
    w.window.http.close()
