"""``POST /_sandbox/inject``: make NAVER's books disagree with the merchant's, on purpose.

Reconciliation (정산 대사) compares NAVER's payment history of a day with the merchant's
database; its tests need days where the two differ in known ways. Each call makes one
mismatch, at a chosen time (``at``: ``YYYYMMDDHHMMSS`` KST, default the sandbox clock) so a
test can aim at a KST day and its boundaries::

    {"kind": "approval", "amount": 9900, "merchantPayId": "..."[, "recurrentId": "..."]}
        a payment approved at NAVER that the merchant never reserved (history 01 SUCCESS)
    {"kind": "amount", "paymentId": "...", "amount": 5000}
        NAVER's record of an existing payment carries another amount (approval and history)
    {"kind": "cancel", "paymentId": "...", "amount": 1000}
        a cancel done at NAVER (e.g. in the partner center), unknown to the merchant (03/04)
    {"kind": "drop", "paymentId": "..."}
        history no longer shows the payment (as if NAVER never approved it)

The answer is ``{"paymentId": ...}`` (plus ``"rows"`` for ``drop``). Bad input is HTTP 400
naming the member; an unknown paymentId HTTP 404.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from sandbox.cancels import CancelRequest
from sandbox.clock import parse_ymdt
from sandbox.records import CHARGED_STATES, Order, Payment
from sandbox.state import SandboxState

KINDS = ("approval", "amount", "cancel", "drop")


def inject(state: SandboxState, data: dict[str, Any]) -> dict[str, Any]:
    """Apply one injection described by ``data``; raises ValueError/LookupError on bad input."""
    kind = data.get("kind")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    at = _at(state, data)
    if kind == "approval":
        return _approval(state, data, at)
    payment = _payment(state, data)
    if kind == "amount":
        amount = _positive(data, "amount")
        tax_ex = min(payment.order.tax_ex_scope, amount)
        payment.order = replace(payment.order, total=amount, tax_scope=amount - tax_ex, tax_ex_scope=tax_ex)
        payment.rest, payment.tax_scope_rest, payment.tax_ex_scope_rest = amount, amount - tax_ex, tax_ex
        return {"paymentId": payment.payment_id}
    if kind == "cancel":
        return _cancel(state, payment, _positive(data, "amount"), at)
    return {"paymentId": payment.payment_id, "rows": state.history.drop(payment.payment_id)}


def _at(state: SandboxState, data: dict[str, Any]) -> datetime:
    text = data.get("at")
    if text is None:
        return state.clock()
    if not isinstance(text, str):
        raise ValueError("at must be a YYYYMMDDHHMMSS string (KST)")
    return parse_ymdt(text)  # ValueError names the bad text


def _positive(data: dict[str, Any], name: str) -> int:
    value = data.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _payment(state: SandboxState, data: dict[str, Any]) -> Payment:
    payment_id = data.get("paymentId")
    if not isinstance(payment_id, str) or not payment_id:
        raise ValueError("paymentId is required")
    payment = state.payments.by_id.get(payment_id)
    if payment is None:
        raise LookupError(f"no payment {payment_id!r}")
    return payment


def _approval(state: SandboxState, data: dict[str, Any], at: datetime) -> dict[str, Any]:
    amount = _positive(data, "amount")
    merchant_pay_id = data.get("merchantPayId") or f"injected-{len(state.payments.by_id) + 1}"
    order = Order(total=amount, tax_scope=amount, tax_ex_scope=0, product_name="대사 주입",
                  merchant_pay_id=str(merchant_pay_id), merchant_user_id="injected-user")
    payment = state.payments.create_onetime(order, at)
    if data.get("recurrentId"):  # else it stays a one-time payment
        payment.recurrent_id = str(data["recurrentId"])
    state.payments.commit(payment, at)
    return {"paymentId": payment.payment_id}


def _cancel(state: SandboxState, payment: Payment, amount: int, at: datetime) -> dict[str, Any]:
    if payment.state not in CHARGED_STATES:
        raise ValueError(f"payment {payment.payment_id} was not approved ({payment.state.value})")
    if amount > payment.rest:
        raise ValueError(f"amount {amount} is more than the {payment.rest} won left to cancel")
    tax_scope = min(amount, payment.tax_scope_rest)
    request = CancelRequest(amount=amount, tax_scope=tax_scope, tax_ex_scope=amount - tax_scope,
                            reason="대사 주입", requester="2")
    state.cancels.accept(payment, request, at, deferred=False)
    return {"paymentId": payment.payment_id}
