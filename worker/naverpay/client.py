"""``NaverPayClient``: the NAVER Pay merchant server APIs as typed methods.

One client per worker process, created at process start; it owns one httpx transport
(connection pool) and is safe to share between threads. Methods take keyword arguments only,
validate what can be checked locally (idempotency keys, time windows) before sending, and
return the small dataclasses of ``results`` or raise the classes of ``errors``. The client
never decides money questions: approvals come back with their detail and the engine compares
amounts; unknown outcomes are for the engine to resolve through ``payment_history``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from types import TracebackType
from typing import Literal, Self

import httpx

from worker.naverpay import apis, parsing
from worker.naverpay import results as r
from worker.naverpay.config import NaverPayConfig
from worker.naverpay.kst import check_window, format_ymdt
from worker.naverpay.wire import Observer, Wire

__all__ = ["NaverPayClient"]

Requester = Literal["1", "2"]  # 1 buyer, 2 merchant admin ("if unclear, 2")


class NaverPayClient:
    """Calls NAVER Pay (or the sandbox) at ``config.api_base`` with ``config``'s credentials.

    ``transport`` replaces the network (``httpx.MockTransport`` in unit tests).
    ``observer(api_name, elapsed_seconds, code_or_None)`` is called after every call, also
    failed ones (``None`` when no NAVER code was read); its exceptions are logged, not raised.
    Mutating calls send ``X-NaverPay-Idempotency-Key``: pass the same key on every retry of
    one logical request, so that NAVER replays its first answer instead of acting twice.
    """

    def __init__(
        self,
        config: NaverPayConfig,
        *,
        transport: httpx.BaseTransport | None = None,
        observer: Observer | None = None,
    ) -> None:
        self._config = config
        self._wire = Wire(config, transport, observer)

    def __repr__(self) -> str:
        return (f"NaverPayClient(api_base={self._config.api_base!r}, "
                f"client_id={self._config.client_id!r})")

    def close(self) -> None:
        """Close the connection pool; the client is unusable afterwards."""
        self._wire.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- registration (no money moves) ---------------------------------------------------

    def reserve_registration(
        self, *, product_code: str, product_name: str, total_pay_amount: int, return_url: str,
        action_type: Literal["NEW", "CHANGE"] = "NEW", target_recurrent_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> r.RegistrationReservation:
        """Start a registration; the customer then opens NAVER's page with ``reserve_id``.

        ``total_pay_amount`` is only displayed. CHANGE replaces ``target_recurrent_id``.
        """
        if (action_type == "CHANGE") != (target_recurrent_id is not None):
            raise ValueError("target_recurrent_id is required with CHANGE and only with CHANGE")
        fields = {"actionType": action_type, "targetRecurrentId": target_recurrent_id,
                  "productCode": product_code, "productName": product_name,
                  "totalPayAmount": total_pay_amount, "returnUrl": return_url}
        return self._wire.call(apis.REGIST_RESERVE, fields, parsing.registration_reservation,
                               idempotency_key=idempotency_key)

    def approve_registration(
        self, *, reserve_id: str, temp_receipt_id: str, idempotency_key: str
    ) -> r.RegistrationApproval:
        """Complete a registration (ids from the return URL); yields the ``recurrent_id``."""
        fields = {"reserveId": reserve_id, "tempReceiptId": temp_receipt_id}
        return self._wire.call(apis.REGIST_APPROVAL, fields, parsing.registration_approval,
                               idempotency_key=idempotency_key)

    def expire_registration(
        self, *, recurrent_id: str, reason: str, idempotency_key: str, requester: Requester = "2"
    ) -> r.RegistrationExpiry:
        """End a registration: no further charges are possible with ``recurrent_id``."""
        fields = {"recurrentId": recurrent_id, "expireRequester": requester,
                  "expireReason": reason}
        return self._wire.call(apis.EXPIRE, fields,
                               lambda env: parsing.registration_expiry(env, recurrent_id),
                               idempotency_key=idempotency_key)

    def list_registrations(
        self, *, recurrent_id: str | None = None, start: datetime | None = None,
        end: datetime | None = None, state: Literal["VALID", "EXPIRED", "ALL"] = "ALL",
        page: int = 1, rows_per_page: int = 20,
    ) -> r.RegistrationPage:
        """One page of registrations: one ``recurrent_id``, or those registered in a window."""
        fields = _page_fields(page, rows_per_page)
        fields["state"] = state
        if recurrent_id is not None:
            fields["recurrentId"] = recurrent_id  # NAVER then ignores the window and paging
        else:
            fields.update(_window_fields(start, end))
        return self._wire.call(apis.REGIST_LIST, fields,
                               lambda env: parsing.registration_page(env, page))

    def iter_registrations(
        self, *, recurrent_id: str | None = None, start: datetime | None = None,
        end: datetime | None = None, state: Literal["VALID", "EXPIRED", "ALL"] = "ALL",
        rows_per_page: int = 20,
    ) -> Iterator[r.Registration]:
        """Every registration ``list_registrations`` would return, page after page."""
        page = 1
        while True:
            result = self.list_registrations(recurrent_id=recurrent_id, start=start, end=end,
                                             state=state, page=page, rows_per_page=rows_per_page)
            yield from result.registrations
            if not result.registrations or page >= result.total_page_count:
                return
            page += 1

    # -- charging --------------------------------------------------------------------------

    def reserve_payment(
        self, *, recurrent_id: str, total_pay_amount: int, tax_scope_amount: int,
        tax_ex_scope_amount: int, product_name: str, merchant_pay_id: str,
        merchant_user_id: str, idempotency_key: str, use_cfm_ymdt: str | None = None,
    ) -> r.PaymentReservation:
        """Reserve one charge of a registration; nothing is charged until ``approve_payment``.

        ``use_cfm_ymdt`` is ``yyyymmdd``, only for contracts that need a service date.
        """
        fields = {"recurrentId": recurrent_id, "totalPayAmount": total_pay_amount,
                  "taxScopeAmount": tax_scope_amount, "taxExScopeAmount": tax_ex_scope_amount,
                  "productName": product_name, "merchantPayId": merchant_pay_id,
                  "merchantUserId": merchant_user_id, "useCfmYmdt": use_cfm_ymdt}
        return self._wire.call(apis.PAY_RESERVE, fields,
                               lambda env: parsing.payment_reservation(env, recurrent_id),
                               idempotency_key=idempotency_key)

    def approve_payment(
        self, *, recurrent_id: str, payment_id: str, idempotency_key: str
    ) -> r.Approval:
        """Charge a reserved payment. On ``UnknownOutcomeError`` read history; never re-approve
        with a new key (NAVER answers AlreadyComplete without the detail)."""
        fields = {"recurrentId": recurrent_id, "paymentId": payment_id}
        return self._wire.call(apis.PAY_APPROVAL, fields, parsing.approval,
                               idempotency_key=idempotency_key)

    def apply_payment(self, *, payment_id: str, idempotency_key: str) -> r.Approval:
        """Approve a one-time payment the buyer authorised (within NAVER's 10 minutes)."""
        return self._wire.call(apis.APPLY, {"paymentId": payment_id}, parsing.approval,
                               idempotency_key=idempotency_key)

    def cancel_payment(
        self, *, payment_id: str, cancel_amount: int, tax_scope_amount: int,
        tax_ex_scope_amount: int, reason: str, idempotency_key: str, requester: Requester = "2",
        expected_rest_amount: int | None = None, merchant_pay_transaction_key: str | None = None,
        environment_deposit_amount: int | None = None, onetime: bool = False,
    ) -> r.Cancellation:
        """Refund all or part of a payment.

        ``expected_rest_amount`` (what should remain after this cancel) makes NAVER compare
        (``doCompareRest=1``) and answer RestAmountDiff, with its own figure in the error's
        ``body``, when they differ. ``onetime`` sends the one-time chain id: a cancel must
        carry the chain id the payment was made with.

        ``CancelNotComplete`` returns ``pending=True`` instead of raising. Its meaning is
        disputed (naverpay-api.md 3.7): older texts say "request again", newer ones and
        integrators since 2021 say NAVER finishes it by itself. Either way a *new* cancel
        risks a double refund, so: do not send one; watch history for the cancel row, and
        only resend with the same idempotency key if it never appears.
        """
        fields = {"paymentId": payment_id, "cancelAmount": cancel_amount,
                  "cancelReason": reason, "cancelRequester": requester,
                  "taxScopeAmount": tax_scope_amount, "taxExScopeAmount": tax_ex_scope_amount,
                  "environmentDepositAmount": environment_deposit_amount,
                  "merchantPayTransactionKey": merchant_pay_transaction_key}
        if expected_rest_amount is not None:
            fields.update(doCompareRest=1, expectedRestAmount=expected_rest_amount)
        api = apis.CANCEL_ONETIME if onetime else apis.CANCEL
        return self._wire.call(
            api, fields,
            lambda env: parsing.cancellation(env, payment_id,
                                             pending=env.code == "CancelNotComplete"),
            idempotency_key=idempotency_key, accept=("CancelNotComplete",))

    # -- reading -----------------------------------------------------------------------------

    def payment_history(self, *, payment_id: str) -> r.HistoryPage:
        """Every approval/cancel row of one payment: how unknown outcomes are resolved.

        A payment whose approval was never attempted yields an EMPTY page: NAVER answers
        InvalidPaymentId for it (HTTP 200, empty list), which here is an answer, not an error.
        """
        return self._wire.call(apis.HISTORY, {"paymentId": payment_id},
                               lambda env: parsing.history_page(env, 1),
                               accept=("InvalidPaymentId",))

    def history_by_time(
        self, *, start: datetime, end: datetime,
        approval_type: Literal["ALL", "APPROVAL", "CANCEL", "CANCEL_FAIL"] = "ALL",
        page: int = 1, rows_per_page: int = 100,
    ) -> r.HistoryPage:
        """One page of every payment event in ``start..end`` (at most 31 days)."""
        fields = {**_window_fields(start, end), **_page_fields(page, rows_per_page),
                  "approvalType": approval_type}
        return self._wire.call(apis.HISTORY, fields, lambda env: parsing.history_page(env, page))

    def iter_history(
        self, *, start: datetime, end: datetime,
        approval_type: Literal["ALL", "APPROVAL", "CANCEL", "CANCEL_FAIL"] = "ALL",
        rows_per_page: int = 100,
    ) -> Iterator[r.PaymentDetail]:
        """Every row ``history_by_time`` would return, page after page."""
        page = 1
        while True:
            result = self.history_by_time(start=start, end=end, approval_type=approval_type,
                                          page=page, rows_per_page=rows_per_page)
            yield from result.rows
            if not result.rows or page >= result.total_page_count:
                return
            page += 1

    def cash_amount(self, *, payment_id: str) -> r.CashAmount:
        """How much of a payment a cash receipt may be issued for."""
        return self._wire.call(apis.CASH_AMOUNT, {"paymentId": payment_id}, parsing.cash_amount)

    # -- after the sale ---------------------------------------------------------------------

    def purchase_confirm(
        self, *, payment_id: str, idempotency_key: str, requester: Requester = "2"
    ) -> r.PurchaseConfirmation:
        """Confirm the trade (escrow-type merchants: starts settlement)."""
        fields = {"paymentId": payment_id, "requester": requester}
        return self._wire.call(apis.PURCHASE_CONFIRM, fields, parsing.purchase_confirmation,
                               idempotency_key=idempotency_key)

    def save_naverpoint(self, *, payment_id: str, idempotency_key: str) -> r.PointAccrual:
        """Ask NAVER to accrue NAVER Pay points for a payment."""
        return self._wire.call(apis.POINT_SAVE, {"paymentId": payment_id},
                               lambda env: parsing.point_accrual(env, payment_id),
                               idempotency_key=idempotency_key)


def _page_fields(page: int, rows_per_page: int) -> dict[str, object]:
    if page < 1:
        raise ValueError(f"page numbers start at 1, got {page}")
    if not 1 <= rows_per_page <= 100:
        raise ValueError(f"rows_per_page must be 1-100, got {rows_per_page}")
    return {"pageNumber": page, "rowsPerPage": rows_per_page}


def _window_fields(start: datetime | None, end: datetime | None) -> dict[str, object]:
    if start is None or end is None:
        raise ValueError("give start and end (at most 31 days apart), or a single id")
    check_window(start, end)
    return {"startTime": format_ymdt(start), "endTime": format_ymdt(end)}
