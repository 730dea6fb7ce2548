"""How NaverPayClient turns NAVER's failures into error classes (httpx.MockTransport)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.worker.naverpay.fakes import (
    CALLS,
    CALLS_BY_METHOD,
    MUTATING,
    READS,
    SECRET,
    Answer,
    Call,
    envelope,
    make_client,
)
from worker.naverpay import (
    AuthenticationError,
    DeclinedError,
    MalformedResponseError,
    NaverPayConfig,
    NaverPayError,
    PermanentError,
    TransientError,
    UnknownOutcomeError,
)
from worker.naverpay.errors import ANY, CODE_TABLE, MerchantSideError, customer_decline, error_class_for

EXAMPLE_BY_KIND = {
    "approval": CALLS_BY_METHOD["approve_payment"],
    "cancel": CALLS_BY_METHOD["cancel_payment"],
    "mutation": CALLS_BY_METHOD["reserve_payment"],
    "read": CALLS_BY_METHOD["cash_amount"],
}
KNOWN_CODES = sorted({code for _, code in CODE_TABLE if code != ANY})


def answered(code: str, status: int = 200, body: dict[str, object] | None = None) -> (
        httpx.Response):
    return httpx.Response(status, json=envelope(code, body, message=f"{code} 설명"))


@pytest.mark.parametrize("kind", sorted(EXAMPLE_BY_KIND))
@pytest.mark.parametrize("code", KNOWN_CODES + ["BrandNewCode2027"])
def test_every_code_in_the_table_raises_its_class(kind: str, code: str) -> None:
    call = EXAMPLE_BY_KIND[kind]
    if (kind, code) == ("cancel", "CancelNotComplete"):
        pytest.skip("an answer, not an error")
    client, _ = make_client(answered(code, body={"totalRestAmount": 5}))

    with pytest.raises(NaverPayError) as info:
        call.invoke(client)

    error = info.value
    assert type(error) is error_class_for(kind, code)  # type: ignore[arg-type]
    assert (error.code, error.http_status, error.replayed) == (code, 200, False)
    assert error.naver_message == f"{code} 설명"
    assert error.body == {"totalRestAmount": 5}
    assert code in str(error) and f"{code} 설명" in str(error)
    assert '"code"' in (error.raw or "")


@pytest.mark.parametrize("kind,code,expected", [
    ("approval", "NotEnoughAccountBalance", DeclinedError),
    ("approval", "OwnerAuthFail", DeclinedError),
    ("approval", "BankMaintenance", DeclinedError),
    ("approval", "FaultCheckOngoing", DeclinedError),
    ("approval", "TimeExpired", DeclinedError),
    ("approval", "Fail", DeclinedError),
    ("approval", "AlreadyComplete", UnknownOutcomeError),
    ("approval", "AlreadyOnGoing", UnknownOutcomeError),
    ("approval", "BrandNewCode2027", UnknownOutcomeError),
    ("approval", "MaintenanceOngoing", TransientError),
    ("approval", "InvalidMerchant", AuthenticationError),
    # Our request is at fault: merchant-side, never a customer decline (held, alerted).
    ("mutation", "InvalidParameter", MerchantSideError),
    ("mutation", "RequireParameter", MerchantSideError),
    ("approval", "InvalidParameter", MerchantSideError),
    # A reserve answered Fail (e.g. a registration NAVER has ended) is NAVER's generic refusal.
    ("mutation", "Fail", DeclinedError),
    ("mutation", "BrandNewCode2027", DeclinedError),
    ("cancel", "RestAmountDiff", PermanentError),
    ("cancel", "AlreadyCanceled", PermanentError),
    ("cancel", "OverRemainAmount", PermanentError),
    ("cancel", "PreCancelNotComplete", PermanentError),
    ("cancel", "BrandNewCode2027", UnknownOutcomeError),
    ("read", "Fail", TransientError),
    ("read", "BrandNewCode2027", TransientError),
    ("read", "TimeConditionError", MerchantSideError),
])
def test_the_table_says_what_the_caller_should_do(kind: str, code: str,
                                                  expected: type[NaverPayError]) -> None:
    assert error_class_for(kind, code) is expected  # type: ignore[arg-type]


@pytest.mark.parametrize("kind,code,customer", [
    ("approval", "NotEnoughAccountBalance", True), ("approval", "Fail", True),
    ("mutation", "Fail", True), ("approval", "OwnerAuthFail", True),
    ("mutation", "BrandNewCode2027", False),  # declined, but we don't know it is the customer's
    ("approval", "InvalidMerchant", False), ("approval", "InvalidParameter", False),
    ("approval", "AlreadyOnGoing", False),
])
def test_only_answers_about_the_customers_means_are_customer_declines(kind: str, code: str,
                                                                      customer: bool) -> None:
    error = error_class_for(kind, code)("x", api="a", code=code)  # type: ignore[arg-type]
    assert customer_decline(error) is customer


def test_merchant_side_faults_are_permanent_and_authentication_is_one_of_them() -> None:
    assert issubclass(AuthenticationError, MerchantSideError)
    assert issubclass(MerchantSideError, PermanentError)


def test_success_is_never_an_error_class() -> None:
    assert all(code != "Success" for _, code in CODE_TABLE)


def test_authentication_error_is_permanent_and_malformed_is_unknown_outcome() -> None:
    assert issubclass(AuthenticationError, PermanentError)
    assert issubclass(MalformedResponseError, UnknownOutcomeError)


# -- HTTP 409: the idempotency replay of the first answer -----------------------------------

def test_a_replayed_success_is_returned_as_the_first_answer() -> None:
    call = CALLS_BY_METHOD["approve_payment"]
    client, _ = make_client(httpx.Response(409, json=envelope("Success", call.body)))

    result = call.invoke(client)

    assert result.replayed is True
    assert result.detail.total_pay_amount == 9900


def test_a_replayed_failure_is_raised_as_the_first_answer() -> None:
    client, _ = make_client(answered("NotEnoughAccountBalance", status=409))

    with pytest.raises(DeclinedError) as info:
        CALLS_BY_METHOD["approve_payment"].invoke(client)

    assert (info.value.replayed, info.value.http_status) == (True, 409)
    assert "HTTP 409 replay" in str(info.value)


# -- HTTP statuses ----------------------------------------------------------------------------

@pytest.mark.parametrize("call", CALLS, ids=lambda c: c.method)
@pytest.mark.parametrize("status", [500, 502, 503, 504, 429])
def test_server_errors_are_transient_for_every_api(call: Call, status: int) -> None:
    client, _ = make_client(httpx.Response(status, text="<html>Bad Gateway</html>",
                                           headers={"content-type": "text/html"}))
    # Issue 9 (NAVER's guide): on a cancel only 503 and 429 say "not processed".
    expected = UnknownOutcomeError if call.method == "cancel_payment" and status not in (503, 429) \
        else TransientError

    with pytest.raises(expected) as info:
        call.invoke(client)

    assert type(info.value) is expected and info.value.http_status == status


def test_maintenance_503_keeps_naver_code() -> None:
    client, _ = make_client(answered("MaintenanceOngoing", status=503))

    with pytest.raises(TransientError) as info:
        CALLS_BY_METHOD["approve_payment"].invoke(client)

    assert info.value.code == "MaintenanceOngoing"


@pytest.mark.parametrize("body", [b"", b"Unauthorized", b'{"code":"InvalidMerchant"}'])
def test_http_401_is_an_authentication_error(body: bytes) -> None:
    client, _ = make_client(httpx.Response(401, content=body))

    with pytest.raises(AuthenticationError) as info:
        CALLS_BY_METHOD["reserve_payment"].invoke(client)

    assert info.value.http_status == 401


def test_a_4xx_without_a_naver_code_is_permanent() -> None:
    client, _ = make_client(httpx.Response(404, text="<html>Not Found</html>",
                                           headers={"content-type": "text/html"}))

    with pytest.raises(PermanentError) as info:
        CALLS_BY_METHOD["approve_payment"].invoke(client)

    assert "HTTP 404, text/html" in str(info.value)


def test_a_4xx_with_a_naver_code_follows_the_code() -> None:
    client, _ = make_client(answered("InvalidParameter", status=400))

    with pytest.raises(PermanentError) as info:
        CALLS_BY_METHOD["reserve_payment"].invoke(client)

    assert info.value.code == "InvalidParameter"


# -- malformed answers --------------------------------------------------------------------

def streamed(size: int) -> Iterator[bytes]:
    """A body without Content-Length, so only the streaming cap can catch it."""
    yield b'{"code":"Success","body":{"x":"'
    for _ in range(size // 1024):
        yield b"x" * 1024
    yield b'"}}'


MALFORMED: dict[str, Callable[[httpx.Request], httpx.Response]] = {
    "non-JSON": lambda _: httpx.Response(200, text="Success"),
    "HTML error page": lambda _: httpx.Response(
        200, text="<html><body>점검 중</body></html>", headers={"content-type": "text/html"}),
    "missing code": lambda _: httpx.Response(200, json={"message": "hi", "body": {}}),
    "empty code": lambda _: httpx.Response(200, json={"code": "", "body": {}}),
    "truncated JSON": lambda _: httpx.Response(200, content=b'{"code":"Success","body":{"pa'),
    "not an object": lambda _: httpx.Response(200, json=["Success"]),
    "invalid UTF-8": lambda _: httpx.Response(200, content=b'{"code":"\xff\xfe"}'),
    "empty body": lambda _: httpx.Response(200, content=b""),
    "huge declared body": lambda _: httpx.Response(200, content=b" " * 5000),
    "huge streamed body": lambda _: httpx.Response(200, content=streamed(8192)),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
@pytest.mark.parametrize("call", MUTATING, ids=lambda c: c.method)
def test_unreadable_answers_to_mutating_calls_are_malformed(call: Call, case: str) -> None:
    client, _ = make_client(MALFORMED[case], max_body_bytes=4096)

    with pytest.raises(MalformedResponseError) as info:
        call.invoke(client)

    assert str(info.value).startswith(f"{call.title}: NAVER answered ")
    assert info.value.http_status == 200


@pytest.mark.parametrize("case", sorted(MALFORMED))
@pytest.mark.parametrize("call", READS, ids=lambda c: c.method)
def test_unreadable_answers_to_reads_are_transient(call: Call, case: str) -> None:
    client, _ = make_client(MALFORMED[case], max_body_bytes=4096)

    with pytest.raises(TransientError) as info:
        call.invoke(client)

    assert not isinstance(info.value, UnknownOutcomeError)


def test_malformed_message_names_the_api_status_type_and_body_start() -> None:
    client, _ = make_client(MALFORMED["HTML error page"])

    with pytest.raises(MalformedResponseError) as info:
        CALLS_BY_METHOD["approve_payment"].invoke(client)

    assert str(info.value) == ("recurrent pay approval: NAVER answered a non-JSON body "
                               "(HTTP 200, text/html): <html><body>점검 중</body></html>")


@pytest.mark.parametrize("method,body,missing", [
    ("reserve_payment", {"recurrentId": "R"}, "paymentId"),
    ("reserve_registration", {}, "reserveId"),
    ("approve_registration", {"reserveId": "X"}, "recurrentId"),
    ("approve_payment", {"paymentId": "P"}, "detail"),
    ("approve_payment", {"paymentId": "P", "detail": {"admissionState": "SUCCESS"}},
     "totalPayAmount"),
    ("apply_payment", {"detail": {"totalPayAmount": 100}}, "paymentId"),
    ("approve_payment", {"paymentId": "P", "detail": {"totalPayAmount": "9,900"}},
     "whole number"),
    ("cancel_payment", {"list": "x", "totalRestAmount": 1.5}, "whole number"),
])
def test_success_without_a_required_member_is_malformed(method: str, body: dict[str, object],
                                                        missing: str) -> None:
    client, _ = make_client(httpx.Response(200, json=envelope("Success", body)))

    with pytest.raises(MalformedResponseError, match=missing) as info:
        CALLS_BY_METHOD[method].invoke(client)

    assert info.value.code == "Success"


def test_a_read_success_missing_a_required_member_is_transient() -> None:
    client, _ = make_client(httpx.Response(200, json=envelope("Success", {"list": [{}]})))

    with pytest.raises(TransientError, match="paymentId"):
        CALLS_BY_METHOD["payment_history"].invoke(client)


def test_unknown_members_and_missing_optional_ones_are_tolerated() -> None:
    client, _ = make_client(httpx.Response(200, json={
        "code": "Success", "extra": 1,
        "body": {"paymentId": "P", "detail": {"totalPayAmount": 1000.0, "new": [1]}}}))

    result = CALLS_BY_METHOD["apply_payment"].invoke(client)

    assert result.detail.payment_id == "P"
    assert result.detail.total_pay_amount == 1000
    assert result.detail.admission_ymdt is None and result.detail.tax_scope_amount is None


# -- httpx exceptions ---------------------------------------------------------------------

NOT_SENT = [httpx.ConnectError("refused"), httpx.ConnectTimeout("connect timed out"),
            httpx.PoolTimeout("pool exhausted")]
LOST = [httpx.ReadTimeout("timed out"), httpx.RemoteProtocolError("peer closed"),
        httpx.ReadError("reset by peer"), httpx.WriteError("broken pipe"),
        httpx.WriteTimeout("write timed out")]


@pytest.mark.parametrize("exc", NOT_SENT, ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("call", CALLS, ids=lambda c: c.method)
def test_failures_before_sending_are_transient(call: Call, exc: Exception) -> None:
    client, _ = make_client(exc)

    with pytest.raises(TransientError) as info:
        call.invoke(client)

    assert info.value.__cause__ is exc
    assert "nothing was sent" in str(info.value)


@pytest.mark.parametrize("exc", LOST, ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("call", MUTATING, ids=lambda c: c.method)
def test_a_lost_answer_to_a_mutating_call_is_an_unknown_outcome(call: Call,
                                                                 exc: Exception) -> None:
    client, _ = make_client(exc)

    with pytest.raises(UnknownOutcomeError) as info:
        call.invoke(client)

    assert type(info.value) is UnknownOutcomeError
    assert info.value.__cause__ is exc
    assert "history" in str(info.value)


@pytest.mark.parametrize("exc", LOST, ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("call", READS, ids=lambda c: c.method)
def test_a_lost_answer_to_a_read_is_transient(call: Call, exc: Exception) -> None:
    client, _ = make_client(exc)

    with pytest.raises(TransientError) as info:
        call.invoke(client)

    assert info.value.__cause__ is exc


# -- the secret -----------------------------------------------------------------------------

def every_failure() -> list[Answer]:
    echo = {"code": "Fail", "message": f"bad secret {SECRET}", "body": {"s": SECRET}}
    return [httpx.Response(200, json=echo), httpx.Response(409, json=echo),
            httpx.Response(401, text=SECRET), httpx.Response(502, text=SECRET),
            httpx.Response(404, text=SECRET), httpx.Response(200, text=f"<p>{SECRET}</p>"),
            httpx.Response(200, json={"code": "Success", "body": {"x": SECRET}}),
            httpx.ReadTimeout(f"timed out {SECRET}"), httpx.ConnectError(SECRET),
            *MALFORMED.values()]


def test_the_secret_never_shows_in_repr_errors_or_logs(caplog: pytest.LogCaptureFixture
                                                       ) -> None:
    caplog.set_level(logging.DEBUG)
    config = NaverPayConfig(client_secret=SECRET)
    shown = [repr(config), str(config)]
    for answer in every_failure():
        for call in (CALLS_BY_METHOD["approve_payment"], CALLS_BY_METHOD["payment_history"]):
            client, _ = make_client(answer, max_body_bytes=4096)
            shown.append(repr(client))
            try:
                call.invoke(client)
            except NaverPayError as error:
                shown += [str(error), repr(error), error.raw or "", str(error.naver_message)]

    assert len(shown) > 40
    assert not [text for text in shown if SECRET in text]
    assert caplog.records and SECRET not in caplog.text


def test_each_call_is_logged_at_debug_with_api_status_code_and_time(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="worker.naverpay")
    client, _ = make_client(answered("NotEnoughAccountBalance"))

    with pytest.raises(DeclinedError):
        CALLS_BY_METHOD["approve_payment"].invoke(client)

    (record,) = [r for r in caplog.records if r.name == "worker.naverpay"]
    assert record.levelno == logging.DEBUG
    assert record.getMessage().startswith(
        "naverpay pay_approval: HTTP 200, code NotEnoughAccountBalance, ")
    assert record.getMessage().endswith(" ms")
