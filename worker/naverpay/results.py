"""Typed results of NAVER Pay calls: small frozen dataclasses, one per answer shape.

Every top-level result keeps NAVER's ``code`` and ``message``, the whole parsed envelope as
``raw`` (NAVER adds members without notice; the engine stores a redacted copy) and
``replayed``: True when the answer came as an HTTP 409 idempotency replay of an earlier one.
Datetimes are timezone-aware (NAVER sends ``YYYYMMDDHHMMSS`` in Korean time). Money is ``int``
won. Optional members NAVER may omit are ``None``; building these from JSON is ``parsing``'s job.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = [
    "Approval",
    "Cancellation",
    "CashAmount",
    "HistoryPage",
    "NaverAnswer",
    "PaymentDetail",
    "PaymentReservation",
    "PointAccrual",
    "PurchaseConfirmation",
    "Registration",
    "RegistrationApproval",
    "RegistrationExpiry",
    "RegistrationPage",
    "RegistrationReservation",
]


@dataclass(frozen=True, kw_only=True)
class NaverAnswer:
    """What every top-level answer carries besides its own members."""

    code: str
    message: str
    raw: Mapping[str, Any] = field(repr=False, compare=False)
    replayed: bool = False


@dataclass(frozen=True, kw_only=True)
class RegistrationReservation(NaverAnswer):
    """``recurrent/regist/v1/reserve``: the id to open the registration page with."""

    reserve_id: str


@dataclass(frozen=True, kw_only=True)
class RegistrationApproval(NaverAnswer):
    """``recurrent/regist/v1/approval``: the new billing key (``recurrent_id``)."""

    recurrent_id: str
    reserve_id: str | None = None
    temp_receipt_id: str | None = None
    action_type: str | None = None
    pre_recurrent_id: str | None = None  # CHANGE: the registration this one replaced


@dataclass(frozen=True, kw_only=True)
class RegistrationExpiry(NaverAnswer):
    """``recurrent/expire/v1/request``: the registration that was ended."""

    recurrent_id: str


@dataclass(frozen=True, kw_only=True)
class Registration:
    """One row of the registration list."""

    recurrent_id: str
    product_code: str | None = None
    recurrent_state: str | None = None  # VALID / EXPIRED as far as anyone has seen
    primary_pay_means: str | None = None  # CARD / BANK
    regist_ymdt: datetime | None = None
    expire_ymdt: datetime | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True, kw_only=True)
class RegistrationPage(NaverAnswer):
    """``recurrent/v1/list``: one page of registrations."""

    registrations: list[Registration]
    total_count: int
    total_page_count: int
    current_page_number: int


@dataclass(frozen=True, kw_only=True)
class PaymentReservation(NaverAnswer):
    """``recurrent/pay/v3/reserve``: the ``payment_id`` to approve next."""

    recurrent_id: str
    payment_id: str


@dataclass(frozen=True, kw_only=True)
class PaymentDetail:
    """An approval ``detail``, or one row of payment history (approval or cancel event)."""

    payment_id: str
    total_pay_amount: int
    pay_hist_id: str | None = None
    merchant_pay_key: str | None = None  # for recurrent charges: our merchantPayId
    merchant_user_key: str | None = None
    product_name: str | None = None
    admission_ymdt: datetime | None = None
    admission_type_code: str | None = None  # 01 approval, 03 full cancel, 04 partial cancel
    admission_state: str | None = None  # SUCCESS / FAIL
    primary_pay_amount: int = 0
    npoint_pay_amount: int = 0
    tax_scope_amount: int | None = None
    tax_ex_scope_amount: int | None = None
    primary_pay_means: str | None = None
    merchant_pay_transaction_key: str | None = None  # our key of a cancel, on cancel rows
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True, kw_only=True)
class Approval(NaverAnswer):
    """``recurrent/pay/v3/approval`` or one-time ``apply/payment``; amounts are unchecked."""

    payment_id: str
    recurrent_id: str | None = None
    detail: PaymentDetail | None = None


@dataclass(frozen=True, kw_only=True)
class Cancellation(NaverAnswer):
    """``v1/cancel``. ``pending`` is True for ``CancelNotComplete`` (see the client's note)."""

    payment_id: str
    pay_hist_id: str  # "" while pending
    total_rest_amount: int | None
    pending: bool = False
    primary_pay_means: str | None = None
    primary_pay_cancel_amount: int | None = None
    primary_pay_rest_amount: int | None = None
    npoint_cancel_amount: int | None = None
    npoint_rest_amount: int | None = None
    tax_scope_amount: int | None = None
    tax_ex_scope_amount: int | None = None
    cancel_ymdt: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class HistoryPage(NaverAnswer):
    """``v2.2/list/history``: one page of approval and cancel rows."""

    rows: list[PaymentDetail]
    total_count: int
    total_page_count: int
    current_page_number: int


@dataclass(frozen=True, kw_only=True)
class PurchaseConfirmation(NaverAnswer):
    """``v1/purchase-confirm``."""

    confirm_time: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class PointAccrual(NaverAnswer):
    """``v1/naverpoint-save``."""

    payment_id: str


@dataclass(frozen=True, kw_only=True)
class CashAmount(NaverAnswer):
    """``v1/receipt/cash-amount``: what a cash receipt may be issued for."""

    total_cash_amount: int
    supply_cash_amount: int | None = None
    vat_cash_amount: int | None = None
