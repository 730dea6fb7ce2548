"""A stateful, scripted NAVER Pay behind ``httpx.MockTransport``, for the property tests.

The real :class:`~worker.naverpay.client.NaverPayClient` talks to it, so NAVER's answers go
through the client's own wire format and error mapping. The fake keeps its own books, as
NAVER does:

* reservations (``paymentId`` -> payment with its ``merchantPayId``, amount, reservation
  window) and approvals (a SUCCESS history row), declines (a FAIL history row);
* the ``X-NaverPay-Idempotency-Key`` store: the first final answer of a key is replayed with
  HTTP 409; non-final answers (5xx, ``MaintenanceOngoing``, ``AlreadyOnGoing``) release the
  key; a key whose request is still being processed is answered ``AlreadyOnGoing``;
* registrations expired through ``recurrent/expire/v1/request`` (``recurrent/v1/list`` by
  recurrentId answers their state truthfully, unscripted).

What it answers is scripted per API (``reserve``, ``approve``, ``history``, ``expire``): each
request pops the next token of its API's script; an empty script (or ``healed``) answers
truthfully. Tokens (``TOKENS``) cover success, every customer decline, 5xx before NAVER acted,
5xx / a dropped connection / a timeout / an unreadable body AFTER NAVER committed, 401 and
``InvalidMerchant``, ``InvalidParameter``, unknown codes, ``AlreadyOnGoing``,
``AlreadyComplete``, an approval that NAVER commits only after the client gave up (``late*``,
within ``LATE_BOUND``),
the worker dying before or after NAVER acted (``crash_*``) and a duplicate run of the same
charge started while this request is in NAVER's hands (``dup``, ``stale_dup``).

Everything NAVER did is recorded for the invariants: approvals (with the simulated time and
whether the subscription was active when the request arrived), customer declines per
``merchantPayId``, expiries.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

import httpx

from worker.naverpay.kst import format_ymdt

BASE = "https://naver.test"
PARTNER = "np_partner"
CLIENT_ID = "prop-client"
GOOD_SECRET = "prop-secret-good"
CHAIN_ID = "prop-chain"
APPROVAL_TIMEOUT = 60.0  # the client's approval timeout: what a slow answer costs in time
READ_TIMEOUT = 10.0
RESERVE_WINDOW = timedelta(minutes=10)  # a reservation must be approved within this
# How long after our client gave up (APPROVAL_TIMEOUT) NAVER may still commit an approval it
# received. NAVER documents no bound; the engine assumes one (its settle window, two minutes in
# production) before it trusts an empty history, and this fake keeps to it: ``lateN`` commits N
# seconds after the request, N < APPROVAL_TIMEOUT + LATE_BOUND.
LATE_BOUND = timedelta(minutes=2)

CUSTOMER_DECLINES = ("NotEnoughAccountBalance", "OwnerAuthFail", "FaultCheckOngoing",
                     "BankMaintenance", "BankCheckTime", "Fail")

# Tokens by API. "ok" = answer truthfully. See the module docstring.
RESERVE_TOKENS = ("ok", "5xx", "maintenance", "drop_after", "timeout_after", "garbled_after",
                  "already_on_going", "auth401", "invalid_merchant", "invalid_parameter",
                  "unknown_code", "crash_before", "crash_after",
                  *(f"decline:{c}" for c in ("Fail", "NotEnoughAccountBalance")))
APPROVE_TOKENS = ("ok", "5xx", "maintenance", "5xx_after", "drop_after", "timeout_after",
                  "garbled_after", "already_on_going", "already_complete", "auth401",
                  "invalid_merchant", "invalid_parameter", "late90", "late150", "late179",
                  "crash_before", "crash_after", "dup", "stale_dup",
                  *(f"decline:{c}" for c in CUSTOMER_DECLINES))
HISTORY_TOKENS = ("ok", "5xx", "drop", "garbled", "maintenance", "auth401", "crash_before")
EXPIRE_TOKENS = ("ok", "5xx", "auth401", "invalid_parameter")
MERCHANT_SIDE_TOKENS = frozenset({"auth401", "invalid_merchant", "invalid_parameter", "unknown_code"})
LATE_TOKENS = frozenset({"late90", "late150", "late179"})


class Crash(BaseException):
    """The worker process died here (not an ``Exception``: nothing in the engine catches it)."""


@dataclass
class Payment:
    payment_id: str
    recurrent_id: str
    merchant_pay_id: str
    amount: int
    tax_scope: int
    tax_ex_scope: int
    product_name: str
    reserved_at: datetime
    state: str = "RESERVED"  # RESERVED | APPROVED | DECLINED | EXPIRED
    decline_code: str | None = None
    admitted_at: datetime | None = None
    pay_hist_id: str | None = None
    in_flight: bool = False  # an approval NAVER is still processing (late)

    @property
    def base(self) -> str:
        """The charge's merchant_pay_id (ours is ``{charge.merchant_pay_id}-{attempt}``)."""
        return self.merchant_pay_id.rsplit("-", 1)[0]


@dataclass(frozen=True)
class ApprovalEvent:
    """NAVER took the money."""

    payment_id: str
    recurrent_id: str
    merchant_pay_id: str
    amount: int
    at: datetime
    seq: int


@dataclass(frozen=True)
class ApprovalRequest:
    """An approval request reached NAVER (whatever came of it)."""

    payment_id: str
    recurrent_id: str
    merchant_pay_id: str
    at: datetime
    subscription_status: str | None  # as committed in the database when it arrived
    seq: int


@dataclass
class LateApproval:
    payment_id: str
    key_scope: tuple[str, str] | None
    lands_at: datetime


@dataclass
class FakeNaver:
    """NAVER Pay's books and a script of answers; ``__call__`` is the MockTransport handler."""

    clock: Callable[[], datetime]
    advance: Callable[[float], None]
    subscription_status: Callable[[str], str | None]
    on_dup: Callable[[str, bool], None] = lambda _payment_id, _stale: None
    scripts: dict[str, list[str]] = field(default_factory=dict)
    healed: bool = False
    payments: dict[str, Payment] = field(default_factory=dict)
    idempotency: dict[tuple[str, str], tuple[int, bytes] | None] = field(default_factory=dict)
    expired: dict[str, datetime] = field(default_factory=dict)
    late: list[LateApproval] = field(default_factory=list)
    landed_late: set[str] = field(default_factory=set)  # paymentIds approved after the client gave up
    # paymentIds for which an approval was answered AlreadyOnGoing because one was in NAVER's hands
    seen_in_flight: set[str] = field(default_factory=set)
    approvals: list[ApprovalEvent] = field(default_factory=list)
    approval_requests: list[ApprovalRequest] = field(default_factory=list)
    customer_declines: set[str] = field(default_factory=set)  # merchantPayIds NAVER declined
    expired_answers: set[str] = field(default_factory=set)  # merchantPayIds answered TimeExpired
    merchant_faults: int = 0
    requests: int = 0
    last_kind: str = "none"  # the API of the latest request (what a sleep right after follows)
    _seq: int = 0
    _ids: int = 0

    # -- the transport ----------------------------------------------------------------------

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests += 1
        self.land_due()
        api = request.url.path.split("/naverpay/payments/", 1)[1]
        fields = self._fields(request)
        kind = {"recurrent/pay/v3/reserve": "reserve", "recurrent/pay/v3/approval": "approve",
                "v2.2/list/history": "history", "recurrent/expire/v1/request": "expire",
                "recurrent/v1/list": "list"}[api]
        self.last_kind = kind
        token = self._next(kind)
        if token == "crash_before":
            raise Crash(f"worker died before {kind} reached NAVER")
        if token == "5xx":
            return self._answer(500, {"code": "InternalServerError", "message": "error"})
        if token == "auth401" or request.headers.get("x-naver-client-secret") != GOOD_SECRET:
            self.merchant_faults += 1
            return self._answer(401, {"code": "InvalidMerchant", "message": "인증 실패"})
        if token == "invalid_merchant":
            self.merchant_faults += 1
            return self._answer(200, {"code": "InvalidMerchant", "message": "인증 실패"})
        if token == "maintenance":
            return self._answer(200, {"code": "MaintenanceOngoing", "message": "점검 중"})
        key = request.headers.get("x-naverpay-idempotency-key")
        scope = (CLIENT_ID, key) if key else None
        if scope is not None and kind not in ("history", "list"):
            if scope in self.idempotency:
                stored = self.idempotency[scope]
                if stored is None:
                    if kind == "approve":
                        self.seen_in_flight.add(str(fields.get("paymentId")))
                    return self._answer(409, {"code": "AlreadyOnGoing", "message": "처리 중"})
                return httpx.Response(409, content=stored[1],
                                      headers={"content-type": "application/json"})
            self.idempotency[scope] = None  # claimed while this request runs
        handler = {"reserve": self._reserve, "approve": self._approve, "history": self._history,
                   "expire": self._expire, "list": self._list}[kind]
        try:
            status, doc, after = handler(fields, token, scope)
        except BaseException:
            self._release(scope)
            raise
        body = json.dumps(doc, ensure_ascii=False).encode()
        final = status < 500 and doc.get("code") not in ("MaintenanceOngoing", "AlreadyOnGoing")
        if scope is not None and kind not in ("history", "list"):
            if after in LATE_TOKENS:
                pass  # the claim stays open until the approval lands
            elif final and after != "5xx_after":  # NAVER's gateway failed: the key is released
                self.idempotency[scope] = (status, body)
            else:
                self._release(scope)
        return self._after(after, status, body, request)

    # -- the APIs ---------------------------------------------------------------------------

    def _reserve(self, f: dict[str, Any], token: str, _scope: Any) -> tuple[int, dict[str, Any], str]:
        if token == "invalid_parameter":
            self.merchant_faults += 1
            return 200, self._fail("InvalidParameter"), ""
        if token == "unknown_code":
            self.merchant_faults += 1
            return 200, self._fail("SomeCodeNaverJustAdded"), ""
        if token == "already_on_going":
            return 200, self._fail("AlreadyOnGoing"), ""
        rid = str(f["recurrentId"])
        if rid in self.expired or token.startswith("decline:"):
            code = token.split(":", 1)[1] if token.startswith("decline:") else "Fail"
            self.customer_declines.add(str(f["merchantPayId"]))
            return 200, self._fail(code), ""
        if int(f["taxScopeAmount"]) + int(f["taxExScopeAmount"]) != int(f["totalPayAmount"]):
            return 200, self._fail("InvalidParameter"), ""
        self._ids += 1
        payment = Payment(
            payment_id=f"NP{self._ids:08d}", recurrent_id=rid, merchant_pay_id=str(f["merchantPayId"]),
            amount=int(f["totalPayAmount"]), tax_scope=int(f["taxScopeAmount"]),
            tax_ex_scope=int(f["taxExScopeAmount"]), product_name=str(f["productName"]),
            reserved_at=self.clock())
        self.payments[payment.payment_id] = payment
        return 200, self._ok({"recurrentId": rid, "paymentId": payment.payment_id}), token

    def _approve(self, f: dict[str, Any], token: str, scope: Any) -> tuple[int, dict[str, Any], str]:
        payment = self.payments.get(str(f.get("paymentId")))
        if payment is None:
            return 200, self._fail("InvalidPaymentId"), ""
        self._seq += 1
        self.approval_requests.append(ApprovalRequest(
            payment.payment_id, payment.recurrent_id, payment.merchant_pay_id, self.clock(),
            self.subscription_status(payment.recurrent_id), self._seq))
        if payment.recurrent_id != f.get("recurrentId") or token == "invalid_parameter":
            self.merchant_faults += 1
            return 200, self._fail("InvalidParameter"), ""
        if token in ("dup", "stale_dup"):
            self.on_dup(payment.payment_id, token == "stale_dup")
            token = "ok"
        if payment.in_flight:
            self.seen_in_flight.add(payment.payment_id)
        if token == "already_on_going" or payment.in_flight:
            return 200, self._fail("AlreadyOnGoing"), ""
        self._expire_if_due(payment)
        if payment.state == "APPROVED":
            return 200, self._fail("AlreadyComplete"), ""
        if payment.state == "DECLINED":
            return 200, self._fail("Fail"), ""
        if payment.state == "EXPIRED":
            self.expired_answers.add(payment.merchant_pay_id)
            return 200, self._fail("TimeExpired"), ""
        if payment.recurrent_id in self.expired:
            self._decline(payment, "Fail")
            return 200, self._fail("Fail"), ""
        if token.startswith("decline:"):
            code = token.split(":", 1)[1]
            self._decline(payment, code)
            return 200, self._fail(code), ""
        if token in LATE_TOKENS:
            delay = float(token.removeprefix("late"))
            payment.in_flight = True
            # NAVER finishes it after the client gave up, but never past the reservation window.
            lands_at = min(self.clock() + timedelta(seconds=delay), payment.reserved_at + RESERVE_WINDOW)
            self.late.append(LateApproval(payment.payment_id, scope, lands_at))
            return 200, self._ok({}), token  # never sent: the client times out first
        self._commit(payment)
        if token == "already_complete":
            return 200, self._fail("AlreadyComplete"), ""
        return 200, self._ok(self._approval_body(payment)), token

    def _history(self, f: dict[str, Any], token: str, _scope: Any) -> tuple[int, dict[str, Any], str]:
        payment = self.payments.get(str(f.get("paymentId")))
        if payment is not None:
            self._expire_if_due(payment)
        if payment is None or payment.state not in ("APPROVED", "DECLINED"):
            return 200, {"code": "InvalidPaymentId", "message": "결제 내역 없음",
                         "body": {"list": [], "totalCount": 0}}, token
        row = self._detail(payment)
        return 200, self._ok({"list": [row], "totalCount": 1, "totalPageCount": 1,
                              "currentPageNumber": 1}), token

    def _expire(self, f: dict[str, Any], token: str, _scope: Any) -> tuple[int, dict[str, Any], str]:
        if token == "invalid_parameter":
            self.merchant_faults += 1
            return 200, self._fail("InvalidParameter"), ""
        rid = str(f["recurrentId"])
        self.expired.setdefault(rid, self.clock())
        return 200, self._ok({"recurrentId": rid}), ""

    def _list(self, f: dict[str, Any], _token: str, _scope: Any) -> tuple[int, dict[str, Any], str]:
        """``recurrent/v1/list`` by recurrentId (the charge engine's read before a retry),
        always truthful: VALID, or EXPIRED once expired through the expire API."""
        rid = str(f.get("recurrentId", ""))
        expired = self.expired.get(rid)
        row = {"recurrentId": rid, "recurrentState": "EXPIRED" if expired else "VALID",
               "expireYmdt": format_ymdt(expired) if expired else ""}
        return 200, self._ok({"list": [row], "totalCount": 1, "responseCount": 1,
                              "totalPageCount": 1, "currentPageNumber": 1}), ""

    # -- NAVER's books ----------------------------------------------------------------------

    def land_due(self, everything: bool = False) -> None:
        """Late approvals whose time has come are committed now (NAVER finished them)."""
        now = self.clock()
        for late in [x for x in self.late if everything or x.lands_at <= now]:
            self.late.remove(late)
            payment = self.payments[late.payment_id]
            payment.in_flight = False
            if payment.state == "RESERVED":
                self._commit(payment)
                self.landed_late.add(payment.payment_id)
                doc = self._ok(self._approval_body(payment))
            else:
                doc = self._fail("AlreadyComplete")
            if late.key_scope is not None:
                self.idempotency[late.key_scope] = (200, json.dumps(doc, ensure_ascii=False).encode())

    def _expire_if_due(self, payment: Payment) -> None:
        if payment.state == "RESERVED" and not payment.in_flight and \
                self.clock() > payment.reserved_at + RESERVE_WINDOW:
            payment.state = "EXPIRED"

    def _commit(self, payment: Payment) -> None:
        now = self.clock()
        payment.state, payment.admitted_at = "APPROVED", now
        payment.pay_hist_id = f"NH{payment.payment_id[2:]}"
        self._seq += 1
        self.approvals.append(ApprovalEvent(payment.payment_id, payment.recurrent_id,
                                            payment.merchant_pay_id, payment.amount, now, self._seq))

    def _decline(self, payment: Payment, code: str) -> None:
        payment.state, payment.decline_code, payment.admitted_at = "DECLINED", code, self.clock()
        payment.pay_hist_id = f"NH{payment.payment_id[2:]}"
        self.customer_declines.add(payment.merchant_pay_id)

    def _detail(self, payment: Payment) -> dict[str, Any]:
        assert payment.admitted_at is not None
        return {
            "paymentId": payment.payment_id, "payHistId": payment.pay_hist_id,
            "merchantPayKey": payment.merchant_pay_id, "merchantUserKey": "user",
            "productName": payment.product_name, "admissionYmdt": format_ymdt(payment.admitted_at),
            "admissionTypeCode": "01",
            "admissionState": "SUCCESS" if payment.state == "APPROVED" else "FAIL",
            "totalPayAmount": payment.amount, "primaryPayAmount": payment.amount,
            "npointPayAmount": 0, "taxScopeAmount": payment.tax_scope,
            "taxExScopeAmount": payment.tax_ex_scope, "primaryPayMeans": "CARD",
        }

    def _approval_body(self, payment: Payment) -> dict[str, Any]:
        return {"recurrentId": payment.recurrent_id, "paymentId": payment.payment_id,
                "detail": self._detail(payment)}

    # -- plumbing ---------------------------------------------------------------------------

    def _next(self, kind: str) -> str:
        script = self.scripts.get(kind)
        if self.healed or not script:
            return "ok"
        return script.pop(0)

    def _release(self, scope: tuple[str, str] | None) -> None:
        if scope is not None and self.idempotency.get(scope, 0) is None:
            del self.idempotency[scope]

    def _after(self, after: str, status: int, body: bytes, request: httpx.Request) -> httpx.Response:
        """What reaches the client of an answer NAVER produced (and stored)."""
        if after == "crash_after":
            raise Crash("worker died after NAVER acted")
        if after == "5xx_after":
            return self._answer(502, {"code": "BadGateway", "message": "upstream"})
        if after == "drop_after":
            raise httpx.RemoteProtocolError("connection dropped", request=request)
        if after in ("timeout_after", *LATE_TOKENS):
            self.advance(APPROVAL_TIMEOUT if "approval" in request.url.path else READ_TIMEOUT)
            raise httpx.ReadTimeout("read timed out", request=request)
        if after == "garbled_after":
            return httpx.Response(200, content=b"<html>502 Bad Gateway</html>",
                                  headers={"content-type": "text/html"})
        if after == "drop":  # a read whose answer is lost on its way back
            raise httpx.RemoteProtocolError("connection dropped", request=request)
        if after == "garbled":
            return httpx.Response(200, content=b"<html>proxy error</html>",
                                  headers={"content-type": "text/html"})
        return httpx.Response(status, content=body, headers={"content-type": "application/json"})

    @staticmethod
    def _answer(status: int, doc: dict[str, Any]) -> httpx.Response:
        return httpx.Response(status, json=doc)

    @staticmethod
    def _ok(body: dict[str, Any]) -> dict[str, Any]:
        return {"code": "Success", "message": "성공", "body": body}

    @staticmethod
    def _fail(code: str) -> dict[str, Any]:
        return {"code": code, "message": f"{code} (scripted)"}

    @staticmethod
    def _fields(request: httpx.Request) -> dict[str, Any]:
        content = request.content.decode()
        if request.headers.get("content-type", "").startswith("application/json"):
            return dict(json.loads(content or "{}"))
        return dict(parse_qsl(content))
