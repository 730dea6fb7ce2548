"""``/_sandbox/cancel-script``: the cancel faults refund tests provoke over HTTP (issue 9)."""

from __future__ import annotations

import pytest

from tests.sandbox.conftest import Naver


def _cancel_rows(naver: Naver, payment_id: str) -> list[dict]:
    rows = naver.history(payment_id).json()["body"]["list"]
    return [r for r in rows if r["admissionTypeCode"] != "01"]


def test_server_error_before_commit_refunds_nothing_and_releases_the_key(naver: Naver):
    payment_id = naver.charged(1000)
    naver.control("cancel-script", {"steps": [{"status": 502}]})
    first = naver.cancel(payment_id, 300, key="rf-1")
    assert first.status_code == 502 and _cancel_rows(naver, payment_id) == []
    again = naver.cancel(payment_id, 300, key="rf-1")  # the key was not stored: processed now
    assert (again.status_code, again.json()["code"]) == (200, "Success")
    assert len(_cancel_rows(naver, payment_id)) == 1


def test_server_error_after_commit_refunds_and_replays_success_under_the_key(naver: Naver):
    payment_id = naver.charged(1000)
    naver.control("cancel-script", {"steps": [{"status": 500, "afterCommit": True}]})
    first = naver.cancel(payment_id, 300, key="rf-1", merchantPayTransactionKey="rf-1")
    assert first.status_code == 500
    rows = _cancel_rows(naver, payment_id)
    assert [(r["totalPayAmount"], r["merchantPayTransactionKey"]) for r in rows] == [(300, "rf-1")]
    replay = naver.cancel(payment_id, 300, key="rf-1", merchantPayTransactionKey="rf-1")
    assert (replay.status_code, replay.json()["code"]) == (409, "Success")
    assert len(_cancel_rows(naver, payment_id)) == 1  # never twice


def test_scripted_code_refunds_nothing(naver: Naver):
    payment_id = naver.charged(1000)
    naver.control("cancel-script", {"steps": [{"code": "OverRemainAmount"}]})
    reply = naver.cancel(payment_id, 300, key="rf-1")
    assert (reply.status_code, reply.json()["code"]) == (200, "OverRemainAmount")
    assert _cancel_rows(naver, payment_id) == []
    assert naver.http.get("/_sandbox/cancel-script").json() == {"steps": []}  # consumed


@pytest.mark.parametrize(("step", "error"), [
    ({"status": 404}, "5xx"),
    ({"code": ""}, "non-empty"),
    ({"holdSeconds": 2}, "afterCommit"),
    ({"code": "Fail", "afterCommit": True}, "refunds nothing"),
    ({"status": 500, "extra": 1}, "unknown"),
    ({}, "exactly one"),
])
def test_bad_steps_are_refused_by_name(naver: Naver, step, error):
    reply = naver.http.post("/_sandbox/cancel-script", json={"steps": [step]})
    assert reply.status_code == 400 and error in reply.json()["error"]
