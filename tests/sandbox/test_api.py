"""The NAVER APIs over HTTP, in-process (Starlette TestClient) with a hand-driven clock."""

from __future__ import annotations

import pytest

from tests.sandbox.conftest import HEADERS, Naver

PAY_FIELDS = {"recurrentId", "paymentId", "detail"}
DETAIL_FIELDS = {
    "paymentId", "payHistId", "merchantId", "merchantName", "merchantPayKey", "merchantUserKey",
    "productName", "admissionYmdt", "admissionTypeCode", "admissionState", "totalPayAmount",
    "primaryPayAmount", "npointPayAmount", "giftCardAmount", "discountPayAmount", "taxScopeAmount",
    "taxExScopeAmount", "primaryPayMeans", "cardCorpCode", "cardNo", "cardAuthNo", "cardInstCount",
    "settleExpected", "settleExpectAmount", "payCommissionAmount",
}


def test_reserve_and_approve_answer_navers_shapes(naver: Naver):
    recurrent_id = naver.registration()
    payment_id = naver.reserve(recurrent_id, 9900, "order-7", tax_free=900)
    reply = naver.approve(recurrent_id, payment_id)
    assert reply.status_code == 200 and reply.json()["code"] == "Success"
    body = reply.json()["body"]
    assert set(body) == PAY_FIELDS and DETAIL_FIELDS <= set(body["detail"])
    detail = body["detail"]
    assert (detail["merchantPayKey"], detail["totalPayAmount"], detail["taxExScopeAmount"]) == (
        "order-7", 9900, 900)
    assert (detail["admissionTypeCode"], detail["admissionState"]) == ("01", "SUCCESS")
    assert detail["admissionYmdt"] == "20261128090000" and "*" in detail["cardNo"]


@pytest.mark.parametrize("partner", ["naverpay-partner", "np_etlod545733", "tenbyten"])
def test_any_partner_id_segment_is_served(naver: Naver, partner):
    naver.partner = partner
    recurrent_id = naver.registration()
    assert naver.reserve(recurrent_id).startswith("20261128NP")


def test_form_fields_in_the_query_string(naver: Naver):
    recurrent_id = naver.registration()
    fields = {"recurrentId": recurrent_id, "totalPayAmount": "1000", "taxScopeAmount": "1000",
              "taxExScopeAmount": "0", "productName": "월간 구독", "merchantPayId": "q-1",
              "merchantUserId": "u"}
    reply = naver.call("recurrent/pay/v3/reserve", params=fields)
    assert reply.json()["code"] == "Success"
    payment_id = reply.json()["body"]["paymentId"]
    approval = naver.call("recurrent/pay/v3/approval",
                          params={"recurrentId": recurrent_id, "paymentId": payment_id})
    assert approval.json()["body"]["detail"]["productName"] == "월간 구독"


@pytest.mark.parametrize(("missing", "code"), [("merchantPayId", "RequireParameter"),
                                               ("productName", "RequireParameter")])
def test_reserve_requires_every_field(naver: Naver, missing, code):
    fields = {"recurrentId": naver.registration(), "totalPayAmount": 1000, "taxScopeAmount": 1000,
              "taxExScopeAmount": 0, "productName": "p", "merchantPayId": "m",
              "merchantUserId": "u"}
    del fields[missing]
    reply = naver.call("recurrent/pay/v3/reserve", fields)
    assert (reply.status_code, reply.json()["code"]) == (200, code)
    assert missing in reply.json()["message"]


@pytest.mark.parametrize(("change", "code"), [({"totalPayAmount": "9.5"}, "InvalidParameter"),
                                              ({"taxScopeAmount": 900}, "InvalidParameter"),
                                              ({"totalPayAmount": 5, "taxScopeAmount": 5},
                                               "InvalidParameter")])
def test_reserve_checks_amounts(naver: Naver, change, code):
    fields = {"recurrentId": naver.registration(), "totalPayAmount": 1000, "taxScopeAmount": 1000,
              "taxExScopeAmount": 0, "productName": "p", "merchantPayId": "m",
              "merchantUserId": "u", **change}
    assert naver.call("recurrent/pay/v3/reserve", fields).json()["code"] == code


def test_reserve_on_expired_registration_answers_the_configured_code(naver: Naver):
    recurrent_id = naver.registration()
    naver.control(f"registrations/{recurrent_id}/expire")
    reply = naver.call("recurrent/pay/v3/reserve", {
        "recurrentId": recurrent_id, "totalPayAmount": 1000, "taxScopeAmount": 1000,
        "taxExScopeAmount": 0, "productName": "p", "merchantPayId": "m", "merchantUserId": "u"})
    assert reply.json()["code"] == "Fail" and "해지" in reply.json()["message"]
    naver.control("config", {"expiredRegistrationCode": "InvalidParameter"})
    reply = naver.call("recurrent/pay/v3/reserve", {
        "recurrentId": "unknown", "totalPayAmount": 1000, "taxScopeAmount": 1000,
        "taxExScopeAmount": 0, "productName": "p", "merchantPayId": "m", "merchantUserId": "u"})
    assert reply.json()["code"] == "InvalidParameter"


def test_scripted_reserve_code(naver: Naver):
    recurrent_id = naver.registration(reserveCode="Fail")
    reply = naver.call("recurrent/pay/v3/reserve", {
        "recurrentId": recurrent_id, "totalPayAmount": 1000, "taxScopeAmount": 1000,
        "taxExScopeAmount": 0, "productName": "p", "merchantPayId": "m", "merchantUserId": "u"})
    assert reply.json()["code"] == "Fail"
    assert naver.ledger()["payments"] == []


def test_scripted_expire_code(naver: Naver):
    recurrent_id = naver.registration(expireCode="SomethingNew")
    fields = {"recurrentId": recurrent_id, "expireRequester": "2", "expireReason": "해지"}
    reply = naver.call("recurrent/expire/v1/request", fields)
    assert (reply.status_code, reply.json()["code"]) == (200, "SomethingNew")
    (registration,) = naver.ledger()["registrations"]
    assert registration["state"] == "VALID"


def test_duplicate_merchant_pay_id_existing_mode(naver: Naver):
    naver.control("config", {"duplicateMerchantPayId": "existing"})
    recurrent_id = naver.registration()
    assert naver.reserve(recurrent_id, merchant_pay_id="m") == naver.reserve(
        recurrent_id, merchant_pay_id="m")


def test_approval_errors_unknown_mismatch_time_expired(naver: Naver, clock):
    recurrent_id = naver.registration()
    assert naver.approve(recurrent_id, "20261128NP0000000000").json()["code"] == "InvalidPaymentId"
    payment_id = naver.reserve(recurrent_id)
    assert naver.approve(naver.registration(), payment_id).json()["code"] == "InvalidParameter"
    clock.tick(601)
    assert naver.approve(recurrent_id, payment_id).json()["code"] == "TimeExpired"
    assert naver.ledger()["payments"][0]["state"] == "EXPIRED"


def test_reserve_window_is_configurable_at_run_time(naver: Naver, clock):
    naver.control("config", {"reserveWindowSeconds": 2})
    recurrent_id = naver.registration()
    payment_id = naver.reserve(recurrent_id)
    clock.tick(3)
    assert naver.approve(recurrent_id, payment_id).json()["code"] == "TimeExpired"


def test_already_complete_has_no_detail(naver: Naver):
    recurrent_id = naver.registration()
    payment_id = naver.reserve(recurrent_id)
    naver.approve(recurrent_id, payment_id, key="k-1")
    again = naver.approve(recurrent_id, payment_id, key="k-2")
    assert again.status_code == 200 and again.json()["code"] == "AlreadyComplete"
    assert "body" not in again.json()
    assert naver.ledger()["payments"][0]["approvalRequests"] == 2


def test_scripted_decline_is_final_and_in_history(naver: Naver):
    recurrent_id = naver.registration(declineCode="NotEnoughAccountBalance", declineTimes=1)
    first = naver.reserve(recurrent_id, merchant_pay_id="m-1")
    assert naver.approve(recurrent_id, first).json()["code"] == "NotEnoughAccountBalance"
    assert naver.approve(recurrent_id, first).json()["code"] == "Fail"
    row = naver.history(first).json()["body"]["list"][0]
    assert (row["admissionTypeCode"], row["admissionState"]) == ("01", "FAIL")
    second = naver.reserve(recurrent_id, merchant_pay_id="m-1")
    assert naver.approve(recurrent_id, second).json()["code"] == "Success"
    states = [p["state"] for p in naver.ledger()["payments"]]
    assert states == ["DECLINED", "APPROVED"]
    assert naver.ledger()["payments"][0]["declineCode"] == "NotEnoughAccountBalance"


def test_scripted_server_errors_charge_nothing_and_are_not_stored(naver: Naver):
    recurrent_id = naver.registration(serverErrorTimes=1, serverErrorStatus=503)
    payment_id = naver.reserve(recurrent_id)
    first = naver.approve(recurrent_id, payment_id, key="same")
    assert first.status_code == 503 and naver.ledger()["payments"][0]["state"] == "RESERVED"
    retry = naver.approve(recurrent_id, payment_id, key="same")
    assert retry.status_code == 200 and retry.json()["code"] == "Success"


def test_store_non_final_replays_a_server_error(naver: Naver):
    naver.control("config", {"storeNonFinal": True})
    recurrent_id = naver.registration(serverErrorTimes=1)
    payment_id = naver.reserve(recurrent_id)
    assert naver.approve(recurrent_id, payment_id, key="same").status_code == 500
    replay = naver.approve(recurrent_id, payment_id, key="same")
    assert replay.status_code == 409 and replay.json()["code"] == "ServerError"


def test_idempotent_repeat_is_409_with_the_first_body_and_echoed_key(naver: Naver):
    recurrent_id = naver.registration()
    payment_id = naver.reserve(recurrent_id)
    first = naver.approve(recurrent_id, payment_id, key="key-A")
    again = naver.approve(recurrent_id, payment_id, key="key-A")
    assert first.status_code == 200 and again.status_code == 409
    assert again.content == first.content
    assert again.headers["X-NaverPay-Idempotency-Key"] == "key-A"
    assert first.headers["X-NaverPay-Idempotency-Key"] == "key-A"


def test_idempotency_is_per_client_id(naver: Naver):
    recurrent_id = naver.registration()
    first = naver.reserve(recurrent_id, merchant_pay_id="a")
    second = naver.reserve(recurrent_id, merchant_pay_id="b")
    assert naver.approve(recurrent_id, first, key="shared").status_code == 200
    naver.control("config", {"clientId": "other"})
    reply = naver.approve(recurrent_id, second, key="shared",
                          headers={"X-Naver-Client-Id": "other"})
    assert reply.status_code == 200 and reply.json()["body"]["paymentId"] == second


def test_a_key_over_64_characters_is_invalid(naver: Naver):
    reply = naver.approve(naver.registration(), "x", key="k" * 65)
    assert (reply.status_code, reply.json()["code"]) == (200, "InvalidParameter")


def test_bad_credentials_401_or_invalid_merchant(naver: Naver):
    reply = naver.call("recurrent/v1/list", json={"recurrentId": "x"},
                       headers={"X-Naver-Client-Secret": "wrong"})
    assert reply.status_code == 401 and reply.json()["code"] == "InvalidMerchant"
    naver.control("config", {"badCredentials": "InvalidMerchant"})
    reply = naver.call("recurrent/v1/list", json={"recurrentId": "x"},
                       headers={"X-Naver-Client-Id": "wrong"})
    assert (reply.status_code, reply.json()["code"]) == (200, "InvalidMerchant")


@pytest.mark.parametrize("chain", ["sandbox-chain-id", "sandbox-recurrent-chain-id"])
def test_both_default_chain_ids_are_accepted(naver: Naver, chain):
    reply = naver.call("recurrent/v1/list", json={"recurrentId": "x"},
                       headers={"X-NaverPay-Chain-Id": chain})
    assert reply.json()["code"] == "Success"


def test_unknown_chain_id_is_invalid_merchant_and_a_missing_one_only_when_required(naver: Naver):
    reply = naver.call("recurrent/v1/list", json={"recurrentId": "x"},
                       headers={"X-NaverPay-Chain-Id": "someone-else"})
    assert (reply.status_code, reply.json()["code"]) == (200, "InvalidMerchant")
    bare = {k: v for k, v in HEADERS.items() if k != "X-NaverPay-Chain-Id"}
    url = "/naverpay-partner/naverpay/payments/recurrent/v1/list"
    assert naver.http.post(url, json={"recurrentId": "x"}, headers=bare).json()["code"] == "Success"
    naver.control("config", {"requireChainId": True})
    refused = naver.http.post(url, json={"recurrentId": "x"}, headers=bare)
    assert (refused.status_code, refused.json()["code"]) == (200, "InvalidMerchant")


@pytest.mark.parametrize(("mode", "status"), [("503", 503), ("MaintenanceOngoing", 200)])
def test_maintenance_switch(naver: Naver, mode, status):
    naver.control("config", {"maintenance": mode})
    reply = naver.call("recurrent/v1/list", json={"recurrentId": "x"}, key="m-key")
    assert (reply.status_code, reply.json()["code"]) == (status, "MaintenanceOngoing")
    naver.control("config", {"maintenance": "off"})
    assert naver.call("recurrent/v1/list", json={"recurrentId": "x"}).json()["code"] == "Success"


def test_unknown_api_path_is_404(naver: Naver):
    reply = naver.call("v9/unknown")
    assert reply.status_code == 404 and reply.json()["code"] == "NotFound"


def test_extra_response_fields_switch(naver: Naver):
    naver.control("config", {"extraResponseFields": True})
    reply = naver.call("recurrent/v1/list", json={"recurrentId": "x"})
    assert "sandboxExtraMember" in reply.json() and "sandboxExtraField" in reply.json()["body"]


@pytest.mark.parametrize(("store_non_final", "retry_status"), [(False, 200), (True, 409)])
def test_maintenance_answers_are_stored_only_with_store_non_final(naver: Naver, store_non_final,
                                                                 retry_status):
    recurrent_id = naver.registration()
    payment_id = naver.reserve(recurrent_id)
    naver.control("config", {"maintenance": "MaintenanceOngoing",
                             "storeNonFinal": store_non_final})
    assert naver.approve(recurrent_id, payment_id, key="m").json()["code"] == "MaintenanceOngoing"
    naver.control("config", {"maintenance": "off"})
    retry = naver.approve(recurrent_id, payment_id, key="m")
    assert retry.status_code == retry_status
    expected = "MaintenanceOngoing" if store_non_final else "Success"
    assert retry.json()["code"] == expected


def test_a_global_5xx_fault_releases_the_key(naver: Naver):
    recurrent_id = naver.registration()
    payment_id = naver.reserve(recurrent_id)
    naver.control("faults", {"errorRate": 1.0, "seed": 3})
    assert naver.approve(recurrent_id, payment_id, key="f").status_code == 500
    naver.control("faults", {})
    assert naver.approve(recurrent_id, payment_id, key="f").json()["code"] == "Success"
    assert naver.ledger()["payments"][0]["approvalRequests"] == 1
