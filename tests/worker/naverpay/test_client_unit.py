"""NaverPayClient against a scripted NAVER (httpx.MockTransport): requests and results."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from urllib.parse import parse_qs

import httpx
import pytest

from tests.worker.naverpay.fakes import (
    CALLS,
    CALLS_BY_METHOD,
    DETAIL,
    END,
    MUTATING,
    SECRET,
    START,
    Call,
    envelope,
    make_client,
    ok,
)
from worker.naverpay import (
    Approval,
    HistoryPage,
    NaverPayClient,
    NaverPayConfig,
    PaymentReservation,
    PermanentError,
)
from worker.naverpay.kst import KST


def form(request: httpx.Request) -> dict[str, str]:
    """The form fields of a request, one value each."""
    return {k: v[0] for k, v in parse_qs(request.content.decode(), strict_parsing=True).items()}


@pytest.mark.parametrize("call", CALLS, ids=lambda c: c.method)
def test_each_api_reaches_its_endpoint_with_headers_and_encoding(call: Call) -> None:
    client, naver = make_client(ok(call.body))

    call.invoke(client)

    request = naver.last
    assert request.method == "POST"
    assert str(request.url) == f"https://naver.test/np_partner/naverpay/payments/{call.path}"
    assert request.headers["X-Naver-Client-Id"] == "unit-client"
    assert request.headers["X-Naver-Client-Secret"] == SECRET
    assert request.headers["X-NaverPay-Chain-Id"] == call.chain
    assert request.headers.get("X-NaverPay-Idempotency-Key") == call.key
    expected_type = "application/json" if call.json_body else "application/x-www-form-urlencoded"
    assert request.headers["Content-Type"] == expected_type
    assert request.extensions["timeout"]["read"] == (60.0 if call.long_timeout else 10.0)
    assert request.extensions["timeout"]["connect"] == 3.0


@pytest.mark.parametrize("call", CALLS, ids=lambda c: c.method)
def test_each_api_returns_its_typed_result(call: Call) -> None:
    client, _ = make_client(ok(call.body))

    result = call.invoke(client)

    assert result.code == "Success"
    assert result.replayed is False
    assert result.raw == envelope("Success", call.body)


def test_reserve_payment_sends_the_documented_form() -> None:
    call = CALLS_BY_METHOD["reserve_payment"]
    client, naver = make_client(ok(call.body))

    result = call.invoke(client, use_cfm_ymdt="20261130")

    assert form(naver.last) == {
        "recurrentId": "20261128RE1", "totalPayAmount": "9900", "taxScopeAmount": "9900",
        "taxExScopeAmount": "0", "productName": "월간 구독", "merchantPayId": "sub-1-2026-11",
        "merchantUserId": "user-42", "useCfmYmdt": "20261130",
    }
    assert result == PaymentReservation(code="Success", message="메시지", raw={},
                                        recurrent_id="20261128RE1",
                                        payment_id="20261128NP0000000001")


def test_approval_returns_the_detail_unchecked_with_aware_korean_time() -> None:
    call = CALLS_BY_METHOD["approve_payment"]
    client, naver = make_client(ok(call.body))

    result = call.invoke(client)

    assert form(naver.last) == {"recurrentId": "20261128RE1",
                                "paymentId": "20261128NP0000000001"}
    assert isinstance(result, Approval) and result.detail is not None
    assert result.recurrent_id == "20261128RE1"
    assert result.detail.total_pay_amount == 9900
    assert result.detail.admission_ymdt == datetime(2026, 11, 28, 9, 15, tzinfo=KST)
    assert result.detail.admission_state == "SUCCESS"
    assert result.detail.merchant_pay_key == "sub-1-2026-11"
    assert result.detail.raw["someNewMember"] == {"nested": True}


def test_cancel_sends_compare_rest_only_with_an_expected_rest_amount() -> None:
    call = CALLS_BY_METHOD["cancel_payment"]
    client, naver = make_client(ok(call.body))

    call.invoke(client)
    plain = form(naver.last)
    result = call.invoke(client, expected_rest_amount=8900, merchant_pay_transaction_key="rf-1",
                         environment_deposit_amount=0)
    compared = form(naver.last)

    assert plain == {"paymentId": "20261128NP0000000001", "cancelAmount": "1000",
                     "cancelReason": "환불", "cancelRequester": "2", "taxScopeAmount": "1000",
                     "taxExScopeAmount": "0"}
    assert compared == {**plain, "doCompareRest": "1", "expectedRestAmount": "8900",
                        "merchantPayTransactionKey": "rf-1", "environmentDepositAmount": "0"}
    assert (result.total_rest_amount, result.pay_hist_id, result.pending) == (
        8900, "20261128NH2", False)


def test_cancel_of_a_onetime_payment_sends_the_onetime_chain_id() -> None:
    call = CALLS_BY_METHOD["cancel_payment"]
    client, naver = make_client(ok(call.body))

    call.invoke(client, onetime=True)

    assert naver.last.headers["X-NaverPay-Chain-Id"] == "chain-onetime"


def test_onetime_chain_falls_back_to_the_recurrent_chain() -> None:
    call = CALLS_BY_METHOD["apply_payment"]
    client, naver = make_client(ok(call.body), onetime_chain_id=None)

    call.invoke(client)

    assert naver.last.headers["X-NaverPay-Chain-Id"] == "chain-recurrent"


# -- chain id: optional, NAVER issues one to group-type merchants only -------------------------

@pytest.mark.parametrize("call", CALLS, ids=lambda c: c.method)
def test_without_a_chain_id_no_chain_header_is_sent(call: Call) -> None:
    client, naver = make_client(ok(call.body), chain_id=None, onetime_chain_id=None)

    call.invoke(client)

    assert "X-NaverPay-Chain-Id" not in naver.last.headers
    assert naver.last.headers["X-Naver-Client-Id"] == "unit-client"


def test_the_default_config_sends_no_chain_header() -> None:
    call = CALLS_BY_METHOD["reserve_payment"]
    client, naver = make_client(ok(call.body), chain_id=NaverPayConfig().chain_id,
                                onetime_chain_id=NaverPayConfig().onetime_chain_id)

    call.invoke(client)

    assert "x-naverpay-chain-id" not in {name.lower() for name in naver.last.headers}


def test_a_onetime_chain_id_alone_goes_only_with_onetime_apis() -> None:
    apply, approve = CALLS_BY_METHOD["apply_payment"], CALLS_BY_METHOD["approve_payment"]
    client, naver = make_client(ok(apply.body), ok(approve.body), chain_id=None,
                                onetime_chain_id="chain-onetime")

    apply.invoke(client)
    onetime = naver.last.headers.get("X-NaverPay-Chain-Id")
    approve.invoke(client)
    recurrent = naver.last.headers.get("X-NaverPay-Chain-Id")

    assert (onetime, recurrent) == ("chain-onetime", None)


def test_a_configured_chain_id_is_sent_on_recurrent_and_onetime_apis() -> None:
    apply, approve = CALLS_BY_METHOD["apply_payment"], CALLS_BY_METHOD["approve_payment"]
    client, naver = make_client(ok(approve.body), ok(apply.body), chain_id="group-chain",
                                onetime_chain_id=None)

    approve.invoke(client)
    recurrent = naver.last.headers.get("X-NaverPay-Chain-Id")
    apply.invoke(client)
    onetime = naver.last.headers.get("X-NaverPay-Chain-Id")

    assert (recurrent, onetime) == ("group-chain", "group-chain")


def test_cancel_not_complete_is_a_pending_cancellation_not_an_error() -> None:
    client, _ = make_client(httpx.Response(200, json=envelope(
        "CancelNotComplete", {"paymentId": "20261128NP0000000001", "payHistId": ""})))

    result = CALLS_BY_METHOD["cancel_payment"].invoke(client)

    assert (result.pending, result.pay_hist_id, result.code) == (True, "", "CancelNotComplete")


def test_history_of_a_payment_not_yet_approved_is_an_empty_page() -> None:
    client, naver = make_client(httpx.Response(200, json=envelope(
        "InvalidPaymentId", {"list": [], "totalCount": 0})))

    page = CALLS_BY_METHOD["payment_history"].invoke(client)

    assert json.loads(naver.last.content) == {"paymentId": "20261128NP0000000001"}
    assert isinstance(page, HistoryPage)
    assert (page.rows, page.total_count, page.code) == ([], 0, "InvalidPaymentId")


def test_invalid_payment_id_outside_history_is_permanent() -> None:
    client, _ = make_client(httpx.Response(200, json=envelope("InvalidPaymentId")))

    with pytest.raises(PermanentError) as info:
        CALLS_BY_METHOD["cancel_payment"].invoke(client)

    assert info.value.code == "InvalidPaymentId"


def test_history_by_time_sends_korean_time_window_and_paging() -> None:
    client, naver = make_client(ok(CALLS_BY_METHOD["history_by_time"].body))

    page = client.history_by_time(start=datetime(2026, 11, 1, 15, 0, tzinfo=KST) -
                                  timedelta(hours=9), end=END, approval_type="CANCEL", page=2,
                                  rows_per_page=50)

    assert json.loads(naver.last.content) == {
        "startTime": "20261101060000", "endTime": "20261128000000", "pageNumber": 2,
        "rowsPerPage": 50, "approvalType": "CANCEL"}
    assert page.rows[0].payment_id == DETAIL["paymentId"]


def test_list_registrations_by_window_sends_state_and_paging() -> None:
    client, naver = make_client(ok({"list": []}))

    client.list_registrations(start=START, end=END, state="VALID")

    assert json.loads(naver.last.content) == {
        "startTime": "20261101000000", "endTime": "20261128000000", "state": "VALID",
        "pageNumber": 1, "rowsPerPage": 20}


@pytest.mark.parametrize("start,end,why", [
    (START, START + timedelta(days=31, seconds=1), "31 days"),
    (START.replace(tzinfo=None), END, "timezone-aware"),
    (END, START, "before start"),
])
def test_windows_naver_would_refuse_are_refused_before_sending(
        start: datetime, end: datetime, why: str) -> None:
    client, naver = make_client(ok({}))

    for call in (lambda: client.history_by_time(start=start, end=end),
                 lambda: client.list_registrations(start=start, end=end)):
        with pytest.raises(ValueError, match=why):
            call()

    assert naver.requests == []


def test_a_window_of_exactly_31_days_is_allowed() -> None:
    client, naver = make_client(ok({"list": []}))

    client.history_by_time(start=START, end=START + timedelta(days=31))

    assert len(naver.requests) == 1


def test_list_without_id_or_window_is_refused() -> None:
    client, _ = make_client(ok({}))

    with pytest.raises(ValueError, match="start and end"):
        client.list_registrations()
    with pytest.raises(ValueError, match="rows_per_page"):
        client.list_registrations(recurrent_id="R", rows_per_page=101)


@pytest.mark.parametrize("key", ["", "a" * 65, "has space", "키", "semi;colon", "a/b"])
def test_bad_idempotency_keys_are_refused_before_sending(key: str) -> None:
    client, naver = make_client(ok({}))

    for call in MUTATING:
        with pytest.raises(ValueError, match="idempotency key"):
            call.invoke(client, idempotency_key=key)

    assert naver.requests == []


def test_the_longest_allowed_idempotency_key_is_sent() -> None:
    key = "A-z_09" * 10 + "abcd"
    client, naver = make_client(ok(CALLS_BY_METHOD["approve_payment"].body))

    CALLS_BY_METHOD["approve_payment"].invoke(client, idempotency_key=key)

    assert len(key) == 64 and naver.last.headers["X-NaverPay-Idempotency-Key"] == key


def test_registration_reserve_key_is_optional_and_change_needs_a_target() -> None:
    client, naver = make_client(ok({"reserveId": "RSV"}))

    client.reserve_registration(product_code="P", product_name="n", total_pay_amount=1,
                                return_url="https://x.test/r", action_type="CHANGE",
                                target_recurrent_id="OLD")

    assert "X-NaverPay-Idempotency-Key" not in naver.last.headers
    assert form(naver.last)["targetRecurrentId"] == "OLD"
    with pytest.raises(ValueError, match="CHANGE"):
        client.reserve_registration(product_code="P", product_name="n", total_pay_amount=1,
                                    return_url="https://x.test/r", action_type="CHANGE")


def test_iterators_walk_every_page() -> None:
    def page(number: int) -> httpx.Response:
        rows = [{**DETAIL, "paymentId": f"P{number}", "recurrentId": f"R{number}"}]
        return ok({"list": rows, "totalCount": 3, "totalPageCount": 3,
                   "currentPageNumber": number})

    client, naver = make_client(page(1), page(2), page(3))
    history = [row.payment_id for row in client.iter_history(start=START, end=END)]
    client2, naver2 = make_client(page(1), page(2), page(3))
    registrations = [reg.recurrent_id for reg in client2.iter_registrations(start=START,
                                                                             end=END)]

    assert history == ["P1", "P2", "P3"]
    assert registrations == ["R1", "R2", "R3"]
    assert [json.loads(r.content)["pageNumber"] for r in naver.requests] == [1, 2, 3]
    assert len(naver2.requests) == 3


def test_observer_sees_every_call_and_cannot_break_one() -> None:
    seen: list[tuple[str, float, str | None]] = []

    def observer(name: str, elapsed: float, code: str | None) -> None:
        seen.append((name, elapsed, code))
        raise RuntimeError("metrics backend down")

    call = CALLS_BY_METHOD["approve_payment"]
    client, _ = make_client(ok(call.body), httpx.Response(200, json=envelope("Fail")),
                            httpx.ConnectError("refused"), observer=observer)

    call.invoke(client)
    for _ in range(2):
        with pytest.raises(Exception):  # noqa: B017 - the classes are tested elsewhere
            call.invoke(client)

    assert [(name, code) for name, _, code in seen] == [
        ("pay_approval", "Success"), ("pay_approval", "Fail"), ("pay_approval", None)]
    assert all(elapsed >= 0 for _, elapsed, _ in seen)


def test_client_is_a_context_manager_with_a_safe_repr() -> None:
    config = NaverPayConfig(client_secret=SECRET)
    with NaverPayClient(config, transport=httpx.MockTransport(lambda r: ok({}))) as client:
        text = repr(client)

    assert text == ("NaverPayClient(api_base='http://127.0.0.1:8055', "
                    "client_id='sandbox-client-id')")
    with pytest.raises(RuntimeError):
        client.cash_amount(payment_id="P")


# -- partner id: NAVER issues separate ones for one-time and recurrent payments ----------------

def test_onetime_apis_go_to_the_onetime_partner_id_and_recurrent_ones_do_not() -> None:
    apply, cancel, approve = (CALLS_BY_METHOD[m] for m in
                              ("apply_payment", "cancel_payment", "approve_payment"))
    client, naver = make_client(ok(apply.body), ok(cancel.body), ok(cancel.body), ok(approve.body),
                                onetime_partner_id="np_onetime")

    apply.invoke(client)
    cancel.invoke(client, onetime=True)
    cancel.invoke(client)  # a cancel of a recurrent payment
    approve.invoke(client)

    assert [str(r.url) for r in naver.requests] == [
        "https://naver.test/np_onetime/naverpay/payments/v2.2/apply/payment",
        "https://naver.test/np_onetime/naverpay/payments/v1/cancel",
        "https://naver.test/np_partner/naverpay/payments/v1/cancel",
        "https://naver.test/np_partner/naverpay/payments/recurrent/pay/v3/approval",
    ]


def test_without_a_onetime_partner_id_onetime_apis_use_the_partner_id() -> None:
    apply = CALLS_BY_METHOD["apply_payment"]
    client, naver = make_client(ok(apply.body))

    apply.invoke(client)

    assert str(naver.last.url) == "https://naver.test/np_partner/naverpay/payments/v2.2/apply/payment"
