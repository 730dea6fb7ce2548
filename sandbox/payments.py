"""Payment rules: reserve, approve or decline, expire; the checks a charge must pass.

::

    pay/v3/reserve ─▶ RESERVED ─approval─▶ APPROVED            (history 01 SUCCESS)
                         │          └────▶ DECLINED            (history 01 FAIL; final)
                         └─ window passes ─▶ EXPIRED           (approval answers TimeExpired)

A one-time payment (``/_sandbox/onetime-payments``) starts RESERVED too: the buyer has
authenticated and ``v2.2/apply/payment`` must come within the one-time window.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sandbox.clock import IdFactory, ymdt
from sandbox.codes import ApiError, Code
from sandbox.config import SandboxConfig
from sandbox.history import HistoryLog
from sandbox.records import CHARGED_STATES, HistoryRow, Order, Payment, PaymentState, Registration


def check_order(order: Order, config: SandboxConfig) -> None:
    """Amount rules of a charge: tax split adds up, at least the minimum amount."""
    if order.tax_scope + order.tax_ex_scope != order.total:
        raise ApiError(
            Code.INVALID_PARAMETER, "과세 금액과 면세 금액의 합이 총 결제 금액과 다릅니다."
        )
    if order.total < config.min_amount:
        raise ApiError(
            Code.INVALID_PARAMETER, f"{config.min_amount}원 미만은 네이버페이로 결제할 수 없습니다."
        )


class PaymentBook:
    """All payments by paymentId, with the merchantPayId index for duplicate handling."""

    def __init__(self, config: SandboxConfig, ids: IdFactory, history: HistoryLog) -> None:
        self._config = config
        self._ids = ids
        self._history = history
        self.by_id: dict[str, Payment] = {}
        self._by_merchant_pay_id: dict[str, Payment] = {}

    def find(self, payment_id: str) -> Payment:
        """The payment ``payment_id``; ApiError InvalidPaymentId if there is none."""
        payment = self.by_id.get(payment_id)
        if payment is None:
            raise ApiError(Code.INVALID_PAYMENT_ID)
        return payment

    def find_charged(self, payment_id: str) -> Payment:
        """A payment whose money was taken (cancel, confirm, receipts); else InvalidPaymentId."""
        payment = self.find(payment_id)
        if payment.state not in CHARGED_STATES:
            raise ApiError(Code.INVALID_PAYMENT_ID)
        return payment

    def reserve(self, registration: Registration, order: Order, now: datetime) -> Payment:
        """``pay/v3/reserve``: a RESERVED payment (or the earlier one, per the duplicate mode)."""
        earlier = self._by_merchant_pay_id.get(order.merchant_pay_id)
        mode = self._config.duplicate_merchant_pay_id
        if earlier is not None and mode == "existing":
            return earlier
        if earlier is not None and mode == "reject":
            raise ApiError(Code.INVALID_PARAMETER, "이미 사용된 가맹점 주문번호(merchantPayId)입니다.")
        window = timedelta(seconds=self._config.reserve_window_seconds)
        payment = self._new(order, now, window, registration.recurrent_id)
        payment.pay_means = registration.behaviour.pay_means
        payment.card_corp_code = registration.behaviour.card_corp_code
        return payment

    def create_onetime(self, order: Order, now: datetime) -> Payment:
        """A one-time payment the buyer has authenticated, awaiting ``v2.2/apply/payment``."""
        window = timedelta(seconds=self._config.onetime_window_seconds)
        return self._new(order, now, window, None)

    def check_approvable(self, payment: Payment, now: datetime) -> None:
        """Raise the answer for a payment that cannot be approved now (and expire it if due)."""
        self.expire_if_due(payment, now)
        if payment.state in CHARGED_STATES:
            raise ApiError(Code.ALREADY_COMPLETE)
        if payment.state is PaymentState.DECLINED:
            raise ApiError(Code.FAIL, f"이미 승인이 거절된 결제입니다. ({payment.decline_code})")
        if payment.state is PaymentState.EXPIRED:
            raise ApiError(Code.TIME_EXPIRED)

    def expire_if_due(self, payment: Payment, now: datetime) -> None:
        """A RESERVED payment past its window becomes EXPIRED."""
        if payment.state is PaymentState.RESERVED and now > payment.expires_at:
            payment.state = PaymentState.EXPIRED

    def commit(self, payment: Payment, now: datetime) -> None:
        """Take the money: APPROVED, and a 01 SUCCESS history row."""
        payment.state = PaymentState.APPROVED
        self._admit(payment, now)
        payment.card_auth_no = self._ids.card_auth_no()
        payment.rest = payment.order.total
        payment.tax_scope_rest = payment.order.tax_scope
        payment.tax_ex_scope_rest = payment.order.tax_ex_scope
        self._history.add(HistoryRow(payment, payment.admission_ymdt or "", "01", True, now))

    def decline(self, payment: Payment, code: str, now: datetime) -> None:
        """Refuse the charge for good: DECLINED, and a 01 FAIL history row."""
        payment.state = PaymentState.DECLINED
        payment.decline_code = code
        self._admit(payment, now)
        self._history.add(HistoryRow(payment, payment.admission_ymdt or "", "01", False, now))

    def _admit(self, payment: Payment, now: datetime) -> None:
        payment.approved_at = now
        payment.admission_ymdt = ymdt(now)
        payment.pay_hist_id = self._ids.pay_hist_id(now)

    def _new(
        self, order: Order, now: datetime, window: timedelta, recurrent_id: str | None
    ) -> Payment:
        payment = Payment(
            payment_id=self._ids.payment_id(now), recurrent_id=recurrent_id, order=order,
            reserved_at=now, expires_at=now + window,
        )
        self.by_id[payment.payment_id] = payment
        self._by_merchant_pay_id[order.merchant_pay_id] = payment
        return payment
