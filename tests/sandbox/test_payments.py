"""Payment state machine as plain functions: reserve checks, approve, decline, expire, scripts."""

from __future__ import annotations

import re

import pytest

from sandbox.behaviour import Behaviour, Step
from sandbox.codes import ApiError
from sandbox.payments import check_order
from sandbox.records import Order, PaymentState, Registration
from sandbox.state import SandboxState


def _order(total: int = 9900, tax_free: int = 0, merchant_pay_id: str = "order-1") -> Order:
    return Order(total, total - tax_free, tax_free, "월간 구독", merchant_pay_id, "user-42")


def _registration(state: SandboxState, clock, **behaviour) -> Registration:
    return state.registrations.create(
        merchant_user_id="user-42", product_code="P", product_name="n",
        behaviour=Behaviour.from_json(behaviour), now=clock())


def _code(exc: pytest.ExceptionInfo[ApiError]) -> str:
    return exc.value.answer.code


def test_order_tax_split_must_add_up(config):
    with pytest.raises(ApiError) as caught:
        check_order(Order(1000, 900, 50, "p", "m", "u"), config)
    assert _code(caught) == "InvalidParameter"


@pytest.mark.parametrize(("minimum", "total", "accepted"), [(10, 10, True), (10, 9, False),
                                                           (100, 99, False), (100, 100, True)])
def test_order_minimum_amount(config, minimum, total, accepted):
    config.min_amount = minimum
    if accepted:
        check_order(_order(total), config)
    else:
        with pytest.raises(ApiError, match=f"{minimum}원 미만"):
            check_order(_order(total), config)


def test_reserve_makes_a_reserved_payment_with_a_window(state, clock):
    registration = _registration(state, clock)
    payment = state.payments.reserve(registration, _order(), clock())
    assert re.fullmatch(r"20261128NP\d{10}", payment.payment_id)
    assert payment.state is PaymentState.RESERVED
    assert (payment.expires_at - payment.reserved_at).total_seconds() == 600


@pytest.mark.parametrize("mode", ["accept", "reject", "existing"])
def test_duplicate_merchant_pay_id_modes(state, clock, mode):
    state.config.duplicate_merchant_pay_id = mode
    registration = _registration(state, clock)
    first = state.payments.reserve(registration, _order(), clock())
    if mode == "reject":
        with pytest.raises(ApiError) as caught:
            state.payments.reserve(registration, _order(), clock())
        assert _code(caught) == "InvalidParameter"
        return
    second = state.payments.reserve(registration, _order(), clock())
    assert (second is first) == (mode == "existing")


def test_commit_approves_once_and_writes_history(state, clock):
    payment = state.payments.reserve(_registration(state, clock), _order(), clock())
    state.payments.check_approvable(payment, clock())
    state.payments.commit(payment, clock())
    assert payment.state is PaymentState.APPROVED and payment.rest == 9900
    rows = state.history.of_payment(payment.payment_id, clock())
    assert [(r.type_code, r.success) for r in rows] == [("01", True)]
    with pytest.raises(ApiError) as again:
        state.payments.check_approvable(payment, clock())
    assert _code(again) == "AlreadyComplete"


def test_a_declined_payment_is_final(state, clock):
    payment = state.payments.reserve(_registration(state, clock), _order(), clock())
    state.payments.decline(payment, "NotEnoughAccountBalance", clock())
    assert payment.state is PaymentState.DECLINED
    rows = state.history.of_payment(payment.payment_id, clock())
    assert [(r.type_code, r.success) for r in rows] == [("01", False)]
    with pytest.raises(ApiError) as again:
        state.payments.check_approvable(payment, clock())
    assert _code(again) == "Fail" and "NotEnoughAccountBalance" in again.value.answer.message


def test_reserve_window_boundary_then_time_expired(state, clock):
    state.config.reserve_window_seconds = 5
    payment = state.payments.reserve(_registration(state, clock), _order(), clock())
    clock.tick(5)
    state.payments.check_approvable(payment, clock())  # exactly at the end: still allowed
    clock.tick(1)
    with pytest.raises(ApiError) as caught:
        state.payments.check_approvable(payment, clock())
    assert _code(caught) == "TimeExpired" and payment.state is PaymentState.EXPIRED


def test_one_time_payments_use_their_own_window(state, clock):
    state.config.onetime_window_seconds = 600
    state.config.reserve_window_seconds = 1
    payment = state.payments.create_onetime(_order(), clock())
    clock.tick(599)
    state.payments.check_approvable(payment, clock())
    assert payment.recurrent_id is None


def test_find_charged_refuses_payments_without_money(state, clock):
    payment = state.payments.reserve(_registration(state, clock), _order(), clock())
    with pytest.raises(ApiError) as caught:
        state.payments.find_charged(payment.payment_id)
    assert _code(caught) == "InvalidPaymentId"
    with pytest.raises(ApiError):
        state.payments.find("20261128NP0000000000")


def test_behaviour_steps_are_consumed_in_order():
    behaviour = Behaviour.from_json({"serverErrorTimes": 2, "declineCode": "OwnerAuthFail",
                                     "declineTimes": 1, "timeoutAfterCommitTimes": 1})
    steps = [behaviour.next_step() for _ in range(6)]
    assert steps == [Step.SERVER_ERROR, Step.SERVER_ERROR, Step.DECLINE, Step.COMMIT_THEN_HOLD,
                     Step.APPROVE, Step.APPROVE]


def test_decline_code_without_times_declines_every_approval():
    behaviour = Behaviour.from_json({"declineCode": "NotEnoughAccountBalance"})
    assert {behaviour.next_step() for _ in range(5)} == {Step.DECLINE}


@pytest.mark.parametrize("bad", [{"serverErrorTimes": -1}, {"serverErrorStatus": 404},
                                 {"declineCode": ""}, {"payMeans": "CASH"}, {"latency": 5},
                                 {"declineTimes": 1.5}, {"timeoutSeconds": "2"}])
def test_behaviour_rejects_bad_members(bad):
    with pytest.raises(ValueError):
        Behaviour.from_json(bad)


def test_payments_inherit_the_registration_pay_means(state, clock):
    registration = _registration(state, clock, payMeans="BANK")
    payment = state.payments.reserve(registration, _order(), clock())
    assert payment.pay_means == "BANK"
