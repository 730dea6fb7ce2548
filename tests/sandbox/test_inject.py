"""``POST /_sandbox/inject``: mismatches for reconciliation tests, seen through NAVER's own APIs."""

from __future__ import annotations

import pytest

from tests.sandbox.conftest import Naver


def _window(naver: Naver, start: str = "20261128000000", end: str = "20261128235959") -> list[dict]:
    reply = naver.call("v2.2/list/history", json={"startTime": start, "endTime": end, "rowsPerPage": 100})
    return list(reply.json()["body"]["list"])


def test_an_injected_approval_appears_in_history_at_its_time(naver: Naver, clock):
    clock.tick(3600 * 5)  # 14:00 KST
    pid = naver.control("inject", {"kind": "approval", "amount": 12000, "merchantPayId": "x-1",
                                   "at": "20261128101500"})["paymentId"]
    (row,) = _window(naver)
    assert (row["paymentId"], row["admissionYmdt"], row["totalPayAmount"]) == (pid, "20261128101500", 12000)
    keys = ("merchantPayKey", "admissionTypeCode", "admissionState")
    assert [row[k] for k in keys] == ["x-1", "01", "SUCCESS"]
    assert _window(naver, "20261129000000", "20261129235959") == []


def test_amount_cancel_and_drop_change_an_existing_payment(naver: Naver, clock):
    pid = naver.charged(9900)
    naver.control("inject", {"kind": "amount", "paymentId": pid, "amount": 5000})
    assert [r["totalPayAmount"] for r in _window(naver)] == [5000]
    naver.control("inject", {"kind": "cancel", "paymentId": pid, "amount": 1000})
    rows = _window(naver)
    assert [(r["admissionTypeCode"], r["totalPayAmount"]) for r in rows] == [("01", 5000), ("04", 1000)]
    assert naver.ledger()["payments"][0]["restAmount"] == 4000
    assert naver.control("inject", {"kind": "drop", "paymentId": pid})["rows"] == 2
    assert _window(naver) == []
    assert naver.history(pid).json()["code"] == "InvalidPaymentId"


@pytest.mark.parametrize(("body", "status", "error"), [
    ({"kind": "nope"}, 400, "kind must be one of approval, amount, cancel, drop"),
    ({"kind": "approval", "amount": -1}, 400, "amount must be a positive integer"),
    ({"kind": "approval", "amount": 1, "at": "yesterday"}, 400, "not a YYYYMMDDHHMMSS time"),
    ({"kind": "drop"}, 400, "paymentId is required"),
    ({"kind": "cancel", "paymentId": "20261128NP0", "amount": 1}, 404, "no payment"),
])
def test_bad_injections_are_refused_naming_what_is_wrong(naver: Naver, body, status, error):
    reply = naver.http.post("/_sandbox/inject", json=body)
    assert reply.status_code == status and error in reply.json()["error"]
