"""Registration APIs and the /_sandbox control API (in-process, hand-driven clock)."""

from __future__ import annotations

import pytest

from tests.sandbox.conftest import Naver


def _register(naver: Naver, action: str = "NEW", target: str | None = None) -> dict:
    fields = {"actionType": action, "productCode": "PLAN-M", "productName": "월간 구독",
              "totalPayAmount": 9900, "returnUrl": "https://shop.example/return"}
    if target:
        fields["targetRecurrentId"] = target
    reserve_id = naver.call("recurrent/regist/v1/reserve", fields).json()["body"]["reserveId"]
    temp = naver.control(f"registrations/{reserve_id}/authorize", {"merchantUserId": "u-7"})
    reply = naver.call("recurrent/regist/v1/approval",
                       {"reserveId": reserve_id, "tempReceiptId": temp["tempReceiptId"]})
    assert reply.json()["code"] == "Success", reply.text
    return reply.json()["body"]


def test_registration_through_the_page_flow_then_change(naver: Naver):
    first = _register(naver)
    assert first["actionType"] == "NEW" and "preRecurrentId" not in first
    second = _register(naver, "CHANGE", first["recurrentId"])
    assert second["preRecurrentId"] == first["recurrentId"]
    states = {r["recurrentId"]: r["state"] for r in naver.ledger()["registrations"]}
    assert states == {first["recurrentId"]: "EXPIRED", second["recurrentId"]: "VALID"}
    assert naver.ledger()["registrations"][1]["merchantUserId"] == "u-7"


def test_registration_approval_before_authorize_fails(naver: Naver):
    reserve_id = naver.call("recurrent/regist/v1/reserve", {
        "actionType": "NEW", "productCode": "P", "productName": "n", "totalPayAmount": 1,
        "returnUrl": "https://x"}).json()["body"]["reserveId"]
    reply = naver.call("recurrent/regist/v1/approval",
                       {"reserveId": reserve_id, "tempReceiptId": "20261128TP1"})
    assert reply.json()["code"] == "Fail"
    assert naver.http.post("/_sandbox/registrations/nope/authorize").status_code == 404


def test_expire_api_and_list(naver: Naver, clock):
    kept = naver.registration()
    clock.tick(60)
    ended = naver.registration()
    reply = naver.call("recurrent/expire/v1/request", {
        "recurrentId": ended, "expireRequester": "2", "expireReason": "연체"})
    assert reply.json()["body"] == {"recurrentId": ended}
    window = {"startTime": "20261128000000", "endTime": "20261128235959"}
    valid = naver.call("recurrent/v1/list", json={**window, "state": "VALID"}).json()["body"]
    assert [r["recurrentId"] for r in valid["list"]] == [kept]
    assert valid["list"][0]["recurrentState"] == "VALID"
    page = naver.call("recurrent/v1/list", json={**window, "rowsPerPage": 1, "pageNumber": 2})
    body = page.json()["body"]
    assert (body["list"][0]["recurrentId"], body["totalPageCount"]) == (ended, 2)
    assert body["list"][0]["expireYmdt"] == "20261128090100"
    one = naver.call("recurrent/v1/list", json={"recurrentId": kept}).json()["body"]
    assert one["totalCount"] == 1
    too_long = naver.call("recurrent/v1/list", json={"startTime": "20261001000000",
                                                     "endTime": "20261128000000"})
    assert too_long.json()["code"] == "TimeConditionError"


def test_health_and_reset_forget_everything(naver: Naver):
    assert naver.http.get("/_sandbox/health").json() == {"ok": True}
    recurrent_id = naver.registration()
    payment_id = naver.reserve(recurrent_id)
    naver.approve(recurrent_id, payment_id, key="k")
    naver.control("config", {"minAmount": 500})
    naver.control("faults", {"latencyMs": 1})
    naver.control("clock", {"advanceSeconds": 60})
    naver.control("reset")
    assert naver.ledger() == {"payments": [], "registrations": []}
    assert naver.http.get("/_sandbox/config").json()["minAmount"] == 10
    assert naver.http.get("/_sandbox/faults").json()["latencyMs"] == 0
    assert naver.http.get("/_sandbox/clock").json()["offsetSeconds"] == 0
    recurrent_id = naver.registration()
    new_payment = naver.reserve(recurrent_id)
    assert new_payment != payment_id  # ids never repeat within a process
    assert naver.approve(recurrent_id, new_payment, key="k").status_code == 200


def test_config_rejects_bad_values_with_400(naver: Naver):
    reply = naver.http.post("/_sandbox/config", json={"duplicateMerchantPayId": "maybe"})
    assert reply.status_code == 400 and "duplicateMerchantPayId" in reply.json()["error"]
    assert naver.http.post("/_sandbox/config", json={"unknown": 1}).status_code == 400
    assert naver.http.post("/_sandbox/config", content=b"[1]").status_code == 400
    shown = naver.control("config", {"minAmount": 100})
    assert shown["minAmount"] == 100 and shown["duplicateMerchantPayId"] == "accept"


def test_faults_error_rate_spares_the_control_api(naver: Naver):
    naver.control("faults", {"errorRate": 1.0, "errorStatus": 503, "seed": 1})
    reply = naver.call("recurrent/v1/list", json={"recurrentId": "x"})
    assert reply.status_code == 503
    assert naver.http.get("/_sandbox/health").status_code == 200
    assert naver.control("faults", {}) == {"latencyMs": 0, "errorRate": 0.0, "errorStatus": 500,
                                           "maintenanceRate": 0.0, "seed": None, "apis": []}
    assert naver.call("recurrent/v1/list", json={"recurrentId": "x"}).status_code == 200


def test_faults_maintenance_rate_is_seeded(naver: Naver):
    def run() -> list[str]:
        naver.control("faults", {"maintenanceRate": 0.5, "seed": 42})
        return [naver.call("recurrent/v1/list", json={"recurrentId": "x"}).json()["code"]
                for _ in range(20)]
    first = run()
    assert first == run() and {"MaintenanceOngoing", "Success"} == set(first)
    assert naver.http.post("/_sandbox/faults", json={"errorRate": 3}).status_code == 400


def test_clock_advance_moves_windows(naver: Naver):
    recurrent_id = naver.registration()
    payment_id = naver.reserve(recurrent_id)
    shown = naver.control("clock", {"advanceSeconds": 601})
    assert shown == {"now": "20261128091001", "offsetSeconds": 601.0}
    assert naver.approve(recurrent_id, payment_id).json()["code"] == "TimeExpired"
    assert naver.http.post("/_sandbox/clock", json={"advanceSeconds": "x"}).status_code == 400


def test_ledger_filters_by_recurrent_id(naver: Naver):
    mine, other = naver.registration(), naver.registration()
    naver.reserve(mine, merchant_pay_id="a")
    naver.reserve(other, merchant_pay_id="b")
    view = naver.ledger(recurrentId=mine)
    assert [p["merchantPayId"] for p in view["payments"]] == ["a"]
    assert [r["recurrentId"] for r in view["registrations"]] == [mine]
    entry = view["payments"][0]
    assert {"reservedAt", "approvedAt", "approvalRequests", "restAmount", "cancels",
            "declineCode", "taxScopeAmount", "taxExScopeAmount"} <= set(entry)


def test_registrations_control_validation(naver: Naver):
    made = naver.control("registrations", {"recurrentId": "20261128RE1003007926ZStYYU"})
    assert made == {"recurrentId": "20261128RE1003007926ZStYYU"}
    again = naver.http.post("/_sandbox/registrations",
                            json={"recurrentId": "20261128RE1003007926ZStYYU"})
    assert again.status_code == 400
    bad = naver.http.post("/_sandbox/registrations", json={"behaviour": {"declineTimes": -1}})
    assert bad.status_code == 400 and "declineTimes" in bad.json()["error"]


def test_behaviour_can_be_replaced_and_registration_expired_by_the_user(naver: Naver):
    recurrent_id = naver.registration()
    shown = naver.control(f"registrations/{recurrent_id}/behaviour",
                          {"declineCode": "OwnerAuthFail"})
    assert shown["behaviour"]["declineCode"] == "OwnerAuthFail"
    payment_id = naver.reserve(recurrent_id)
    assert naver.approve(recurrent_id, payment_id).json()["code"] == "OwnerAuthFail"
    ended = naver.control(f"registrations/{recurrent_id}/expire")
    assert ended["state"] == "EXPIRED"
    assert naver.ledger()["registrations"][0]["expireRequester"] == "1"
    assert naver.http.post("/_sandbox/registrations/nope/expire").status_code == 404


@pytest.mark.parametrize("body", [{"totalPayAmount": -1}, {}, {"totalPayAmount": 100,
                                                              "taxExScopeAmount": 200},
                                  {"totalPayAmount": 5}])
def test_onetime_payment_control_validation(naver: Naver, body):
    assert naver.http.post("/_sandbox/onetime-payments", json=body).status_code == 400


def test_authorize_accepts_reserve_ids_with_base64_slashes(naver: Naver):
    reserve_id = naver.call("recurrent/regist/v1/reserve", {
        "actionType": "NEW", "productCode": "P", "productName": "n", "totalPayAmount": 1,
        "returnUrl": "https://x"}).json()["body"]["reserveId"]
    book = naver.http.app.state.runtime.state.registrations  # type: ignore[attr-defined]
    odd = "20261128dS/tTa2+dDR0VGSHV0=="
    book.reservations[odd] = book.reservations.pop(reserve_id)
    book.reservations[odd].reserve_id = odd
    temp = naver.control(f"registrations/{odd}/authorize")["tempReceiptId"]
    reply = naver.call("recurrent/regist/v1/approval", {"reserveId": odd, "tempReceiptId": temp})
    assert reply.json()["code"] == "Success"
