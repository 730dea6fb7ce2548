"""The records NAVER would keep: registrations, their reservations, payments, cancels, history.

Plain mutable dataclasses; the books in ``registrations``, ``payments`` and ``cancels`` own the
rules that change them. Times NAVER shows are kept as ``YYYYMMDDHHMMSS`` KST strings; times the
sandbox compares against a deadline are kept as aware datetimes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from sandbox.behaviour import Behaviour


class RegistrationState(StrEnum):
    """``recurrentState`` of a registration."""

    VALID = "VALID"
    EXPIRED = "EXPIRED"


class ReservationState(StrEnum):
    """Progress of a registration page opened with ``regist/v1/reserve``."""

    RESERVED = "RESERVED"
    AUTHORIZED = "AUTHORIZED"
    APPROVED = "APPROVED"
    CANCELED = "CANCELED"  # the user canceled in the window, or its time ran out


class PaymentState(StrEnum):
    """Where a payment is in its life (see the package docstring for the transitions)."""

    RESERVED = "RESERVED"
    APPROVED = "APPROVED"
    DECLINED = "DECLINED"
    EXPIRED = "EXPIRED"
    PARTIALLY_CANCELLED = "PARTIALLY_CANCELLED"
    FULLY_CANCELLED = "FULLY_CANCELLED"
    CANCEL_PENDING = "CANCEL_PENDING"


CHARGED_STATES = frozenset({
    PaymentState.APPROVED, PaymentState.PARTIALLY_CANCELLED, PaymentState.FULLY_CANCELLED,
    PaymentState.CANCEL_PENDING,
})
"""States of a payment whose money was taken (cancel, confirm and history apply to these)."""


@dataclass(slots=True, eq=False)
class Registration:
    """A billing key (``recurrentId``) and the test script its approvals follow."""

    recurrent_id: str
    merchant_user_id: str
    product_code: str
    product_name: str
    regist_ymdt: str
    behaviour: Behaviour
    state: RegistrationState = RegistrationState.VALID
    expire_ymdt: str | None = None
    expire_reason: str | None = None
    expire_requester: str | None = None
    expire_calls: int = 0  # expire/v1/request calls naming it (a second one is refused)


@dataclass(slots=True, eq=False)
class Reservation:
    """A registration page: reserved, completed by the "user", then approved into a key."""

    reserve_id: str
    action_type: str
    target_recurrent_id: str | None
    product_code: str
    product_name: str
    total_pay_amount: int
    return_url: str
    merchant_user_id: str
    state: ReservationState = ReservationState.RESERVED
    temp_receipt_id: str | None = None
    recurrent_id: str | None = None
    behaviour: Behaviour = field(default_factory=Behaviour)
    opened_at: datetime | None = None  # when the registration window opened (its time limit)
    client_id: str | None = None  # the merchant whose window it is (SDK's clientId)


@dataclass(frozen=True, slots=True)
class Order:
    """What a merchant asks to charge (recurrent reserve or a one-time payment)."""

    total: int
    tax_scope: int
    tax_ex_scope: int
    product_name: str
    merchant_pay_id: str
    merchant_user_id: str
    use_cfm_ymdt: str = ""


@dataclass(slots=True, eq=False)
class Cancel:
    """One cancel of a payment (a history row 03/04 once it is complete)."""

    amount: int
    tax_scope: int
    tax_ex_scope: int
    environment_deposit: int
    type_code: str
    reason: str
    requester: str
    transaction_key: str
    requested_ymdt: str
    visible_at: datetime  # history shows the row from then on (reflection lag)
    pay_hist_id: str = ""  # "" while CancelNotComplete
    completes_at: datetime | None = None  # set while pending
    completed_ymdt: str | None = None
    rest_after: int = 0


@dataclass(slots=True, eq=False)
class Payment:
    """A paymentId: its order, its approval, and what is left to cancel."""

    payment_id: str
    recurrent_id: str | None  # None for a one-time payment
    order: Order
    reserved_at: datetime
    expires_at: datetime
    pay_means: str = "CARD"
    card_corp_code: str = "C0"
    state: PaymentState = PaymentState.RESERVED
    decline_code: str | None = None
    approved_at: datetime | None = None
    admission_ymdt: str | None = None
    pay_hist_id: str | None = None
    card_auth_no: str = ""
    approval_requests: int = 0
    rest: int = 0
    tax_scope_rest: int = 0
    tax_ex_scope_rest: int = 0
    cancels: list[Cancel] = field(default_factory=list)
    trade_confirm_ymdt: str | None = None
    point_saved: bool = False
    confirm_requests: int = 0  # purchase confirms that took effect (tests: never more than 1)
    accrual_requests: int = 0  # point accruals that took effect (tests: never more than 1)


@dataclass(slots=True, eq=False)
class HistoryRow:
    """One event in payment history: approval (01, SUCCESS or FAIL) or cancel (03/04)."""

    payment: Payment
    ymdt: str
    type_code: str
    success: bool
    visible_at: datetime
    cancel: Cancel | None = None
