"""The web app over HTTP (in-process ASGI), NAVER being the real sandbox: the demo pages, and
the returnUrl endpoint trusting nothing but the signed state for what is subscribed to."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.web.conftest import World, new_flow
from worker.web import WebSettings, create_app
from worker.web.state_token import sign

pytestmark = pytest.mark.integration
SECRET = b"test-secret-of-at-least-16-bytes"


@pytest.fixture
def web(sqlite_world: World) -> Iterator[TestClient]:
    settings = WebSettings(secret=SECRET, client_id="sandbox-client-id",
                           sdk_url="http://sandbox.test/sdk/js/naverpay.min.js")
    app = create_app(sqlite_world.registrar, settings, clock=lambda: datetime.now(UTC))
    with TestClient(app, base_url="http://shop.test") as client:
        yield client


def _token(**overrides: Any) -> str:
    return sign(SECRET, new_flow(**overrides).to_payload(), now=datetime.now(UTC), ttl_seconds=600)


def test_the_order_page_opens_naver_s_window_with_a_signed_return_url(web: TestClient) -> None:
    page = web.post("/start", data={"plan": "PLAN-M", "user": "user-42", "email": "a@example.com"})

    assert page.status_code == 200
    assert '<script src="http://sandbox.test/sdk/js/naverpay.min.js">' in page.text
    assert '"payType": "recurrent"' in page.text and '"actionType": "NEW"' in page.text
    assert '"totalPayAmount": 9900' in page.text and '"productCode": "PLAN-M"' in page.text
    return_url = re.search(r'"returnUrl": "([^"]+)"', page.text)
    assert return_url is not None
    assert return_url.group(1).startswith("http://shop.test/registrations/return?state=v1.")


@pytest.mark.parametrize(("form", "complaint"), [
    ({"plan": "NOPE", "user": "u"}, "상품을 선택해 주세요"),
    ({"plan": "PLAN-M", "user": ""}, "회원 아이디"),
    ({"plan": "PLAN-M", "user": "u", "email": "not-an-email"}, "이메일"),
])
def test_the_demo_form_says_what_is_wrong(web: TestClient, form: dict[str, str], complaint: str) -> None:
    page = web.post("/start", data=form)

    assert page.status_code == 400 and complaint in page.text


def test_a_success_return_creates_the_subscription_from_the_token_not_the_query(
        web: TestClient, sqlite_world: World) -> None:
    reserve_id, temp = sqlite_world.window.register(amount=100)

    page = web.get("/registrations/return", params={
        "state": _token(amount=9900), "resultCode": "Success", "reserveId": reserve_id,
        "tempReceiptId": temp, "amount": "100", "cron": "* * * * * *", "merchant_user_id": "evil"})

    assert page.status_code == 200 and "네이버페이 정기결제 등록이 완료되었습니다." in page.text
    [sub] = sqlite_world.subscriptions()
    assert (sub.merchant_user_id, sub.amount, sub.cron) == ("user-42", 9900, "0 9 1 * *")
    again = web.get("/registrations/return", params={
        "state": _token(), "resultCode": "Success", "reserveId": reserve_id, "tempReceiptId": temp})
    assert again.status_code == 400 and "잘못된 요청" in again.text  # another start, same reserveId
    assert len(sqlite_world.subscriptions()) == 1


@pytest.mark.parametrize(("message", "korean"), [
    ("userCancel", "등록을 취소하셨습니다"),
    ("paymentTimeExpire", "등록 가능 시간이 지났습니다"),
    ("OwnerAuthFail", "본인 명의의 카드나 계좌만"),
])
def test_naver_s_failures_are_explained_in_korean(web: TestClient, sqlite_world: World, message: str,
                                                   korean: str) -> None:
    page = web.get("/registrations/return", params={
        "state": _token(), "resultCode": "Fail", "resultMessage": message, "reserveId": "R1"})

    assert page.status_code == 200 and korean in page.text and "등록하지 못했습니다" in page.text
    assert sqlite_world.subscriptions() == [] and sqlite_world.attempts() == []


def test_an_unknown_naver_failure_shows_naver_s_reason_escaped(web: TestClient) -> None:
    page = web.get("/registrations/return", params={
        "state": _token(), "resultCode": "Fail", "resultMessage": "<b>카드사 점검</b>"})

    assert "네이버페이 결제수단 등록에 실패했습니다" in page.text
    assert "&lt;b&gt;카드사 점검&lt;/b&gt;" in page.text


def test_a_forged_or_expired_state_is_refused_before_naver_is_asked(web: TestClient,
                                                                    sqlite_world: World) -> None:
    reserve_id, temp = sqlite_world.window.register()
    token = _token()
    version, payload, signature = token.split(".")
    forged = f"{version}.{payload[:-2]}AA.{signature}"
    expired = sign(SECRET, new_flow().to_payload(), now=datetime(2020, 1, 1, tzinfo=UTC), ttl_seconds=60)
    other_key = sign(b"x" * 32, new_flow().to_payload(), now=datetime.now(UTC), ttl_seconds=600)

    pages = [web.get("/registrations/return", params={"state": state, "resultCode": "Success",
                                                       "reserveId": reserve_id, "tempReceiptId": temp})
             for state in (forged, expired, other_key, "")]

    assert [p.status_code for p in pages] == [400, 400, 400, 400]
    assert "등록 요청 시간이 지났습니다" in pages[1].text
    assert all("잘못된 요청" in p.text for p in (pages[0], pages[2], pages[3]))
    assert sqlite_world.sandbox.ledger()["registrations"] == []  # never approved
    assert sqlite_world.attempts() == []


def test_the_change_page_starts_a_change_for_the_subscription(web: TestClient, sqlite_world: World) -> None:
    reserve_id, temp = sqlite_world.window.register()
    web.get("/registrations/return", params={"state": _token(), "resultCode": "Success",
                                             "reserveId": reserve_id, "tempReceiptId": temp})
    [sub] = sqlite_world.subscriptions()

    page = web.get(f"/subscriptions/{sub.id}/change")
    missing = web.get("/subscriptions/999/change")

    assert page.status_code == 200 and '"actionType": "CHANGE"' in page.text
    assert f'"targetRecurrentId": "{sub.recurrent_id}"' in page.text
    assert missing.status_code == 404 and "변경할 수 없는" in missing.text


def test_without_the_demo_only_return_url_is_served(sqlite_world: World) -> None:
    settings = WebSettings(secret=SECRET, client_id="c", demo=False)
    with TestClient(create_app(sqlite_world.registrar, settings)) as client:
        assert client.get("/").status_code == 404
        page = client.get("/registrations/return", params={"state": _token(), "resultCode": "Fail",
                                                           "resultMessage": "userCancel"})
        assert page.status_code == 200 and "처음으로" not in page.text
