"""Cancel rules as plain functions, in NAVER's order, with deferred and lagging cancels."""

from __future__ import annotations

import pytest

from sandbox.behaviour import Behaviour
from sandbox.cancels import CancelRequest
from sandbox.codes import ApiError
from sandbox.records import Order, Payment, PaymentState
from sandbox.state import SandboxState


def _charged(state: SandboxState, clock, total: int = 1000, tax_free: int = 0) -> Payment:
    registration = state.registrations.create(
        merchant_user_id="u", product_code="P", product_name="n", behaviour=Behaviour(),
        now=clock())
    order = Order(total, total - tax_free, tax_free, "p", "m-1", "u")
    payment = state.payments.reserve(registration, order, clock())
    state.payments.commit(payment, clock())
    return payment


def _cancel(state, clock, payment, amount, *, tax_free=0, deferred=False, **extra):
    request = CancelRequest(amount, amount - tax_free, tax_free, **extra)
    state.cancels.settle(payment, clock())
    state.cancels.check(payment, request, clock())
    return state.cancels.accept(payment, request, clock(), deferred=deferred)


def _refused(state, clock, payment, amount, **kwargs) -> ApiError:
    with pytest.raises(ApiError) as caught:
        _cancel(state, clock, payment, amount, **kwargs)
    return caught.value


def _rows(state, clock, payment):
    return [(r.type_code, r.cancel.amount if r.cancel else None)
            for r in state.history.of_payment(payment.payment_id, clock())]


def test_single_full_cancel_is_row_03_then_already_canceled(state, clock):
    payment = _charged(state, clock)
    cancel = _cancel(state, clock, payment, 1000)
    assert (cancel.type_code, payment.state, payment.rest) == ("03", PaymentState.FULLY_CANCELLED, 0)
    assert cancel.pay_hist_id and cancel.pay_hist_id != payment.pay_hist_id
    assert _refused(state, clock, payment, 10).answer.code == "AlreadyCanceled"


def test_partial_cancels_are_04_even_the_last_one(state, clock):
    payment = _charged(state, clock)
    _cancel(state, clock, payment, 300)
    assert payment.state is PaymentState.PARTIALLY_CANCELLED
    _cancel(state, clock, payment, 700)
    assert _rows(state, clock, payment) == [("01", None), ("04", 300), ("04", 700)]
    assert payment.state is PaymentState.FULLY_CANCELLED


def test_already_canceled_is_checked_before_rest_amount_diff(state, clock):
    payment = _charged(state, clock)
    _cancel(state, clock, payment, 1000)
    error = _refused(state, clock, payment, 100, do_compare_rest=True, expected_rest=12345)
    assert error.answer.code == "AlreadyCanceled" and error.answer.body is None


def test_rest_amount_diff_carries_navers_remaining_amount(state, clock):
    payment = _charged(state, clock)
    _cancel(state, clock, payment, 200)
    error = _refused(state, clock, payment, 100, do_compare_rest=True, expected_rest=800)
    assert error.answer.code == "RestAmountDiff"
    assert error.answer.body is not None and error.answer.body["totalRestAmount"] == 800
    ok = _cancel(state, clock, payment, 100, do_compare_rest=True, expected_rest=700)
    assert ok.rest_after == 700


def test_tax_split_must_add_up_to_the_cancel_amount(state, clock):
    payment = _charged(state, clock)
    request = CancelRequest(amount=500, tax_scope=400, tax_ex_scope=0)
    with pytest.raises(ApiError) as caught:
        state.cancels.check(payment, request, clock())
    assert caught.value.answer.code == "TaxScopeAmountError"


def test_cancel_over_the_remaining_amount(state, clock):
    payment = _charged(state, clock)
    _cancel(state, clock, payment, 600)
    assert _refused(state, clock, payment, 500).answer.code == "OverRemainAmount"


def test_tax_free_part_greater_than_its_remainder(state, clock):
    payment = _charged(state, clock, total=1000, tax_free=200)
    error = _refused(state, clock, payment, 300, tax_free=300)
    assert error.answer.code == "TaxScopeAmtGreaterThanRemainError"
    cancel = _cancel(state, clock, payment, 300, tax_free=200)
    assert (payment.tax_scope_rest, payment.tax_ex_scope_rest, cancel.rest_after) == (700, 0, 700)


def test_cancel_deadline(state, clock):
    state.config.cancel_deadline_days = 30
    payment = _charged(state, clock)
    clock.tick(30 * 86400 + 1)
    assert _refused(state, clock, payment, 100).answer.code == "CancelDeadlineExpired"
    state.config.cancel_deadline_days = None
    assert _cancel(state, clock, payment, 100).pay_hist_id


def test_deferred_cancel_completes_by_itself_and_blocks_the_next(state, clock):
    state.config.cancel_not_complete_seconds = 5
    payment = _charged(state, clock)
    cancel = _cancel(state, clock, payment, 400, deferred=True)
    assert cancel.pay_hist_id == "" and payment.state is PaymentState.CANCEL_PENDING
    assert _rows(state, clock, payment) == [("01", None)]
    assert _refused(state, clock, payment, 100).answer.code == "PreCancelNotComplete"
    clock.tick(5)
    state.cancels.settle_due(clock())
    assert cancel.pay_hist_id and payment.state is PaymentState.PARTIALLY_CANCELLED
    assert cancel.completed_ymdt == "20261128090005"
    assert _rows(state, clock, payment) == [("01", None), ("04", 400)]
    assert _cancel(state, clock, payment, 600).type_code == "04"


def test_cancel_reflection_lag_hides_the_row_and_blocks_the_next(state, clock):
    state.config.cancel_reflect_seconds = 3
    payment = _charged(state, clock)
    _cancel(state, clock, payment, 100)
    assert _rows(state, clock, payment) == [("01", None)]
    assert _refused(state, clock, payment, 100).answer.code == "PreCancelNotComplete"
    clock.tick(3)
    assert _rows(state, clock, payment) == [("01", None), ("04", 100)]


def test_defer_next_cancel_counts_down_then_uses_the_rate(state):
    state.config.cancel_not_complete_next = 2
    assert [state.defer_next_cancel() for _ in range(3)] == [True, True, False]
    state.config.cancel_not_complete_rate = 1.0
    assert state.defer_next_cancel()
