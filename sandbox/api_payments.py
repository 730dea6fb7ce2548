"""Handlers of the common payment APIs: one-time approval, cancel, history, confirm, receipts.

These serve recurrent and one-time payments alike (naverpay-api.md §3.7-§3.11).
"""

from __future__ import annotations

import asyncio

from sandbox import queries, render
from sandbox.cancels import CancelRequest
from sandbox.clock import ymdt
from sandbox.codes import Answer, ApiError, Code, fail, ok, server_error
from sandbox.config import SandboxConfig
from sandbox.context import ApiSpec, Ctx
from sandbox.history import APPROVAL_TYPES
from sandbox.records import HistoryRow, PaymentState


async def apply_payment(ctx: Ctx) -> Answer:
    """``v2.2/apply/payment``: approve a one-time payment within its window."""
    payment = ctx.state.payments.find(ctx.params.text("paymentId"))
    if payment.recurrent_id is not None:
        raise ApiError(Code.INVALID_PAYMENT_ID, "정기결제는 정기결제 승인 API로 승인해야 합니다.")
    payment.approval_requests += 1
    with ctx.state.in_flight(payment.payment_id):
        now = ctx.now()
        ctx.state.payments.check_approvable(payment, now)
        ctx.state.payments.commit(payment, now)
    detail = render.approval_detail(payment, ctx.state.config)
    return ok({"paymentId": payment.payment_id, "detail": detail})


def _cancel_request(ctx: Ctx) -> CancelRequest:
    p = ctx.params
    p.require("paymentId", "cancelAmount", "cancelReason", "cancelRequester",
              "taxScopeAmount", "taxExScopeAmount")
    compare = p.choice("doCompareRest", ("0", "1"), default="0") == "1"
    if compare:
        p.require("expectedRestAmount")
    request = CancelRequest(
        amount=p.amount("cancelAmount"), tax_scope=p.amount("taxScopeAmount"),
        tax_ex_scope=p.amount("taxExScopeAmount"),
        environment_deposit=p.amount("environmentDepositAmount", default=0),
        reason=p.text("cancelReason"), requester=p.choice("cancelRequester", ("1", "2")),
        do_compare_rest=compare,
        expected_rest=p.amount("expectedRestAmount") if compare else None,
        transaction_key=p.optional("merchantPayTransactionKey"),
    )
    if request.amount == 0:
        raise ApiError(Code.INVALID_PARAMETER, "취소 금액은 0보다 커야 합니다.")
    return request


async def cancel(ctx: Ctx) -> Answer:
    """``v1/cancel``: full or partial refund, with NAVER's checks and CancelNotComplete
    (and the scripted faults of ``/_sandbox/cancel-script``)."""
    request = _cancel_request(ctx)
    state = ctx.state
    payment = state.payments.find_charged(ctx.params.text("paymentId"))
    step = state.next_cancel_step()
    if step is not None and not step.after_commit:
        return server_error(step.status) if step.status is not None else fail(step.code or Code.FAIL)
    with state.in_flight(payment.payment_id):
        now = ctx.now()
        state.cancels.settle(payment, now)
        state.cancels.check(payment, request, now)
        deferred = state.defer_next_cancel()
        booked = state.cancels.accept(payment, request, now, deferred=deferred)
    body = render.cancel_body(payment, booked)
    answer = fail(Code.CANCEL_NOT_COMPLETE, body=body) if deferred else ok(body)
    if step is not None:
        # Refunded: the key keeps the real answer; the client gets it late, or a 5xx.
        ctx.settle(answer)
        if step.hold_seconds:
            await asyncio.sleep(step.hold_seconds)
        if step.status is not None:
            return server_error(step.status)
    return answer


def _history_answer(ctx: Ctx, rows: list[HistoryRow], paged: bool) -> Answer:
    page, paging = queries.paginate(rows, ctx.params if paged else None)
    config = ctx.state.config
    return ok({"list": [render.history_row(row, config) for row in page], **paging})


def _history_of(ctx: Ctx, payment_id: str, paged: bool) -> Answer:
    now = ctx.now()
    ctx.state.cancels.settle_due(now)
    rows = ctx.state.history.of_payment(payment_id, now)
    if not rows:  # unknown, or no approval attempted yet (S4 issue #319)
        return fail(Code.INVALID_PAYMENT_ID, body={"list": [], "totalCount": 0})
    return _history_answer(ctx, rows, paged)


def _history_window(ctx: Ctx) -> Answer:
    p = ctx.params
    start, end = queries.window(p, Code.REQUIRE_CONDITION)
    approval_type = p.choice("approvalType", APPROVAL_TYPES, default="ALL")
    now = ctx.now()
    ctx.state.cancels.settle_due(now)
    return _history_answer(ctx, ctx.state.history.in_window(start, end, approval_type, now), True)


async def history_v22(ctx: Ctx) -> Answer:
    """``v2.2/list/history``: one payment (paging ignored) or a time window."""
    payment_id = ctx.params.optional("paymentId")
    return _history_of(ctx, payment_id, False) if payment_id else _history_window(ctx)


async def history_v23(ctx: Ctx) -> Answer:
    """``v2.3/list/history``: a time window (or ``.../{paymentId}``, paged)."""
    if ctx.path_arg:
        return _history_of(ctx, ctx.path_arg, True)
    return _history_window(ctx)


def confirm_allowed(config: SandboxConfig) -> bool:
    """Purchase confirm is part of the contract when settlement or points are on 거래완료."""
    return "trade_confirm" in (config.settlement_basis, config.point_basis)


def accrual_allowed(config: SandboxConfig) -> bool:
    """Point accrual is part of the contract for payment-date settlement with manual points."""
    return (config.naverpoint_save and config.settlement_basis == "payment_date"
            and config.point_basis == "manual")


async def purchase_confirm(ctx: Ctx) -> Answer:
    """``v1/purchase-confirm`` -> confirmTime: once per approved payment, for merchants whose
    settlement or points are on 거래완료 (else InvalidMerchantType); a second confirm with a new
    idempotency key is AlreadyComplete (the same key replays the first answer)."""
    p = ctx.params
    p.require("paymentId", "requester")
    p.choice("requester", ("1", "2"))
    config = ctx.state.config
    if not confirm_allowed(config):
        return fail(Code.INVALID_MERCHANT_TYPE, "거래완료 기준 정산/적립 가맹점이 아닙니다.")
    payment = ctx.state.payments.find_charged(p.text("paymentId"))
    if payment.state is PaymentState.FULLY_CANCELLED:
        return fail(Code.FAIL, "전체 취소된 결제는 거래완료할 수 없습니다.")
    if payment.trade_confirm_ymdt is not None:
        return fail(Code.ALREADY_COMPLETE, "이미 거래완료된 결제입니다.")
    payment.trade_confirm_ymdt = ymdt(ctx.now())
    payment.confirm_requests += 1
    if config.point_basis == "trade_confirm":
        payment.point_saved = True  # points accrue with the trade's confirmation
    return ok({"paymentId": payment.payment_id, "confirmTime": payment.trade_confirm_ymdt})


async def naverpoint_save(ctx: Ctx) -> Answer:
    """``v1/naverpoint-save`` -> paymentId: once per approved payment, for payment-date
    settlement with manual accrual (else InvalidMerchantType); a second accrual with a new
    idempotency key is AlreadyComplete."""
    if not accrual_allowed(ctx.state.config):
        return fail(Code.INVALID_MERCHANT_TYPE)
    payment = ctx.state.payments.find_charged(ctx.params.text("paymentId"))
    if payment.point_saved:
        return fail(Code.ALREADY_COMPLETE, "이미 포인트가 적립된 결제입니다.")
    payment.point_saved = True
    payment.accrual_requests += 1
    return ok({"paymentId": payment.payment_id})


async def cash_amount(ctx: Ctx) -> Answer:
    """``v1|v2/receipt/cash-amount`` -> totalCashAmount, supplyCashAmount, vatCashAmount."""
    payment = ctx.state.payments.find_charged(ctx.params.text("paymentId"))
    return ok(render.cash_amount(payment))


ROUTES: dict[str, ApiSpec] = {
    "v2.2/apply/payment": ApiSpec(apply_payment, True),
    "v1/cancel": ApiSpec(cancel, True),
    "v2.2/list/history": ApiSpec(history_v22, False),
    "v2.3/list/history": ApiSpec(history_v23, False),
    "v1/purchase-confirm": ApiSpec(purchase_confirm, True),
    "v1/naverpoint-save": ApiSpec(naverpoint_save, True),
    "v1/receipt/cash-amount": ApiSpec(cash_amount, False),
    "v2/receipt/cash-amount": ApiSpec(cash_amount, False),
}
"""Common payment APIs by their path after ``/{partnerId}/naverpay/payments/``."""

HISTORY_BY_ID_PREFIX = "v2.3/list/history/"
"""``v2.3/list/history/{paymentId}`` carries the paymentId in the path."""
