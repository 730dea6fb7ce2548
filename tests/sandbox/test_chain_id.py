"""The optional chain id, over real HTTP against ``python -m sandbox``.

NAVER issues chain ids to group-type merchants only (integration guide 2-2), so by default the
sandbox accepts calls with or without ``X-NaverPay-Chain-Id``; a chain id it does not know is
always ``InvalidMerchant``; ``requireChainId`` refuses calls without one (a group-type merchant).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests import services
from tests.sandbox.conftest import HEADERS, Naver

pytestmark = pytest.mark.integration

NO_CHAIN = {k: v for k, v in HEADERS.items() if k != "X-NaverPay-Chain-Id"}


def post(live: Naver, api: str, headers: dict[str, str], data: dict[str, Any] | None = None,
         json: Any = None) -> httpx.Response:
    url = f"/naverpay-partner/naverpay/payments/{api}"
    return live.http.post(url, data=data, json=json, headers=headers)


def charge(live: Naver, headers: dict[str, str], merchant_pay_id: str) -> tuple[str, str]:
    """Reserve and approve one recurrent payment with ``headers``; the two result codes."""
    recurrent_id = live.registration()
    reserved = post(live, "recurrent/pay/v3/reserve", headers, data={
        "recurrentId": recurrent_id, "totalPayAmount": 9900, "taxScopeAmount": 9900,
        "taxExScopeAmount": 0, "productName": "월간 구독", "merchantPayId": merchant_pay_id,
        "merchantUserId": "user-42"}).json()
    if reserved["code"] != "Success":
        return reserved["code"], "not sent"
    approved = post(live, "recurrent/pay/v3/approval", headers, data={
        "recurrentId": recurrent_id, "paymentId": reserved["body"]["paymentId"]}).json()
    return reserved["code"], approved["code"]


def test_by_default_a_charge_succeeds_without_a_chain_id(live: Naver) -> None:
    assert live.control("config", {})["requireChainId"] is False  # the default

    assert charge(live, NO_CHAIN, "no-chain-1") == ("Success", "Success")
    assert charge(live, HEADERS, "with-chain-1") == ("Success", "Success")
    states = {p["merchantPayId"]: p["state"] for p in live.ledger()["payments"]}
    assert states == {"no-chain-1": "APPROVED", "with-chain-1": "APPROVED"}


@pytest.mark.parametrize("required", [False, True])
def test_a_wrong_chain_id_is_always_invalid_merchant(live: Naver, required: bool) -> None:
    live.control("config", {"requireChainId": required})

    reply = post(live, "recurrent/v1/list", {**HEADERS, "X-NaverPay-Chain-Id": "someone-else"},
                 json={"recurrentId": "x"})

    assert (reply.status_code, reply.json()["code"]) == (200, "InvalidMerchant")


def test_required_chain_id_refuses_calls_without_one(live: Naver) -> None:
    live.control("config", {"requireChainId": True})

    refused = post(live, "recurrent/v1/list", NO_CHAIN, json={"recurrentId": "x"})
    blank = post(live, "recurrent/v1/list", {**HEADERS, "X-NaverPay-Chain-Id": ""},
                 json={"recurrentId": "x"})

    assert (refused.status_code, refused.json()["code"]) == (200, "InvalidMerchant")
    assert blank.json()["code"] == "InvalidMerchant"
    assert charge(live, NO_CHAIN, "no-chain-2") == ("InvalidMerchant", "not sent")
    assert charge(live, HEADERS, "with-chain-2") == ("Success", "Success")


def test_reset_restores_the_optional_chain_id(live: Naver) -> None:
    live.control("config", {"requireChainId": True, "chainIds": ["group-a"]})
    live.control("reset")

    shown = live.http.get("/_sandbox/config").json()
    assert (shown["requireChainId"], post(live, "recurrent/v1/list", NO_CHAIN,
                                          json={"recurrentId": "x"}).json()["code"]) == (
        False, "Success")


def test_command_line_require_chain_id() -> None:
    service = services.start_sandbox("--require-chain-id", "--chain-id", "group-a")
    try:
        url = f"{service.url}/naverpay-partner/naverpay/payments/recurrent/v1/list"
        bare = httpx.post(url, json={"recurrentId": "x"}, headers=NO_CHAIN).json()["code"]
        good = httpx.post(url, json={"recurrentId": "x"},
                          headers={**NO_CHAIN, "X-NaverPay-Chain-Id": "group-a"}).json()["code"]
        shown = httpx.get(f"{service.url}/_sandbox/config").json()
    finally:
        service.stop()

    assert (bare, good) == ("InvalidMerchant", "Success")
    assert (shown["requireChainId"], shown["chainIds"]) == (True, ["group-a"])
