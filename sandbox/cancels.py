"""Cancel rules (``v1/cancel``), in the order NAVER checks them (naverpay-api.md §3.7, §5.2).

::

    APPROVED ─cancel(all, first cancel)─▶ FULLY_CANCELLED (row 03)
    APPROVED ─cancel(part)─▶ PARTIALLY_CANCELLED (row 04) ─cancel(rest)─▶ FULLY_CANCELLED (row 04)
    any charged state ─cancel answered CancelNotComplete─▶ CANCEL_PENDING ─(delay)─▶ as above

A deferred (``CancelNotComplete``) cancel has no payHistId until it completes by itself; no
background task is needed: pending cancels are settled lazily whenever the payment, history or
the ledger is read, using the injected clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sandbox.clock import IdFactory, ymdt
from sandbox.codes import ApiError, Code
from sandbox.config import SandboxConfig
from sandbox.history import HistoryLog
from sandbox.records import Cancel, HistoryRow, Payment, PaymentState


@dataclass(frozen=True, slots=True)
class CancelRequest:
    """The fields of one ``v1/cancel`` call, already parsed."""

    amount: int
    tax_scope: int
    tax_ex_scope: int
    environment_deposit: int = 0
    reason: str = ""
    requester: str = "2"
    do_compare_rest: bool = False
    expected_rest: int | None = None
    transaction_key: str = ""


class CancelDesk:
    """Checks, accepts and (lazily) completes cancels; remembers which ones are pending."""

    def __init__(self, config: SandboxConfig, ids: IdFactory, history: HistoryLog) -> None:
        self._config = config
        self._ids = ids
        self._history = history
        self._pending: dict[str, Payment] = {}

    def settle_due(self, now: datetime) -> None:
        """Complete every deferred cancel whose delay has passed (before reads)."""
        for payment in list(self._pending.values()):
            self.settle(payment, now)

    def settle(self, payment: Payment, now: datetime) -> None:
        """Complete the deferred cancels of ``payment`` that are due."""
        for cancel in payment.cancels:
            if cancel.completes_at is not None and cancel.completes_at <= now:
                self._complete(payment, cancel, cancel.completes_at)

    def check(self, payment: Payment, request: CancelRequest, now: datetime) -> None:
        """Raise the answer NAVER gives to a cancel it refuses; checks run in NAVER's order."""
        self._check_sequence(payment, now)
        # AlreadyCanceled comes before RestAmountDiff and carries no rest amount (S4 measured).
        if payment.rest == 0:
            raise ApiError(Code.ALREADY_CANCELED)
        self._check_deadline(payment, now)
        if request.do_compare_rest and request.expected_rest != payment.rest - request.amount:
            raise ApiError(Code.REST_AMOUNT_DIFF, body=_rest_body(payment))
        if request.tax_scope + request.tax_ex_scope + request.environment_deposit != request.amount:
            raise ApiError(Code.TAX_SCOPE_AMOUNT_ERROR)
        if request.amount > payment.rest:
            raise ApiError(Code.OVER_REMAIN_AMOUNT)
        if (request.tax_scope > payment.tax_scope_rest
                or request.tax_ex_scope > payment.tax_ex_scope_rest
                or request.environment_deposit > 0):  # no payment here carries a cup deposit
            raise ApiError(Code.TAX_SCOPE_GREATER_THAN_REMAIN)

    def accept(
        self, payment: Payment, request: CancelRequest, now: datetime, *, deferred: bool
    ) -> Cancel:
        """Book a checked cancel; ``deferred`` answers CancelNotComplete and completes later."""
        first_and_full = not payment.cancels and request.amount == payment.order.total
        payment.rest -= request.amount
        payment.tax_scope_rest -= request.tax_scope
        payment.tax_ex_scope_rest -= request.tax_ex_scope
        cancel = Cancel(
            amount=request.amount, tax_scope=request.tax_scope,
            tax_ex_scope=request.tax_ex_scope, environment_deposit=request.environment_deposit,
            type_code="03" if first_and_full else "04", reason=request.reason,
            requester=request.requester, transaction_key=request.transaction_key,
            requested_ymdt=ymdt(now), visible_at=now, rest_after=payment.rest,
        )
        payment.cancels.append(cancel)
        if deferred:
            cancel.completes_at = now + timedelta(seconds=self._config.cancel_not_complete_seconds)
            payment.state = PaymentState.CANCEL_PENDING
            self._pending[payment.payment_id] = payment
        else:
            self._complete(payment, cancel, now)
        return cancel

    def _check_sequence(self, payment: Payment, now: datetime) -> None:
        # A cancel that is pending, or done but not yet in history, blocks the next one.
        if payment.cancels:
            last = payment.cancels[-1]
            if last.completes_at is not None or last.visible_at > now:
                raise ApiError(Code.PRE_CANCEL_NOT_COMPLETE)

    def _check_deadline(self, payment: Payment, now: datetime) -> None:
        days = self._config.cancel_deadline_days
        if days is not None and payment.approved_at is not None:
            if now > payment.approved_at + timedelta(days=days):
                raise ApiError(Code.CANCEL_DEADLINE_EXPIRED)

    def _complete(self, payment: Payment, cancel: Cancel, at: datetime) -> None:
        cancel.completes_at = None
        cancel.pay_hist_id = self._ids.pay_hist_id(at)
        cancel.completed_ymdt = ymdt(at)
        cancel.visible_at = at + timedelta(seconds=self._config.cancel_reflect_seconds)
        if not any(c.completes_at is not None for c in payment.cancels):
            self._pending.pop(payment.payment_id, None)
            payment.state = (
                PaymentState.FULLY_CANCELLED if payment.rest == 0
                else PaymentState.PARTIALLY_CANCELLED
            )
        self._history.add(
            HistoryRow(payment, cancel.completed_ymdt, cancel.type_code, True, cancel.visible_at,
                       cancel)
        )


def _rest_body(payment: Payment) -> dict[str, object]:
    # RestAmountDiff answers carry NAVER's own remaining amount (S4 measured).
    return {
        "paymentId": payment.payment_id,
        "totalRestAmount": payment.rest,
        "primaryPayRestAmount": payment.rest,
        "npointRestAmount": 0,
        "taxScopeRestAmount": payment.tax_scope_rest,
        "taxExScopeRestAmount": payment.tax_ex_scope_rest,
    }
