"""Registration state machine as plain functions: reserve, authorize, approve, CHANGE, expire."""

from __future__ import annotations

import re

import pytest

from sandbox.behaviour import Behaviour
from sandbox.codes import ApiError
from sandbox.records import RegistrationState, ReservationState
from sandbox.registrations import RegistReserve
from sandbox.state import SandboxState
from tests.sandbox.conftest import FakeClock


def _request(action: str = "NEW", target: str | None = None) -> RegistReserve:
    return RegistReserve(action, target, "PLAN-M", "월간 구독", 9900, "https://shop/return", "u1")


def _approved(state: SandboxState, clock: FakeClock, action: str = "NEW",
              target: str | None = None) -> str:
    book = state.registrations
    reservation = book.reserve(_request(action, target), clock())
    authorized = book.authorize(reservation.reserve_id, clock())
    return book.approve(reservation.reserve_id, authorized.temp_receipt_id or "", clock()).recurrent_id


def test_created_registration_is_valid_with_naver_shaped_id(state, clock):
    registration = state.registrations.create(
        merchant_user_id="u1", product_code="P", product_name="n", behaviour=Behaviour(), now=clock()
    )
    assert re.fullmatch(r"20261128RE\d{10}[A-Za-z0-9]{6}", registration.recurrent_id)
    assert registration.state is RegistrationState.VALID
    assert registration.regist_ymdt == "20261128090000"


def test_create_with_an_existing_recurrent_id_is_refused(state, clock):
    book = state.registrations
    book.create(merchant_user_id="u", product_code="P", product_name="n", behaviour=Behaviour(),
                now=clock(), recurrent_id="20261128RE1003007926ZStYYU")
    with pytest.raises(ValueError, match="already exists"):
        book.create(merchant_user_id="u", product_code="P", product_name="n",
                    behaviour=Behaviour(), now=clock(), recurrent_id="20261128RE1003007926ZStYYU")


def test_browser_flow_reserve_authorize_approve(state, clock):
    book = state.registrations
    reservation = book.reserve(_request(), clock())
    assert reservation.reserve_id.startswith("20261128")
    authorized = book.authorize(reservation.reserve_id, clock())
    assert re.fullmatch(r"20261128TP\d{10}[A-Za-z0-9]{6}", authorized.temp_receipt_id or "")
    registration = book.approve(reservation.reserve_id, authorized.temp_receipt_id or "", clock())
    assert registration.state is RegistrationState.VALID
    assert registration.merchant_user_id == "u1"
    assert reservation.state is ReservationState.APPROVED


def test_approval_before_the_page_is_completed_fails(state, clock):
    reservation = state.registrations.reserve(_request(), clock())
    with pytest.raises(ApiError) as caught:
        state.registrations.approve(reservation.reserve_id, "20261128TP0000000000xxxxxx", clock())
    assert caught.value.answer.code == "Fail"


def test_approval_with_a_wrong_temp_receipt_or_twice(state, clock):
    book = state.registrations
    reservation = book.reserve(_request(), clock())
    temp = book.authorize(reservation.reserve_id, clock()).temp_receipt_id or ""
    with pytest.raises(ApiError) as wrong:
        book.approve(reservation.reserve_id, "other", clock())
    assert wrong.value.answer.code == "InvalidParameter"
    book.approve(reservation.reserve_id, temp, clock())
    with pytest.raises(ApiError) as again:
        book.approve(reservation.reserve_id, temp, clock())
    assert again.value.answer.code == "AlreadyComplete"


def test_authorize_twice_is_refused(state, clock):
    reservation = state.registrations.reserve(_request(), clock())
    state.registrations.authorize(reservation.reserve_id, clock())
    with pytest.raises(ValueError, match="AUTHORIZED"):
        state.registrations.authorize(reservation.reserve_id, clock())


def test_change_expires_the_old_registration(state, clock):
    old_id = _approved(state, clock)
    clock.tick(60)
    new_id = _approved(state, clock, "CHANGE", old_id)
    old, new = state.registrations.by_id[old_id], state.registrations.by_id[new_id]
    assert (old.state, new.state) == (RegistrationState.EXPIRED, RegistrationState.VALID)
    assert old.expire_ymdt == "20261128090100"


def test_change_of_an_expired_registration_is_refused_at_reserve(state, clock):
    old_id = _approved(state, clock)
    state.registrations.expire(old_id, "2", "해지", clock())
    with pytest.raises(ApiError) as caught:
        state.registrations.reserve(_request("CHANGE", old_id), clock())
    assert caught.value.answer.code == "InvalidParameter"


def test_expire_records_who_and_why_and_only_once(state, clock):
    recurrent_id = _approved(state, clock)
    registration = state.registrations.expire(recurrent_id, "1", "고객 요청", clock())
    assert registration.state is RegistrationState.EXPIRED
    assert (registration.expire_requester, registration.expire_reason) == ("1", "고객 요청")
    with pytest.raises(ApiError) as again:
        state.registrations.expire(recurrent_id, "2", "x", clock())
    assert again.value.answer.code == "Fail"
    with pytest.raises(ApiError) as unknown:
        state.registrations.expire("nope", "2", "x", clock())
    assert unknown.value.answer.code == "InvalidParameter"


def test_require_valid_answers_the_configured_code(state, clock):
    recurrent_id = _approved(state, clock)
    state.registrations.expire(recurrent_id, "2", "x", clock())
    with pytest.raises(ApiError) as caught:
        state.registrations.require_valid(recurrent_id, "RecurrentExpired")
    assert caught.value.answer.code == "RecurrentExpired"
    assert recurrent_id in caught.value.answer.message


def test_select_filters_by_window_and_state(state, clock):
    first = _approved(state, clock)
    clock.tick(3600)
    second = _approved(state, clock)
    state.registrations.expire(second, "2", "x", clock())
    book = state.registrations
    assert [r.recurrent_id for r in book.select("20261128000000", "20261128235959", "ALL")] == [
        first, second]
    assert [r.recurrent_id for r in book.select("20261128000000", "20261128235959", "VALID")] == [
        first]
    assert [r.recurrent_id for r in book.select("20261128093000", "20261128235959", "ALL")] == [
        second]
