"""Behaviour that needs a real server and real time: held responses, concurrency, the CLI.

These run against ``python -m sandbox`` on loopback (uvicorn, httptools, uvloop).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests import services
from tests.sandbox.conftest import HEADERS, Naver

pytestmark = pytest.mark.integration


def test_timeout_after_commit_charges_then_answers_late(live: Naver):
    recurrent_id = live.registration(timeoutAfterCommitTimes=1, timeoutSeconds=2)
    payment_id = live.reserve(recurrent_id)
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        live.approve(recurrent_id, payment_id, key="slow-1", timeout=0.5)
    # NAVER charged although the client saw a timeout: history tells the truth.
    row = live.history(payment_id).json()["body"]["list"][0]
    assert (row["admissionTypeCode"], row["admissionState"]) == ("01", "SUCCESS")
    replay = live.approve(recurrent_id, payment_id, key="slow-1")
    assert replay.status_code == 409 and replay.json()["code"] == "Success"
    assert replay.json()["body"]["detail"]["totalPayAmount"] == 9900
    during = live.approve(recurrent_id, payment_id, key="slow-2")
    assert during.json()["code"] == "AlreadyOnGoing"  # the held request still owns the payment
    time.sleep(max(0.0, 2.2 - (time.monotonic() - started)))
    after = live.approve(recurrent_id, payment_id, key="slow-3")
    assert after.status_code == 200 and after.json()["code"] == "AlreadyComplete"
    assert live.ledger()["payments"][0]["state"] == "APPROVED"


def test_concurrent_approvals_of_one_payment(live: Naver):
    recurrent_id = live.registration(latencyMs=400)
    payment_id = live.reserve(recurrent_id)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(live.approve, recurrent_id, payment_id, "key-1")
        time.sleep(0.1)
        second = pool.submit(live.approve, recurrent_id, payment_id, "key-2")
        codes = [first.result().json()["code"], second.result().json()["code"]]
    assert codes == ["Success", "AlreadyOnGoing"]
    retry = live.approve(recurrent_id, payment_id, key="key-2")  # not stored: runs again
    assert (retry.status_code, retry.json()["code"]) == (200, "AlreadyComplete")


def test_repeat_of_a_key_still_in_progress_is_409_already_on_going(live: Naver):
    recurrent_id = live.registration(latencyMs=400)
    payment_id = live.reserve(recurrent_id)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(live.approve, recurrent_id, payment_id, "same")
        time.sleep(0.1)
        second = pool.submit(live.approve, recurrent_id, payment_id, "same")
        first_reply, second_reply = first.result(), second.result()
    assert (second_reply.status_code, second_reply.json()["code"]) == (409, "AlreadyOnGoing")
    assert first_reply.json()["code"] == "Success"
    later = live.approve(recurrent_id, payment_id, key="same")
    assert later.status_code == 409 and later.content == first_reply.content


def test_global_latency_fault(live: Naver):
    live.control("faults", {"latencyMs": 150})
    started = time.monotonic()
    assert live.call("recurrent/v1/list", json={"recurrentId": "x"}).status_code == 200
    assert time.monotonic() - started >= 0.15
    started = time.monotonic()
    live.http.get("/_sandbox/health")
    assert time.monotonic() - started < 0.15


def test_command_line_options():
    service = services.start_sandbox("--bad-credentials", "InvalidMerchant",
                                     "--client-secret", "s3cret", "--chain-id", "chain-a",
                                     "--reserve-window-seconds", "1")
    try:
        url = f"{service.url}/np_partner/naverpay/payments/recurrent/v1/list"
        wrong = httpx.post(url, json={"recurrentId": "x"}, headers=HEADERS)
        assert (wrong.status_code, wrong.json()["code"]) == (200, "InvalidMerchant")
        good = {**HEADERS, "X-Naver-Client-Secret": "s3cret", "X-NaverPay-Chain-Id": "chain-a"}
        assert httpx.post(url, json={"recurrentId": "x"}, headers=good).json()["code"] == "Success"
        shown = httpx.get(f"{service.url}/_sandbox/config").json()
        assert (shown["reserveWindowSeconds"], shown["chainIds"]) == (1.0, ["chain-a"])
    finally:
        service.stop()


def test_auto_register_charges_any_recurrent_id():
    """`--auto-register` (make run's demo mode): an unknown recurrentId becomes VALID."""
    import httpx

    from tests.services import start_sandbox

    svc = start_sandbox("--auto-register")
    try:
        headers = {"X-Naver-Client-Id": "sandbox-client-id",
                   "X-Naver-Client-Secret": "sandbox-client-secret",
                   "X-NaverPay-Chain-Id": "sandbox-recurrent-chain-id"}
        base = f"{svc.url}/naverpay-partner/naverpay/payments/recurrent/pay/v3"
        form = {"recurrentId": "20261128RE1003007926ZStYYU", "totalPayAmount": "9900",
                "taxScopeAmount": "9900", "taxExScopeAmount": "0", "productName": "월간 구독",
                "merchantPayId": "M-1", "merchantUserId": "user-42"}
        reserved = httpx.post(f"{base}/reserve", data=form, headers=headers).json()
        assert reserved["code"] == "Success"
        approved = httpx.post(f"{base}/approval", headers=headers, data={
            "recurrentId": form["recurrentId"], "paymentId": reserved["body"]["paymentId"]}).json()
        assert approved["code"] == "Success"
        ledger = httpx.get(f"{svc.url}/_sandbox/ledger").json()
        assert [r["state"] for r in ledger["registrations"]] == ["VALID"]
    finally:
        svc.stop()
