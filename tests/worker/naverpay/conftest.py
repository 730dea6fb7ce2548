"""Fixtures for the contract tests: a client on the real sandbox and its control API."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from worker.naverpay import Approval, NaverPayClient, NaverPayConfig, PaymentReservation


class SandboxControl:
    """The sandbox's ``/_sandbox`` control API (not part of NAVER's API)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=10)

    def _post(self, path: str, payload: dict[str, Any] | None = None) -> Any:
        response = self.http.post(path, json=payload or {})
        assert response.status_code == 200, f"{path}: {response.status_code} {response.text}"
        return response.json()

    def register(self, behaviour: dict[str, Any] | None = None, *, user: str = "user-42",
                 product: str = "PLAN-M") -> str:
        """A VALID registration without the browser step; returns its recurrentId."""
        payload = {"merchantUserId": user, "productCode": product, "productName": "월간 구독",
                   "behaviour": behaviour or {}}
        return str(self._post("/_sandbox/registrations", payload)["recurrentId"])

    def authorize(self, reserve_id: str) -> str:
        """Stand in for the customer on NAVER's registration page; returns tempReceiptId."""
        return str(self._post(f"/_sandbox/registrations/{reserve_id}/authorize")["tempReceiptId"])

    def onetime_payment(self, amount: int = 5000) -> str:
        """A one-time payment the buyer authenticated, waiting for apply; returns paymentId."""
        payload = {"merchantPayKey": f"order-{uuid.uuid4().hex[:8]}", "productName": "단건",
                   "totalPayAmount": amount, "taxScopeAmount": amount, "taxExScopeAmount": 0,
                   "merchantUserKey": "user-42"}
        return str(self._post("/_sandbox/onetime-payments", payload)["paymentId"])

    def configure(self, **options: Any) -> None:
        """Change sandbox options (reset before each test by the ``sandbox_url`` fixture)."""
        self._post("/_sandbox/config", options)

    def faults(self, **faults: Any) -> None:
        """Inject transport faults."""
        self._post("/_sandbox/faults", faults)

    def ledger(self) -> dict[str, Any]:
        """Everything the sandbox did with money."""
        response = self.http.get("/_sandbox/ledger")
        response.raise_for_status()
        return dict(response.json())

    def payment(self, payment_id: str) -> dict[str, Any]:
        """One payment of the ledger."""
        (found,) = [p for p in self.ledger()["payments"] if p["paymentId"] == payment_id]
        return dict(found)


def new_key(tag: str) -> str:
    """A fresh idempotency key."""
    return f"{tag}-{uuid.uuid4().hex}"


def sandbox_client(url: str, **config: Any) -> NaverPayClient:
    """A client on the sandbox with its default credentials."""
    settings = {"api_base": url, "read_timeout": 5.0, "approval_timeout": 10.0, **config}
    return NaverPayClient(NaverPayConfig(**settings))


def charge(client: NaverPayClient, recurrent_id: str, amount: int = 9900, tax_ex: int = 0,
           ) -> tuple[PaymentReservation, Approval]:
    """Reserve and approve one charge."""
    reservation = reserve(client, recurrent_id, amount, tax_ex)
    approval = client.approve_payment(recurrent_id=recurrent_id,
                                      payment_id=reservation.payment_id,
                                      idempotency_key=new_key("approve"))
    return reservation, approval


def reserve(client: NaverPayClient, recurrent_id: str, amount: int = 9900, tax_ex: int = 0,
            ) -> PaymentReservation:
    """Reserve one charge of ``amount`` won."""
    return client.reserve_payment(
        recurrent_id=recurrent_id, total_pay_amount=amount, tax_scope_amount=amount - tax_ex,
        tax_ex_scope_amount=tax_ex, product_name="월간 구독",
        merchant_pay_id=f"sub-{uuid.uuid4().hex[:12]}", merchant_user_id="user-42",
        idempotency_key=new_key("reserve"))


@pytest.fixture
def control(sandbox_url: str) -> Iterator[SandboxControl]:
    """The control API of a freshly reset sandbox."""
    sandbox = SandboxControl(sandbox_url)
    yield sandbox
    sandbox.http.close()


@pytest.fixture
def client(sandbox_url: str) -> Iterator[NaverPayClient]:
    """A client on the freshly reset sandbox."""
    with sandbox_client(sandbox_url) as naverpay:
        yield naverpay
