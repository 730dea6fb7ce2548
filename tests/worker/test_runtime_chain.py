"""merchant_config: the chain id is optional and belongs to the credentials it was issued with.

NAVER issues chain ids to group-type merchants only (integration guide 2-2), so a merchant
without one must send no ``X-NaverPay-Chain-Id``, and a merchant with its own client id must
never send the environment's (another merchant's) chain id.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from models import Merchant
from worker.naverpay import NaverPayClient, NaverPayConfig
from worker.runtime import merchant_config

ENV_CHAINS = NaverPayConfig(chain_id="env-chain", onetime_chain_id="env-onetime")


def merchant(**columns: Any) -> Merchant:
    return Merchant(id=7, name="shop", **columns)


@pytest.mark.parametrize(("base", "columns", "expected"), [
    # No chain id anywhere: none is sent (the default of make run and of non-group merchants).
    (NaverPayConfig(), {}, (None, None)),
    (NaverPayConfig(), {"client_id": "B"}, (None, None)),
    # The environment's merchant (no client_id of its own) inherits the environment's ids.
    (ENV_CHAINS, {}, ("env-chain", "env-onetime")),
    (ENV_CHAINS, {"chain_id": "row-chain"}, ("row-chain", "env-onetime")),
    (ENV_CHAINS, {"chain_id": "  "}, ("env-chain", "env-onetime")),  # blank = NULL
    # A merchant with its own credentials: only its own chain id, if any.
    (ENV_CHAINS, {"client_id": "B"}, (None, None)),
    (ENV_CHAINS, {"client_id": "B", "chain_id": "B-chain"}, ("B-chain", "B-chain")),
    (NaverPayConfig(), {"chain_id": "row-chain"}, ("row-chain", "row-chain")),
])
def test_which_chain_id_a_merchant_sends(base: NaverPayConfig, columns: dict[str, Any],
                                         expected: tuple[str | None, str | None]) -> None:
    config = merchant_config(base, merchant(**columns))

    assert (config.chain_id, config.effective_onetime_chain_id) == expected


def test_a_merchant_without_chain_id_sends_no_header() -> None:
    seen: list[httpx.Request] = []

    def naver(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"code": "Success", "message": "ok", "body": {
            "list": [], "totalCount": 0, "totalPageCount": 0, "currentPageNumber": 1}})

    config = merchant_config(ENV_CHAINS, merchant(client_id="B"))
    with NaverPayClient(config, transport=httpx.MockTransport(naver)) as client:
        client.list_registrations(recurrent_id="20261128RE1")

    assert seen[0].headers["X-Naver-Client-Id"] == "B"
    assert "X-NaverPay-Chain-Id" not in seen[0].headers


@pytest.mark.parametrize(("columns", "expected"), [
    ({}, ("env-partner", "env-onetime-partner")),  # the environment's merchant: both env ids
    ({"partner_id": "row-partner"}, ("row-partner", "row-partner")),  # its own partner id
    ({"client_id": "B"}, ("env-partner", "env-partner")),  # another NAVER merchant
])
def test_which_partner_id_onetime_apis_use(columns: dict[str, Any], expected: tuple[str, str]) -> None:
    base = NaverPayConfig(partner_id="env-partner", onetime_partner_id="env-onetime-partner")

    config = merchant_config(base, merchant(**columns))

    assert (config.partner_id, config.effective_onetime_partner_id) == expected
