"""The merchant's contract decides which after-sale calls NAVER accepts (issue 9).

Purchase confirm (거래완료): only when settlement or points are on 거래완료, only for an approved
payment, once (a new key after that is AlreadyComplete; the same key replays). Point accrual
(포인트 적립): only for payment-date settlement with manual accrual, once.
"""

from __future__ import annotations

import pytest

from tests.sandbox.conftest import Naver


def confirm(naver: Naver, payment_id: str, key: str | None = None) -> dict:
    return naver.call("v1/purchase-confirm", {"paymentId": payment_id, "requester": "2"},
                      key=key).json()


def accrue(naver: Naver, payment_id: str, key: str | None = None) -> dict:
    return naver.call("v1/naverpoint-save", {"paymentId": payment_id}, key=key).json()


def test_by_default_neither_call_is_part_of_the_contract(naver: Naver):
    payment_id = naver.charged(1100)

    assert confirm(naver, payment_id)["code"] == "InvalidMerchantType"
    assert accrue(naver, payment_id)["code"] == "InvalidMerchantType"
    assert naver.ledger()["payments"][0]["tradeConfirmYmdt"] is None


@pytest.mark.parametrize("basis", [{"settlementBasis": "trade_confirm"},
                                   {"pointBasis": "trade_confirm"}])
def test_purchase_confirm_once_per_approved_payment(naver: Naver, basis: dict):
    naver.control("config", basis)
    payment_id = naver.charged(1100)

    first = confirm(naver, payment_id, key="confirm-1")
    replay = naver.call("v1/purchase-confirm", {"paymentId": payment_id, "requester": "2"},
                        key="confirm-1")
    again = confirm(naver, payment_id, key="confirm-2")

    assert first["code"] == "Success" and first["body"]["confirmTime"]
    assert replay.status_code == 409 and replay.json() == first
    assert again["code"] == "AlreadyComplete"
    (payment,) = naver.ledger()["payments"]
    assert payment["confirmRequests"] == 1 and payment["tradeConfirmYmdt"]
    # Points on 거래완료 accrue with the confirmation itself.
    assert payment["pointSaved"] is (basis.get("pointBasis") == "trade_confirm")


def test_purchase_confirm_needs_an_approved_payment(naver: Naver):
    naver.control("config", {"settlementBasis": "trade_confirm"})
    recurrent_id = naver.registration()
    reserved = naver.reserve(recurrent_id, 1100)

    assert confirm(naver, reserved)["code"] == "InvalidPaymentId"
    assert confirm(naver, "20261128NP9999999999")["code"] == "InvalidPaymentId"


def test_point_accrual_only_for_payment_date_settlement_with_manual_points(naver: Naver):
    payment_id = naver.charged(1100)
    naver.control("config", {"settlementBasis": "trade_confirm", "pointBasis": "manual"})
    assert accrue(naver, payment_id)["code"] == "InvalidMerchantType"
    naver.control("config", {"settlementBasis": "payment_date"})

    first = accrue(naver, payment_id, key="points-1")
    again = accrue(naver, payment_id, key="points-2")

    assert first["code"] == "Success" and first["body"] == {"paymentId": payment_id}
    assert again["code"] == "AlreadyComplete"
    (payment,) = naver.ledger()["payments"]
    assert payment["accrualRequests"] == 1 and payment["pointSaved"] is True
    assert confirm(naver, payment_id)["code"] == "InvalidMerchantType"


def test_bad_basis_is_refused_by_name(naver: Naver):
    reply = naver.http.post("/_sandbox/config", json={"settlementBasis": "weekly"})

    assert reply.status_code == 400 and "settlementBasis" in reply.json()["error"]


def test_customer_ends_a_backdated_registration_and_the_list_shows_it(naver: Naver):
    old = naver.control("registrations", {"merchantUserId": "u", "productCode": "P",
                                          "productName": "n", "registYmdt": "20260901100000"})
    recurrent_id = old["recurrentId"]
    naver.control(f"registrations/{recurrent_id}/expire", {"expireReason": "고객 해지"})

    listed = naver.call("recurrent/v1/list", json={
        "startTime": "20260901000000", "endTime": "20261001000000", "state": "EXPIRED"}).json()

    (row,) = listed["body"]["list"]
    assert row["recurrentId"] == recurrent_id and row["recurrentState"] == "EXPIRED"
    assert row["expireYmdt"]
    bad = naver.http.post("/_sandbox/registrations", json={"registYmdt": "yesterday"})
    assert bad.status_code == 400


def test_faults_can_target_one_api(naver: Naver):
    recurrent_id = naver.registration()
    naver.control("faults", {"errorRate": 1.0, "errorStatus": 503, "apis": ["recurrent/v1/list"]})

    listed = naver.call("recurrent/v1/list", json={"recurrentId": recurrent_id})
    reserved = naver.reserve(recurrent_id, 1100)

    assert listed.status_code == 503 and reserved
    assert naver.http.get("/_sandbox/faults").json()["apis"] == ["recurrent/v1/list"]
    assert naver.http.post("/_sandbox/faults", json={"apis": "all"}).status_code == 400
