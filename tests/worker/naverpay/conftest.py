"""Fixtures for the contract tests: a client on the real sandbox and its control API."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.sandbox_control import SandboxControl
from worker.naverpay import Approval, NaverPayClient, NaverPayConfig, PaymentReservation

__all__ = ["SandboxControl"]


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
