"""A scripted NAVER for unit tests, over ``httpx.MockTransport``, and one example per API.

``FakeNaver`` answers requests from a queue of responses (or exceptions to raise) and records
every request it saw. ``CALLS`` lists each client method with valid arguments, the endpoint it
must reach and a minimal Success body, so that per-API tests can be parametrized.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from worker.naverpay import NaverPayClient, NaverPayConfig
from worker.naverpay.kst import KST

SECRET = "unit-secret-7f3Qz"

Answer = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


def envelope(code: str = "Success", body: Mapping[str, Any] | None = None,
             message: str = "메시지") -> dict[str, Any]:
    """NAVER's answer envelope."""
    doc: dict[str, Any] = {"code": code, "message": message}
    if body is not None:
        doc["body"] = dict(body)
    return doc


def ok(body: Mapping[str, Any], status: int = 200) -> httpx.Response:
    """A Success answer."""
    return httpx.Response(status, json=envelope("Success", body))


@dataclass
class FakeNaver:
    """Answers with ``answers`` in turn (the last one repeats); records the requests."""

    answers: list[Answer] = field(default_factory=list)
    requests: list[httpx.Request] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, httpx.Response):
            return answer
        return answer(request)

    @property
    def last(self) -> httpx.Request:
        """The most recent request."""
        return self.requests[-1]


def make_client(*answers: Answer, observer: Any = None, **config: Any) -> tuple[
        NaverPayClient, FakeNaver]:
    """A client wired to a ``FakeNaver`` answering ``answers``."""
    fake = FakeNaver(list(answers))
    settings = {"api_base": "https://naver.test", "partner_id": "np_partner",
                "client_id": "unit-client", "client_secret": SECRET,
                "chain_id": "chain-recurrent", "onetime_chain_id": "chain-onetime", **config}
    client = NaverPayClient(NaverPayConfig(**settings), transport=httpx.MockTransport(fake),
                            observer=observer)
    return client, fake


DETAIL = {
    "paymentId": "20261128NP0000000001", "payHistId": "20261128NH0000000001",
    "merchantPayKey": "sub-1-2026-11", "merchantUserKey": "user-42", "productName": "월간 구독",
    "admissionYmdt": "20261128091500", "admissionTypeCode": "01", "admissionState": "SUCCESS",
    "totalPayAmount": 9900, "primaryPayAmount": 9900, "npointPayAmount": 0,
    "taxScopeAmount": 9900, "taxExScopeAmount": 0, "primaryPayMeans": "CARD",
    "cardCorpCode": "C0", "someNewMember": {"nested": True},
}
START = datetime(2026, 11, 1, tzinfo=KST)
END = datetime(2026, 11, 28, tzinfo=KST)


@dataclass(frozen=True)
class Call:
    """One client method, valid arguments and what NAVER expects of that request."""

    method: str
    title: str  # how error messages name the API
    kwargs: dict[str, Any]
    path: str
    body: dict[str, Any]
    json_body: bool = False
    chain: str = "chain-recurrent"
    kind: str = "mutation"
    long_timeout: bool = False

    @property
    def key(self) -> str | None:
        """The idempotency key the call sends, if any."""
        return self.kwargs.get("idempotency_key")

    def invoke(self, client: NaverPayClient, **override: Any) -> Any:
        """Call the method with the example arguments (plus ``override``)."""
        return getattr(client, self.method)(**{**self.kwargs, **override})


CALLS = [
    Call("reserve_registration", "recurrent registration reserve",
         {"product_code": "PLAN-M", "product_name": "월간", "total_pay_amount": 9900,
          "return_url": "https://shop.test/return", "idempotency_key": "reg-reserve-1"},
         "recurrent/regist/v1/reserve", {"reserveId": "20261128dStTa2d=="}),
    Call("approve_registration", "recurrent registration approval",
         {"reserve_id": "20261128dStTa2d==", "temp_receipt_id": "20261128TP1",
          "idempotency_key": "reg-approve-1"},
         "recurrent/regist/v1/approval",
         {"recurrentId": "20261128RE1", "reserveId": "20261128dStTa2d==",
          "tempReceiptId": "20261128TP1", "actionType": "NEW"}),
    Call("expire_registration", "recurrent registration expire",
         {"recurrent_id": "20261128RE1", "reason": "해지", "idempotency_key": "expire-1"},
         "recurrent/expire/v1/request", {"recurrentId": "20261128RE1"}),
    Call("list_registrations", "recurrent registration list", {"recurrent_id": "20261128RE1"},
         "recurrent/v1/list",
         {"list": [{"recurrentId": "20261128RE1", "recurrentState": "VALID"}],
          "totalCount": 1, "totalPageCount": 1, "currentPageNumber": 1},
         json_body=True, kind="read"),
    Call("reserve_payment", "recurrent pay reserve",
         {"recurrent_id": "20261128RE1", "total_pay_amount": 9900, "tax_scope_amount": 9900,
          "tax_ex_scope_amount": 0, "product_name": "월간 구독",
          "merchant_pay_id": "sub-1-2026-11", "merchant_user_id": "user-42",
          "idempotency_key": "sub-1-c1-reserve"},
         "recurrent/pay/v3/reserve",
         {"recurrentId": "20261128RE1", "paymentId": "20261128NP0000000001"}),
    Call("approve_payment", "recurrent pay approval",
         {"recurrent_id": "20261128RE1", "payment_id": "20261128NP0000000001",
          "idempotency_key": "sub-1-c1-approve"},
         "recurrent/pay/v3/approval",
         {"recurrentId": "20261128RE1", "paymentId": "20261128NP0000000001", "detail": DETAIL},
         kind="approval", long_timeout=True),
    Call("apply_payment", "one-time payment apply",
         {"payment_id": "20261128NP0000000001", "idempotency_key": "apply-1"},
         "v2.2/apply/payment", {"paymentId": "20261128NP0000000001", "detail": DETAIL},
         chain="chain-onetime", kind="approval", long_timeout=True),
    Call("cancel_payment", "payment cancel",
         {"payment_id": "20261128NP0000000001", "cancel_amount": 1000, "tax_scope_amount": 1000,
          "tax_ex_scope_amount": 0, "reason": "환불", "idempotency_key": "cancel-1"},
         "v1/cancel",
         {"paymentId": "20261128NP0000000001", "payHistId": "20261128NH2",
          "totalRestAmount": 8900, "cancelYmdt": "20261128100000"},
         kind="cancel", long_timeout=True),
    Call("payment_history", "payment history", {"payment_id": "20261128NP0000000001"},
         "v2.2/list/history",
         {"list": [DETAIL], "totalCount": 1, "totalPageCount": 1, "currentPageNumber": 1},
         json_body=True, kind="read"),
    Call("history_by_time", "payment history", {"start": START, "end": END},
         "v2.2/list/history",
         {"list": [DETAIL], "totalCount": 1, "totalPageCount": 1, "currentPageNumber": 1},
         json_body=True, kind="read"),
    Call("purchase_confirm", "purchase confirm",
         {"payment_id": "20261128NP0000000001", "idempotency_key": "confirm-1"},
         "v1/purchase-confirm", {"confirmTime": "20261128120000"}),
    Call("save_naverpoint", "NAVER point accrual",
         {"payment_id": "20261128NP0000000001", "idempotency_key": "point-1"},
         "v1/naverpoint-save", {"paymentId": "20261128NP0000000001"}),
    Call("cash_amount", "cash receipt amount", {"payment_id": "20261128NP0000000001"},
         "v1/receipt/cash-amount",
         {"totalCashAmount": 9900, "supplyCashAmount": 9000, "vatCashAmount": 900},
         kind="read"),
]
CALLS_BY_METHOD = {call.method: call for call in CALLS}
MUTATING = [call for call in CALLS if call.kind != "read"]
READS = [call for call in CALLS if call.kind == "read"]
