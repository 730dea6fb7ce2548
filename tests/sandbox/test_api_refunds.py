"""Cancel, history, confirm, points and receipts over HTTP (in-process, hand-driven clock)."""

from __future__ import annotations

import pytest

from tests.sandbox.conftest import Naver


def test_cancel_answer_fields_and_history_rows(naver: Naver):
    payment_id = naver.charged(1000)
    reply = naver.cancel(payment_id, 300, merchantPayTransactionKey="refund-1")
    body = reply.json()["body"]
    assert reply.json()["code"] == "Success"
    assert (body["primaryPayCancelAmount"], body["primaryPayRestAmount"],
            body["totalRestAmount"], body["npointRestAmount"]) == (300, 700, 700, 0)
    assert body["payHistId"] and body["cancelYmdt"] == "20261128090000"
    rows = naver.history(payment_id).json()["body"]["list"]
    assert [(r["admissionTypeCode"], r["totalPayAmount"]) for r in rows] == [("01", 1000),
                                                                            ("04", 300)]
    assert rows[1]["merchantPayTransactionKey"] == "refund-1" and "settleInfo" in rows[1]


def test_full_single_cancel_is_03_and_then_already_canceled(naver: Naver):
    payment_id = naver.charged(1000)
    assert naver.cancel(payment_id, 1000).json()["code"] == "Success"
    rows = naver.history(payment_id).json()["body"]["list"]
    assert rows[-1]["admissionTypeCode"] == "03"
    again = naver.cancel(payment_id, 1000, doCompareRest="1", expectedRestAmount="5")
    assert again.json()["code"] == "AlreadyCanceled" and "body" not in again.json()


@pytest.mark.parametrize(("amount", "extra", "code"), [
    (1500, {}, "OverRemainAmount"),
    (500, {"taxScopeAmount": 100}, "TaxScopeAmountError"),
    (500, {"doCompareRest": "1", "expectedRestAmount": "400"}, "RestAmountDiff"),
    (500, {"cancelAmount": "abc"}, "InvalidParameter"),
    (500, {"cancelReason": ""}, "RequireParameter"),
    (500, {"doCompareRest": "1"}, "RequireParameter"),
])
def test_cancel_refusals(naver: Naver, amount, extra, code):
    payment_id = naver.charged(1000)
    reply = naver.cancel(payment_id, amount, **extra)
    assert (reply.status_code, reply.json()["code"]) == (200, code)
    if code == "RestAmountDiff":
        assert reply.json()["body"]["totalRestAmount"] == 1000


def test_tax_part_greater_than_remaining_tax_part(naver: Naver):
    payment_id = naver.charged(1000, tax_free=100)
    reply = naver.cancel(payment_id, 200, tax_free=200)
    assert reply.json()["code"] == "TaxScopeAmtGreaterThanRemainError"


def test_cancel_of_unknown_or_uncharged_payment(naver: Naver):
    assert naver.cancel("20261128NP0000000000", 100).json()["code"] == "InvalidPaymentId"
    reserved = naver.reserve(naver.registration())
    assert naver.cancel(reserved, 100).json()["code"] == "InvalidPaymentId"


def test_cancel_deadline_is_configurable(naver: Naver, clock):
    naver.control("config", {"cancelDeadlineDays": 7})
    payment_id = naver.charged(1000)
    clock.tick(8 * 86400)
    assert naver.cancel(payment_id, 100).json()["code"] == "CancelDeadlineExpired"


def test_cancel_not_complete_then_completes_by_itself(naver: Naver, clock):
    naver.control("config", {"cancelNotCompleteNext": 1, "cancelNotCompleteSeconds": 5})
    payment_id = naver.charged(1000)
    reply = naver.cancel(payment_id, 400, key="c-1")
    assert reply.json()["code"] == "CancelNotComplete" and reply.json()["body"]["payHistId"] == ""
    assert naver.cancel(payment_id, 100).json()["code"] == "PreCancelNotComplete"
    assert naver.cancel(payment_id, 400, key="c-1").status_code == 409  # same key: replay
    assert naver.ledger()["payments"][0]["state"] == "CANCEL_PENDING"
    clock.tick(5)
    rows = naver.history(payment_id).json()["body"]["list"]
    assert [r["admissionTypeCode"] for r in rows] == ["01", "04"] and rows[1]["payHistId"]
    payment = naver.ledger()["payments"][0]
    assert (payment["state"], payment["restAmount"]) == ("PARTIALLY_CANCELLED", 600)
    assert naver.http.get("/_sandbox/config").json()["cancelNotCompleteNext"] == 0


def test_history_of_unknown_or_unapproved_payment(naver: Naver):
    for payment_id in ("20261128NP0000000000", naver.reserve(naver.registration())):
        reply = naver.history(payment_id)
        assert reply.status_code == 200
        assert reply.json()["code"] == "InvalidPaymentId"
        assert reply.json()["body"] == {"list": [], "totalCount": 0}


def test_history_v23_paths(naver: Naver):
    payment_id = naver.charged(1000)
    naver.cancel(payment_id, 100)
    by_path = naver.call(f"v2.3/list/history/{payment_id}", json={"rowsPerPage": 1,
                                                                   "pageNumber": 2})
    body = by_path.json()["body"]
    assert [r["admissionTypeCode"] for r in body["list"]] == ["04"]
    assert (body["totalCount"], body["totalPageCount"], body["currentPageNumber"]) == (2, 2, 2)
    window = naver.call("v2.3/list/history", json={"startTime": "20261128000000",
                                                   "endTime": "20261128235959"})
    assert window.json()["body"]["totalCount"] == 2


def test_history_window_paging_type_and_31_days(naver: Naver, clock):
    for n in range(5):
        payment_id = naver.charged(1000 + n)
        clock.tick(60)
    naver.cancel(payment_id, 10)
    query = {"startTime": "20261128000000", "endTime": "20261128235959", "rowsPerPage": 2}
    page3 = naver.call("v2.2/list/history", json={**query, "pageNumber": 3}).json()["body"]
    assert (page3["totalCount"], page3["responseCount"], page3["totalPageCount"]) == (6, 2, 3)
    cancels = naver.call("v2.2/list/history", json={**query, "approvalType": "CANCEL"}).json()
    assert [r["totalPayAmount"] for r in cancels["body"]["list"]] == [10]
    too_long = naver.call("v2.2/list/history", json={"startTime": "20261001000000",
                                                     "endTime": "20261128000000"})
    assert too_long.json()["code"] == "TimeConditionError"
    assert naver.call("v2.2/list/history", json={}).json()["code"] == "RequireCondition"


def test_purchase_confirm_points_and_cash_receipts(naver: Naver):
    payment_id = naver.charged(1100)
    naver.control("config", {"settlementBasis": "trade_confirm"})  # confirm is in the contract
    confirm = naver.call("v1/purchase-confirm", {"paymentId": payment_id, "requester": "2"})
    assert confirm.json()["body"]["confirmTime"] == "20261128090000"
    row = naver.history(payment_id).json()["body"]["list"][0]
    assert row["settleInfo"]["settleCreated"] is True
    naver.control("config", {"settlementBasis": "payment_date", "pointBasis": "manual"})
    assert naver.call("v1/naverpoint-save", {"paymentId": payment_id}).json()["body"] == {
        "paymentId": payment_id}
    card = naver.call("v1/receipt/cash-amount", {"paymentId": payment_id}).json()["body"]
    assert card == {"totalCashAmount": 0, "supplyCashAmount": 0, "vatCashAmount": 0}
    naver.control("config", {"naverpointSave": False})
    refused = naver.call("v1/naverpoint-save", {"paymentId": payment_id})
    assert refused.json()["code"] == "InvalidMerchantType"


def test_cash_amount_of_a_bank_payment_v2_json(naver: Naver):
    recurrent_id = naver.registration(payMeans="BANK")
    payment_id = naver.reserve(recurrent_id, 1100)
    detail = naver.approve(recurrent_id, payment_id).json()["body"]["detail"]
    assert detail["primaryPayMeans"] == "BANK" and detail["bankAccountNo"]
    cash = naver.call("v2/receipt/cash-amount", json={"paymentId": payment_id}).json()["body"]
    assert cash == {"totalCashAmount": 1100, "supplyCashAmount": 1000, "vatCashAmount": 100}


def test_one_time_payment_apply_and_window(naver: Naver, clock):
    created = naver.control("onetime-payments", {
        "merchantPayKey": "order-9", "productName": "상품", "totalPayAmount": 5000,
        "taxScopeAmount": 5000, "taxExScopeAmount": 0, "merchantUserKey": "u"})
    reply = naver.call("v2.2/apply/payment", {"paymentId": created["paymentId"]})
    assert reply.json()["code"] == "Success"
    assert reply.json()["body"]["detail"]["merchantPayKey"] == "order-9"
    late = naver.control("onetime-payments", {"totalPayAmount": 5000})
    clock.tick(601)
    expired = naver.call("v2.2/apply/payment", {"paymentId": late["paymentId"]})
    assert expired.json()["code"] == "TimeExpired"
