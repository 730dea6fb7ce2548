"""Options, faults, the idempotency store, field parsing and ids as plain functions."""

from __future__ import annotations

import re

import pytest

from sandbox import config as options
from sandbox.clock import IdFactory, parse_ymdt, ymdt
from sandbox.codes import ApiError, Code, fail
from sandbox.faults import Faults
from sandbox.idempotency import IdempotencyStore, Replay
from sandbox.params import Params, parse
from tests.sandbox.conftest import START, FakeClock


def test_options_accept_snake_and_camel_case():
    config = options.from_options({"reserve_window_seconds": "5", "minAmount": 100,
                                   "chain_id": "mine", "maintenance": True})
    assert (config.reserve_window_seconds, config.min_amount) == (5.0, 100)
    assert config.chain_ids == ("mine",) and config.maintenance == "MaintenanceOngoing"
    shown = options.to_json(config)
    assert shown["reserveWindowSeconds"] == 5.0 and shown["chainIds"] == ["mine"]


def test_require_chain_id_is_off_by_default_and_switchable():
    assert options.SandboxConfig().require_chain_id is False
    config = options.from_options({"requireChainId": "on"})
    assert config.require_chain_id is True and options.to_json(config)["requireChainId"] is True
    assert options.from_options({"require_chain_id": False}).require_chain_id is False


@pytest.mark.parametrize("changes", [{"nope": 1}, {"badCredentials": "403"},
                                     {"minAmount": -1}, {"cancelNotCompleteRate": 1.5},
                                     {"storeNonFinal": "maybe"}, {"chainIds": []},
                                     {"requireChainId": "maybe"}])
def test_bad_options_are_refused(changes):
    with pytest.raises(options.ConfigError):
        options.from_options(changes)


def test_a_bad_change_changes_nothing():
    config = options.SandboxConfig()
    with pytest.raises(options.ConfigError, match="duplicateMerchantPayId"):
        options.apply(config, {"minAmount": 500, "duplicateMerchantPayId": "sometimes"})
    assert config.min_amount == 10


def test_faults_repeat_with_the_same_seed():
    spec = {"errorRate": 0.3, "maintenanceRate": 0.3, "errorStatus": 503, "seed": 7}
    first = [Faults.from_json(spec) for _ in range(2)]
    draws = [[(a.status, a.code) if a else None for a in map(lambda _: f.draw(), range(50))]
             for f in first]
    assert draws[0] == draws[1]
    assert {d for d in draws[0] if d} == {(503, Code.SERVER_ERROR), (200, "MaintenanceOngoing")}
    assert Faults.from_json({}).draw() is None


@pytest.mark.parametrize("bad", [{"errorRate": 2}, {"errorStatus": 404}, {"latency": 1},
                                 {"seed": "x"}, {"latencyMs": -5}])
def test_bad_faults_are_refused(bad):
    with pytest.raises(ValueError):
        Faults.from_json(bad)


def test_idempotency_claim_store_release():
    store = IdempotencyStore(FakeClock())
    scope = ("client", "key-1")
    assert store.begin(scope, None) is None
    assert store.begin(scope, None) == Replay(None)  # still in progress
    store.store(scope, b"first")
    store.store(scope, b"second")
    store.release(scope)  # a stored answer is never released
    assert store.begin(scope, None) == Replay(b"first")
    assert store.begin(("other-client", "key-1"), None) is None


def test_idempotency_release_lets_the_key_run_again():
    store = IdempotencyStore(FakeClock())
    store.begin(("c", "k"), None)
    store.release(("c", "k"))
    assert store.begin(("c", "k"), None) is None


def test_idempotency_retention_forgets_old_answers():
    clock = FakeClock()
    store = IdempotencyStore(clock)
    store.begin(("c", "old"), 60)
    store.store(("c", "old"), b"x")
    clock.tick(61)
    assert store.begin(("c", "new"), 60) is None
    assert len(store) == 1
    assert store.begin(("c", "old"), 60) is None


def test_fields_merge_query_and_form_body_and_json():
    assert parse(b"a=1&b=%EC%9B%94", b"a=2&c=x+y", "application/x-www-form-urlencoded") == {
        "a": "2", "b": "월", "c": "x y"}
    assert parse(b"q=1", b'{"paymentId": "P"}', "application/json") == {"q": "1", "paymentId": "P"}
    with pytest.raises(ApiError):
        parse(b"", b"[1]", "application/json")


@pytest.mark.parametrize(("value", "ok"), [("1000", True), (1000, True), (1000.0, True),
                                           ("10.5", False), (True, False), ("-5", False),
                                           ("abc", False)])
def test_amounts_are_whole_non_negative_numbers(value, ok):
    params = Params({"amount": value})
    if ok:
        assert params.amount("amount") == 1000
    else:
        with pytest.raises(ApiError) as caught:
            params.amount("amount")
        assert caught.value.answer.code == "InvalidParameter"


def test_missing_or_blank_fields_are_require_parameter():
    with pytest.raises(ApiError, match="productName") as caught:
        Params({"productName": "  "}).require("productName")
    assert caught.value.answer.code == "RequireParameter"


def test_ids_and_times_have_navers_shapes():
    ids = IdFactory(seed=3)
    assert re.fullmatch(r"20261128NP\d{10}", ids.payment_id(START))
    assert re.fullmatch(r"20261128[A-Za-z0-9+/=]+", ids.reserve_id(START))
    assert len({ids.payment_id(START) for _ in range(100)}) == 100
    assert ymdt(START) == "20261128090000" and parse_ymdt("20261128090000") == START
    with pytest.raises(ValueError):
        parse_ymdt("2026112809000")


def test_answers_encode_korean_and_extra_fields():
    answer = fail(Code.INVALID_PAYMENT_ID, body={"list": []})
    assert "유효하지 않은".encode() in answer.encode()
    assert b"sandboxExtraField" in answer.encode(extra_fields=True)
    assert not fail(Code.ALREADY_ON_GOING).final and fail(Code.FAIL).final
    assert not fail(Code.SERVER_ERROR, status=500).final


def test_create_app_takes_start_options_and_reset_restores_them():
    from starlette.testclient import TestClient

    from sandbox.server import create_app

    with TestClient(create_app(reserve_window_seconds=5, duplicateMerchantPayId="reject")) as http:
        assert http.get("/_sandbox/config").json()["reserveWindowSeconds"] == 5.0
        http.post("/_sandbox/config", json={"reserveWindowSeconds": 9})
        http.post("/_sandbox/reset")
        shown = http.get("/_sandbox/config").json()
        assert (shown["reserveWindowSeconds"], shown["duplicateMerchantPayId"]) == (5.0, "reject")
    with pytest.raises(ValueError, match="unknown option"):
        create_app(no_such_option=1)
