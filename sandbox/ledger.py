"""``GET /_sandbox/ledger``: the sandbox's own view of every payment and registration.

This is what NAVER "really" did, for tests and benchmarks to check invariants against (e.g. at
most one APPROVED payment per merchantPayId), independent of what the client believes.
"""

from __future__ import annotations

from typing import Any

from sandbox.clock import ymdt
from sandbox.records import Cancel, Payment, Registration
from sandbox.state import SandboxState


def _cancel_entry(cancel: Cancel) -> dict[str, Any]:
    return {
        "payHistId": cancel.pay_hist_id,
        "cancelAmount": cancel.amount,
        "taxScopeAmount": cancel.tax_scope,
        "taxExScopeAmount": cancel.tax_ex_scope,
        "environmentDepositAmount": cancel.environment_deposit,
        "admissionTypeCode": cancel.type_code,
        "state": "PENDING" if cancel.completes_at is not None else "DONE",
        "requestedAt": cancel.requested_ymdt,
        "completedAt": cancel.completed_ymdt,
        "merchantPayTransactionKey": cancel.transaction_key,
        "cancelReason": cancel.reason,
        "cancelRequester": cancel.requester,
        "restAmountAfter": cancel.rest_after,
    }


def payment_entry(payment: Payment) -> dict[str, Any]:
    """One payment as the ledger shows it."""
    order = payment.order
    return {
        "paymentId": payment.payment_id,
        "recurrentId": payment.recurrent_id,
        "kind": "recurrent" if payment.recurrent_id is not None else "onetime",
        "merchantPayId": order.merchant_pay_id,
        "merchantUserId": order.merchant_user_id,
        "productName": order.product_name,
        "totalPayAmount": order.total,
        "taxScopeAmount": order.tax_scope,
        "taxExScopeAmount": order.tax_ex_scope,
        "state": payment.state.value,
        "declineCode": payment.decline_code,
        "reservedAt": ymdt(payment.reserved_at),
        "expiresAt": ymdt(payment.expires_at),
        "approvedAt": payment.admission_ymdt if payment.decline_code is None else None,
        "approvalRequests": payment.approval_requests,
        "restAmount": payment.rest,
        "tradeConfirmYmdt": payment.trade_confirm_ymdt,
        "pointSaved": payment.point_saved,
        "confirmRequests": payment.confirm_requests,
        "accrualRequests": payment.accrual_requests,
        "cancels": [_cancel_entry(cancel) for cancel in payment.cancels],
    }


def registration_entry(registration: Registration) -> dict[str, Any]:
    """One registration as the ledger shows it (with what is left of its script)."""
    return {
        "recurrentId": registration.recurrent_id,
        "merchantUserId": registration.merchant_user_id,
        "productCode": registration.product_code,
        "productName": registration.product_name,
        "state": registration.state.value,
        "registYmdt": registration.regist_ymdt,
        "expireYmdt": registration.expire_ymdt,
        "expireReason": registration.expire_reason,
        "expireRequester": registration.expire_requester,
        "expireCalls": registration.expire_calls,
        "behaviour": registration.behaviour.to_json(),
    }


def ledger(state: SandboxState, recurrent_id: str | None = None) -> dict[str, Any]:
    """Every payment and registration (only those of ``recurrent_id`` if given)."""
    now = state.clock()
    state.cancels.settle_due(now)
    payments = [
        p for p in state.payments.by_id.values()
        if recurrent_id is None or p.recurrent_id == recurrent_id
    ]
    for payment in payments:  # a window that passed unnoticed shows as EXPIRED here too
        state.payments.expire_if_due(payment, now)
    registrations = [
        r for r in state.registrations.by_id.values()
        if recurrent_id is None or r.recurrent_id == recurrent_id
    ]
    return {
        "payments": [payment_entry(p) for p in payments],
        "registrations": [registration_entry(r) for r in registrations],
    }
