"""Handlers of the recurrent APIs: registration, expiry, list, pay reserve and pay approval.

Each handler parses its fields, calls the books in ``registrations``/``payments`` and renders the
answer; the only async work is the scripted waiting of approvals (latency, held responses).
"""

from __future__ import annotations

import asyncio

from sandbox import queries, render
from sandbox.behaviour import Behaviour, Step
from sandbox.codes import Answer, ApiError, Code, fail, ok, server_error
from sandbox.context import ApiSpec, Ctx
from sandbox.payments import check_order
from sandbox.records import Order, Payment
from sandbox.registrations import RegistReserve


async def regist_reserve(ctx: Ctx) -> Answer:
    """``recurrent/regist/v1/reserve`` -> reserveId."""
    p = ctx.params
    p.require("actionType", "productCode", "productName", "totalPayAmount", "returnUrl")
    action = p.choice("actionType", ("NEW", "CHANGE"))
    request = RegistReserve(
        action_type=action,
        target_recurrent_id=p.text("targetRecurrentId") if action == "CHANGE" else None,
        product_code=p.text("productCode"), product_name=p.text("productName"),
        total_pay_amount=p.amount("totalPayAmount"), return_url=p.text("returnUrl"),
        merchant_user_id=p.optional("merchantUserId"),
    )
    reservation = ctx.state.registrations.reserve(request, ctx.now())
    return ok({"reserveId": reservation.reserve_id})


async def regist_approval(ctx: Ctx) -> Answer:
    """``recurrent/regist/v1/approval`` -> recurrentId (and preRecurrentId for CHANGE)."""
    p = ctx.params
    p.require("reserveId", "tempReceiptId")
    reserve_id, temp_receipt_id = p.text("reserveId"), p.text("tempReceiptId")
    registration = ctx.state.registrations.approve(reserve_id, temp_receipt_id, ctx.now())
    reservation = ctx.state.registrations.reservations[reserve_id]
    body = {"reserveId": reserve_id, "tempReceiptId": temp_receipt_id,
            "recurrentId": registration.recurrent_id, "actionType": reservation.action_type}
    if reservation.target_recurrent_id:
        body["preRecurrentId"] = reservation.target_recurrent_id
    return ok(body)


async def expire(ctx: Ctx) -> Answer:
    """``recurrent/expire/v1/request``: the registration becomes EXPIRED."""
    p = ctx.params
    p.require("recurrentId", "expireRequester", "expireReason")
    requester = p.choice("expireRequester", ("1", "2"))
    scripted = ctx.state.registrations.by_id.get(p.text("recurrentId"))
    if scripted is not None and scripted.behaviour.expire_code is not None:
        return fail(scripted.behaviour.expire_code)
    registration = ctx.state.registrations.expire(
        p.text("recurrentId"), requester, p.text("expireReason"), ctx.now()
    )
    return ok({"recurrentId": registration.recurrent_id})


async def recurrent_list(ctx: Ctx) -> Answer:
    """``recurrent/v1/list``: by recurrentId, or by registration time window and state."""
    p = ctx.params
    book = ctx.state.registrations
    recurrent_id = p.optional("recurrentId")
    if recurrent_id:  # the window and paging fields are ignored then
        found = book.by_id.get(recurrent_id)
        rows, paging = queries.paginate([found] if found else [], None)
    else:
        start, end = queries.window(p, Code.REQUIRE_PARAMETER)
        state = p.choice("state", ("VALID", "EXPIRED", "ALL"), default="ALL")
        rows, paging = queries.paginate(book.select(start, end, state), p)
    return ok({"list": [render.registration_row(reg) for reg in rows], **paging})


async def pay_reserve(ctx: Ctx) -> Answer:
    """``recurrent/pay/v3/reserve`` -> recurrentId, paymentId."""
    p = ctx.params
    p.require("recurrentId", "totalPayAmount", "taxScopeAmount", "taxExScopeAmount",
              "productName", "merchantPayId", "merchantUserId")
    order = Order(
        total=p.amount("totalPayAmount"), tax_scope=p.amount("taxScopeAmount"),
        tax_ex_scope=p.amount("taxExScopeAmount"), product_name=p.text("productName"),
        merchant_pay_id=p.text("merchantPayId"), merchant_user_id=p.text("merchantUserId"),
        use_cfm_ymdt=p.optional("useCfmYmdt"),
    )
    state = ctx.state
    check_order(order, state.config)
    recurrent_id = p.text("recurrentId")
    if state.config.auto_register and recurrent_id not in state.registrations.by_id:
        # Demo mode: the customer is taken to have registered in NAVER Pay's window already.
        state.registrations.create(
            merchant_user_id=order.merchant_user_id, product_code="AUTO",
            product_name=order.product_name, behaviour=Behaviour(), now=ctx.now(),
            recurrent_id=recurrent_id,
        )
    registration = state.registrations.require_valid(
        recurrent_id, state.config.expired_registration_code
    )
    if registration.behaviour.reserve_code is not None:
        return fail(registration.behaviour.reserve_code)
    payment = state.payments.reserve(registration, order, ctx.now())
    return ok({"recurrentId": recurrent_id, "paymentId": payment.payment_id})


async def pay_approval(ctx: Ctx) -> Answer:
    """``recurrent/pay/v3/approval``: charge a reserved payment, following the script."""
    p = ctx.params
    p.require("recurrentId", "paymentId")
    payment = ctx.state.payments.find(p.text("paymentId"))
    if payment.recurrent_id != p.text("recurrentId"):
        raise ApiError(Code.INVALID_PARAMETER, "결제 예약의 정기결제 등록번호와 다릅니다.")
    payment.approval_requests += 1
    with ctx.state.in_flight(payment.payment_id):
        return await _approve(ctx, payment)


# Codes that reject the request before any payment processing (the merchant's fault): a script
# answering one of them leaves the payment as it was, approvable once the request is right.
REQUEST_REJECTIONS = frozenset({Code.REQUIRE_PARAMETER, Code.INVALID_PARAMETER, Code.INVALID_MERCHANT})


async def _approve(ctx: Ctx, payment: Payment) -> Answer:
    state = ctx.state
    registration = state.registrations.by_id.get(payment.recurrent_id or "")
    behaviour = registration.behaviour if registration is not None else Behaviour()
    if behaviour.latency_ms:
        await asyncio.sleep(behaviour.latency_ms / 1000)
    now = ctx.now()  # after the wait: the payment may have changed or expired meanwhile
    state.payments.check_approvable(payment, now)
    state.registrations.require_valid(
        payment.recurrent_id or "", state.config.expired_registration_code
    )
    step = behaviour.next_step()
    if step is Step.SERVER_ERROR:
        return server_error(behaviour.server_error_status)  # nothing charged
    if step is Step.DECLINE:
        code = behaviour.decline_code or Code.FAIL
        if code in REQUEST_REJECTIONS:
            return fail(code)  # the request itself was refused: no payment event, no history row
        state.payments.decline(payment, code, now)
        return fail(code)
    state.payments.commit(payment, now)
    answer = ok({"recurrentId": payment.recurrent_id, "paymentId": payment.payment_id,
                 "detail": render.approval_detail(payment, state.config)})
    if step is Step.COMMIT_THEN_HOLD:
        # NAVER has charged and would replay this answer; the client just hears it too late.
        ctx.settle(answer)
        await asyncio.sleep(behaviour.timeout_seconds)
    return answer


ROUTES: dict[str, ApiSpec] = {
    "recurrent/regist/v1/reserve": ApiSpec(regist_reserve, True),
    "recurrent/regist/v1/approval": ApiSpec(regist_approval, True),
    "recurrent/expire/v1/request": ApiSpec(expire, True),
    "recurrent/v1/list": ApiSpec(recurrent_list, False),
    "recurrent/list": ApiSpec(recurrent_list, False),  # legacy path seen in one client (S6)
    "recurrent/pay/v3/reserve": ApiSpec(pay_reserve, True),
    "recurrent/pay/v3/approval": ApiSpec(pay_approval, True),
}
"""Recurrent APIs by their path after ``/{partnerId}/naverpay/payments/``."""
