"""The one table of NAVER Pay result codes and messages, and the answer every API returns.

NAVER answers ``{"code", "message", "body"}``; business failures travel with HTTP 200, and only
``code == "Success"`` is a success (naverpay-api.md §1.3, §1.9). Messages are Korean, as NAVER's
are. Pure logic raises :class:`ApiError`; the HTTP layer turns an :class:`Answer` into bytes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Code(StrEnum):
    """Result codes the sandbox emits (a scripted decline may use any other string too)."""

    SUCCESS = "Success"
    FAIL = "Fail"
    REQUIRE_PARAMETER = "RequireParameter"
    INVALID_PARAMETER = "InvalidParameter"
    INVALID_MERCHANT = "InvalidMerchant"
    INVALID_MERCHANT_TYPE = "InvalidMerchantType"
    MAINTENANCE_ONGOING = "MaintenanceOngoing"
    TIME_EXPIRED = "TimeExpired"
    ALREADY_ON_GOING = "AlreadyOnGoing"
    ALREADY_COMPLETE = "AlreadyComplete"
    OWNER_AUTH_FAIL = "OwnerAuthFail"
    BANK_MAINTENANCE = "BankMaintenance"
    NOT_ENOUGH_ACCOUNT_BALANCE = "NotEnoughAccountBalance"
    FAULT_CHECK_ONGOING = "FaultCheckOngoing"
    INVALID_PAYMENT_ID = "InvalidPaymentId"
    ALREADY_CANCELED = "AlreadyCanceled"
    OVER_REMAIN_AMOUNT = "OverRemainAmount"
    PRE_CANCEL_NOT_COMPLETE = "PreCancelNotComplete"
    CANCEL_DEADLINE_EXPIRED = "CancelDeadlineExpired"
    TAX_SCOPE_GREATER_THAN_REMAIN = "TaxScopeAmtGreaterThanRemainError"
    TAX_SCOPE_AMOUNT_ERROR = "TaxScopeAmountError"
    REST_AMOUNT_DIFF = "RestAmountDiff"
    CANCEL_NOT_COMPLETE = "CancelNotComplete"
    REQUIRE_CONDITION = "RequireCondition"
    TIME_CONDITION_ERROR = "TimeConditionError"
    # Not NAVER codes: bodies of transport-level answers (5xx, 404), which clients judge by status.
    SERVER_ERROR = "ServerError"
    NOT_FOUND = "NotFound"


MESSAGES: Mapping[str, str] = {
    Code.SUCCESS: "성공",
    Code.FAIL: "결제에 실패했습니다.",
    Code.REQUIRE_PARAMETER: "필수 파라미터가 누락되었습니다.",
    Code.INVALID_PARAMETER: "파라미터 값이 유효하지 않습니다.",
    Code.INVALID_MERCHANT: "유효하지 않은 가맹점입니다.",
    Code.INVALID_MERCHANT_TYPE: "네이버페이 포인트 적립이 허용되지 않은 가맹점입니다.",
    Code.MAINTENANCE_ONGOING: "네이버페이 서비스 점검 중입니다. 잠시 후 다시 시도해 주세요.",
    Code.TIME_EXPIRED: "결제 승인 가능 시간이 지났습니다.",
    Code.ALREADY_ON_GOING: "해당 결제번호로 요청이 진행 중입니다.",
    Code.ALREADY_COMPLETE: "이미 완료된 결제입니다.",
    Code.OWNER_AUTH_FAIL: "타인 명의의 결제수단은 사용할 수 없습니다.",
    Code.BANK_MAINTENANCE: "은행 점검 시간입니다.",
    Code.NOT_ENOUGH_ACCOUNT_BALANCE: "계좌 잔액이 부족합니다.",
    Code.FAULT_CHECK_ONGOING: "결제수단 장애 점검 중입니다.",
    Code.INVALID_PAYMENT_ID: "유효하지 않은 네이버페이 결제번호입니다.",
    Code.ALREADY_CANCELED: "이미 전체 취소된 결제입니다.",
    Code.OVER_REMAIN_AMOUNT: "취소 요청 금액이 취소 가능 금액보다 큽니다.",
    Code.PRE_CANCEL_NOT_COMPLETE: "이전 취소 요청이 아직 완료되지 않았습니다.",
    Code.CANCEL_DEADLINE_EXPIRED: "취소 가능 기한이 지났습니다.",
    Code.TAX_SCOPE_GREATER_THAN_REMAIN: "과세/면세 취소 금액이 남은 과세/면세 금액보다 큽니다.",
    Code.TAX_SCOPE_AMOUNT_ERROR: "과세 금액과 면세 금액의 합이 취소 금액과 다릅니다.",
    Code.REST_AMOUNT_DIFF: "기대 잔여 금액이 네이버페이의 잔여 금액과 다릅니다.",
    Code.CANCEL_NOT_COMPLETE: "취소가 아직 완료되지 않았습니다. 잠시 후 자동으로 재처리됩니다.",
    Code.REQUIRE_CONDITION: "조회 조건이 올바르지 않습니다.",
    Code.TIME_CONDITION_ERROR: "조회 기간은 최대 31일입니다.",
    Code.SERVER_ERROR: "일시적인 서버 오류입니다.",
    Code.NOT_FOUND: "존재하지 않는 API입니다.",
}

NON_FINAL_CODES = frozenset({Code.MAINTENANCE_ONGOING, Code.ALREADY_ON_GOING})
"""Answers that say "not now" rather than report an outcome (never stored by default)."""


@dataclass(frozen=True, slots=True)
class Answer:
    """One API answer before encoding: envelope fields plus the HTTP status."""

    code: str
    message: str
    body: Mapping[str, Any] | None = None
    status: int = 200

    @property
    def final(self) -> bool:
        """True when the answer reports an outcome a retry could not change."""
        return self.status < 500 and self.code not in NON_FINAL_CODES

    def encode(self, extra_fields: bool = False) -> bytes:
        """The JSON bytes sent (and replayed byte for byte on an idempotent repeat)."""
        envelope: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.body is not None:
            envelope["body"] = dict(self.body)
            if extra_fields:  # NAVER may add fields without a version bump (§1.3)
                envelope["body"]["sandboxExtraField"] = "ignore-me"
        if extra_fields:
            envelope["sandboxExtraMember"] = {"note": "unknown members must be ignored"}
        return json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode()


def ok(body: Mapping[str, Any]) -> Answer:
    """A ``Success`` answer."""
    return Answer(Code.SUCCESS, MESSAGES[Code.SUCCESS], body)


def fail(
    code: str, message: str | None = None, body: Mapping[str, Any] | None = None, status: int = 200
) -> Answer:
    """A failure answer; the message defaults to the table's text for ``code``."""
    text = message if message is not None else MESSAGES.get(code, MESSAGES[Code.FAIL])
    return Answer(code, text, body, status)


def server_error(status: int) -> Answer:
    """An HTTP 5xx answer (nothing was charged or changed)."""
    return fail(Code.SERVER_ERROR, status=status)


class ApiError(Exception):
    """Raised by state logic to answer with a failure code; the HTTP layer sends its answer."""

    def __init__(
        self, code: str, message: str | None = None, body: Mapping[str, Any] | None = None
    ) -> None:
        self.answer = fail(code, message, body)
        super().__init__(f"{self.answer.code}: {self.answer.message}")
