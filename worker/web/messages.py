"""What the customer reads when a registration does not complete, in plain Korean.

NAVER's window returns ``resultCode=Fail`` with a ``resultMessage`` that its guide says the
merchant must explain to the customer ("실패 사유 메시지 (사용자 안내 필요)"); our own
refusals (an expired or forged return, a payment in progress) get a message here too. Keys are
NAVER's ``resultMessage`` values (both spellings of userCancel) and our outcome codes.
"""

from __future__ import annotations

from typing import Final

NAVER_RESULTS: Final = {
    "userCancel": "네이버페이 결제수단 등록을 취소하셨습니다. 구독하시려면 다시 시도해 주세요.",
    "UserCancel": "네이버페이 결제수단 등록을 취소하셨습니다. 구독하시려면 다시 시도해 주세요.",
    "paymentTimeExpire": "등록 가능 시간이 지났습니다. 처음부터 다시 시도해 주세요.",
    "OwnerAuthFail": ("본인 명의의 카드나 계좌만 등록할 수 있습니다. "
                      "본인 명의의 결제수단으로 다시 시도해 주세요."),
    "minAmountUnder": "결제 금액이 네이버페이 최소 금액보다 적어 등록할 수 없습니다.",
    "webhookFail": "가맹점 처리 중 문제가 생겼습니다. 잠시 후 다시 시도해 주세요.",
}

OURS: Final = {
    "state_expired": "등록 요청 시간이 지났습니다. 처음부터 다시 시도해 주세요.",
    "state_invalid": "잘못된 요청입니다. 처음부터 다시 시도해 주세요.",
    "state_used": "이미 처리된 등록 요청입니다. 구독 상태를 확인해 주세요.",
    "forged_return": "잘못된 요청입니다. 등록 정보가 일치하지 않습니다.",
    "missing_result": "네이버페이에서 받은 등록 결과가 올바르지 않습니다. 처음부터 다시 시도해 주세요.",
    "pending": "등록을 처리하고 있습니다. 잠시 후 구독 상태를 확인해 주세요. 등록만으로는 결제되지 않습니다.",
    "approval_failed": "네이버페이에서 결제수단 등록을 완료하지 못했습니다. 처음부터 다시 시도해 주세요.",
    "change_busy": "지금은 결제가 진행 중이어서 결제수단을 바꿀 수 없습니다. 잠시 후 다시 시도해 주세요.",
    "change_not_allowed": "이 구독은 지금 결제수단을 변경할 수 없는 상태입니다. 고객센터로 문의해 주세요.",
    "change_stale": "이미 결제수단이 변경된 구독입니다. 처음부터 다시 시도해 주세요.",
    "internal": "등록을 마무리하지 못했습니다. 고객센터로 문의해 주세요. 중복 결제는 일어나지 않습니다.",
}

GENERIC_NAVER_FAILURE: Final = "네이버페이 결제수단 등록에 실패했습니다. 다시 시도해 주세요."


def for_customer(code: str | None) -> str:
    """The Korean sentence for a NAVER ``resultMessage`` or one of our outcome codes."""
    if code is None:
        return GENERIC_NAVER_FAILURE
    return NAVER_RESULTS.get(code) or OURS.get(code) or GENERIC_NAVER_FAILURE
