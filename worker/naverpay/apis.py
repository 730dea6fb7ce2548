"""The NAVER Pay endpoints the client calls, one constant each (naverpay-api.md section 3).

An ``Api`` holds everything that differs between endpoints: the path under
``{api_base}/{partner_id}/naverpay/payments/``, the body encoding, which partner id and chain id to send,
which read timeout applies and how failures are classified (``kind``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from worker.naverpay.errors import ApiKind

__all__ = ["Api"]


@dataclass(frozen=True)
class Api:
    """One NAVER Pay endpoint."""

    name: str  # stable metric/log label
    title: str  # for humans, at the start of every error message
    path: str
    kind: ApiKind
    json_body: bool = False  # else application/x-www-form-urlencoded
    # A one-time payment API: the one-time partner id (URL) and chain id (header) are sent
    # instead of the recurrent ones (NAVER issues separate ids for the two payment types).
    onetime: bool = False
    long_timeout: bool = False  # approval_timeout instead of read_timeout

    @property
    def mutating(self) -> bool:
        """Whether a repeat could change something (and so needs an idempotency key)."""
        return self.kind != "read"


REGIST_RESERVE: Final = Api(
    "regist_reserve", "recurrent registration reserve", "recurrent/regist/v1/reserve", "mutation"
)
REGIST_APPROVAL: Final = Api(
    "regist_approval", "recurrent registration approval", "recurrent/regist/v1/approval",
    "mutation",
)
EXPIRE: Final = Api(
    "regist_expire", "recurrent registration expire", "recurrent/expire/v1/request", "mutation"
)
REGIST_LIST: Final = Api(
    "regist_list", "recurrent registration list", "recurrent/v1/list", "read", json_body=True
)
PAY_RESERVE: Final = Api(
    "pay_reserve", "recurrent pay reserve", "recurrent/pay/v3/reserve", "mutation"
)
PAY_APPROVAL: Final = Api(
    "pay_approval", "recurrent pay approval", "recurrent/pay/v3/approval", "approval",
    long_timeout=True,
)
APPLY: Final = Api(
    "apply_payment", "one-time payment apply", "v2.2/apply/payment", "approval",
    onetime=True, long_timeout=True,
)
CANCEL: Final = Api("cancel", "payment cancel", "v1/cancel", "cancel", long_timeout=True)
CANCEL_ONETIME: Final = Api(
    "cancel", "payment cancel", "v1/cancel", "cancel", onetime=True, long_timeout=True
)
HISTORY: Final = Api(
    "history", "payment history", "v2.2/list/history", "read", json_body=True
)
PURCHASE_CONFIRM: Final = Api(
    "purchase_confirm", "purchase confirm", "v1/purchase-confirm", "mutation"
)
POINT_SAVE: Final = Api("naverpoint_save", "NAVER point accrual", "v1/naverpoint-save", "mutation")
CASH_AMOUNT: Final = Api(
    "cash_amount", "cash receipt amount", "v1/receipt/cash-amount", "read"
)
