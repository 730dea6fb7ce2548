"""NAVER Pay's registration window as the sandbox plays it, and the SDK shim that opens it."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tests.sandbox.conftest import FakeClock, Naver

RETURN_URL = "http://shop.example/registrations/return?state=abc.def.ghi"


def _open(naver: Naver, **fields: Any) -> Any:
    data = {"clientId": "sandbox-client-id", "actionType": "NEW", "productCode": "PLAN-M",
            "productName": "월간 구독", "totalPayAmount": "9900", "returnUrl": RETURN_URL,
            "openType": "page", **fields}
    return naver.http.post("/window/recurrent/regist", data=data, follow_redirects=False)


def _reserve_id(naver: Naver, **fields: Any) -> str:
    opened = _open(naver, **fields)
    assert opened.status_code == 303, opened.text
    return dict(parse_qsl(urlsplit(opened.headers["location"]).query))["reserveId"]


def _decide(naver: Naver, reserve_id: str, decision: str = "confirm", means: str = "CARD") -> Any:
    return naver.http.post("/window/recurrent/regist/decide", follow_redirects=False, data={
        "reserveId": reserve_id, "decision": decision, "means": means, "openType": "page"})


def _returned(answer: Any) -> tuple[str, dict[str, str]]:
    assert answer.status_code == 303, answer.text
    parts = urlsplit(answer.headers["location"])
    return f"{parts.scheme}://{parts.netloc}{parts.path}", dict(parse_qsl(parts.query))


def test_the_sdk_shim_is_served_at_naver_s_path(naver: Naver) -> None:
    sdk = naver.http.get("/sdk/js/naverpay.min.js")

    assert sdk.status_code == 200 and sdk.headers["content-type"].startswith("application/javascript")
    assert "Naver.Pay = { create: create }" in sdk.text and "/window/recurrent/regist" in sdk.text


def test_the_window_shows_what_is_registered(naver: Naver) -> None:
    opened = naver.http.post("/window/recurrent/regist", follow_redirects=True, data={
        "clientId": "sandbox-client-id", "actionType": "NEW", "productCode": "PLAN-M",
        "productName": "월간 <구독>", "totalPayAmount": "9900", "returnUrl": RETURN_URL})

    assert opened.status_code == 200
    assert "정기결제 결제수단 등록" in opened.text and "9,900원" in opened.text
    assert "월간 &lt;구독&gt;" in opened.text  # escaped


def test_confirm_returns_to_the_merchant_with_a_temp_receipt_id_naver_approves(naver: Naver) -> None:
    reserve_id = _reserve_id(naver)

    url, result = _returned(_decide(naver, reserve_id, means="BANK"))

    assert url == "http://shop.example/registrations/return"
    assert result["state"] == "abc.def.ghi"  # the merchant's own query string is kept
    assert result["resultCode"] == "Success" and result["reserveId"] == reserve_id
    approval = naver.call("recurrent/regist/v1/approval",
                          {"reserveId": reserve_id, "tempReceiptId": result["tempReceiptId"]}).json()
    assert approval["code"] == "Success" and approval["body"]["actionType"] == "NEW"
    [row] = naver.ledger()["registrations"]
    assert row["behaviour"]["payMeans"] == "BANK"


def test_cancel_returns_user_cancel_and_no_approval_completes_it(naver: Naver) -> None:
    reserve_id = _reserve_id(naver)

    _, result = _returned(_decide(naver, reserve_id, decision="cancel"))

    assert result == {"state": "abc.def.ghi", "resultCode": "Fail", "resultMessage": "userCancel",
                      "reserveId": reserve_id}
    approval = naver.call("recurrent/regist/v1/approval",
                          {"reserveId": reserve_id, "tempReceiptId": "anything"}).json()
    assert approval["code"] == "Fail"
    assert _decide(naver, reserve_id).status_code == 409  # the window is closed


def test_a_means_not_in_the_customer_s_name_returns_owner_auth_fail(naver: Naver) -> None:
    _, result = _returned(_decide(naver, _reserve_id(naver), means="OTHER_OWNER"))

    assert (result["resultCode"], result["resultMessage"]) == ("Fail", "OwnerAuthFail")


def test_a_window_left_open_too_long_returns_payment_time_expire(naver: Naver, clock: FakeClock) -> None:
    reserve_id = _reserve_id(naver)
    clock.tick(601)

    _, result = _returned(_decide(naver, reserve_id))

    assert (result["resultCode"], result["resultMessage"]) == ("Fail", "paymentTimeExpire")


def test_change_replaces_the_target_which_naver_expires_itself(naver: Naver) -> None:
    old = naver.registration()
    reserve_id = _reserve_id(naver, actionType="CHANGE", targetRecurrentId=old)
    _, result = _returned(_decide(naver, reserve_id))

    body = naver.call("recurrent/regist/v1/approval",
                      {"reserveId": reserve_id, "tempReceiptId": result["tempReceiptId"]}).json()["body"]

    assert body["preRecurrentId"] == old and body["recurrentId"] != old
    states = {r["recurrentId"]: (r["state"], r["expireCalls"]) for r in naver.ledger()["registrations"]}
    assert states == {old: ("EXPIRED", 0), body["recurrentId"]: ("VALID", 0)}


def test_a_wrong_client_id_or_missing_parameter_is_shown_not_reserved(naver: Naver) -> None:
    wrong = _open(naver, clientId="someone-else")
    missing = _open(naver, returnUrl="")
    not_absolute = _open(naver, returnUrl="/relative")

    assert wrong.status_code == 400 and "clientId" in wrong.text
    assert missing.status_code == 400 and "returnUrl" in missing.text
    assert not_absolute.status_code == 400
    assert naver.ledger()["registrations"] == []


def test_a_popup_window_sends_its_opener_to_return_url(naver: Naver) -> None:
    reserve_id = _reserve_id(naver)

    done = naver.http.post("/window/recurrent/regist/decide", data={
        "reserveId": reserve_id, "decision": "cancel", "openType": "popup"})

    assert done.status_code == 200 and "window.opener.location.href" in done.text
    assert "resultMessage=userCancel" in done.text
