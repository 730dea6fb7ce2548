"""Turn NAVER's JSON answers into the typed results of ``results``.

Pure functions without I/O. Anything unusable raises ``ParseError`` saying what was wrong;
the client turns that into the right ``NaverPayError`` for the API that was called. Unknown
members are ignored (NAVER adds them without notice); missing optional ones become None.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from worker.naverpay import results as r
from worker.naverpay.kst import parse_ymdt

__all__ = ["Envelope", "ParseError", "decode_envelope"]

Obj = Mapping[str, Any]


class ParseError(ValueError):
    """A NAVER answer the client cannot use; the text completes "NAVER answered ..."."""


@dataclass(frozen=True)
class Envelope:
    """``{"code", "message", "body"}`` as received; ``body`` is {} when absent."""

    code: str
    message: str
    body: Obj
    raw: Obj
    http_status: int
    replayed: bool = False
    text: str = ""  # the start of the response text, kept for errors


RAW_TEXT_LIMIT = 4096


def decode_envelope(data: bytes, *, http_status: int) -> Envelope:
    """Decode a response body into an ``Envelope`` or say why it is not one."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError too
        raise ParseError("a non-JSON body") from None
    if not isinstance(doc, dict):
        raise ParseError(f"JSON that is not an object ({type(doc).__name__})")
    code = doc.get("code")
    if not isinstance(code, str) or not code:
        raise ParseError("an envelope without a result code")
    message = doc.get("message")
    body = doc.get("body")
    return Envelope(
        code=code,
        message=message if isinstance(message, str) else "",
        body=body if isinstance(body, dict) else {},
        raw=doc,
        http_status=http_status,
        replayed=http_status == 409,
        text=data[:RAW_TEXT_LIMIT].decode("utf-8", "replace"),
    )


def _text(obj: Obj, key: str) -> str | None:
    value = obj.get(key)
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # ids sent as numbers are still ids
    return None


def _required_text(obj: Obj, key: str, where: str) -> str:
    value = _text(obj, key)
    if not value:
        raise ParseError(f"{where} without {key}")
    return value


def _amount(obj: Obj, key: str) -> int | None:
    """Won as int. Integral floats and digit strings pass; anything else is not guessed at."""
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    raise ParseError(f"{key}={value!r}, which is not a whole number of won")


def _required_amount(obj: Obj, key: str, where: str) -> int:
    value = _amount(obj, key)
    if value is None:
        raise ParseError(f"{where} without {key}")
    return value


def _time(obj: Obj, key: str) -> datetime | None:
    text = _text(obj, key)
    return parse_ymdt(text) if text else None


def _rows(body: Obj, key: str) -> list[Obj]:
    rows = body.get(key)
    if rows is None:
        return []
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise ParseError(f"a {key} that is not a list of objects")
    return rows


def _common(env: Envelope) -> dict[str, Any]:
    return {"code": env.code, "message": env.message, "raw": env.raw, "replayed": env.replayed}


def registration_reservation(env: Envelope) -> r.RegistrationReservation:
    """Success body of ``recurrent/regist/v1/reserve``."""
    reserve_id = _required_text(env.body, "reserveId", "a Success")
    return r.RegistrationReservation(reserve_id=reserve_id, **_common(env))


def registration_approval(env: Envelope) -> r.RegistrationApproval:
    """Success body of ``recurrent/regist/v1/approval``."""
    b = env.body
    return r.RegistrationApproval(
        recurrent_id=_required_text(b, "recurrentId", "a Success"),
        reserve_id=_text(b, "reserveId"),
        temp_receipt_id=_text(b, "tempReceiptId"),
        action_type=_text(b, "actionType"),
        pre_recurrent_id=_text(b, "preRecurrentId") or None,
        **_common(env),
    )


def registration_expiry(env: Envelope, recurrent_id: str) -> r.RegistrationExpiry:
    """Success body of ``recurrent/expire/v1/request`` (echo of the id, which we know anyway)."""
    echoed = _text(env.body, "recurrentId") or recurrent_id
    return r.RegistrationExpiry(recurrent_id=echoed, **_common(env))


def registration(row: Obj) -> r.Registration:
    """One row of the registration list."""
    return r.Registration(
        recurrent_id=_required_text(row, "recurrentId", "a registration row"),
        product_code=_text(row, "productCode"),
        recurrent_state=_text(row, "recurrentState"),
        primary_pay_means=_text(row, "primaryPayMeans"),
        regist_ymdt=_time(row, "registYmdt"),
        expire_ymdt=_time(row, "expireYmdt"),
        raw=row,
    )


def registration_page(env: Envelope, page: int) -> r.RegistrationPage:
    """Body of ``recurrent/v1/list``."""
    rows = [registration(row) for row in _rows(env.body, "list")]
    total, pages, current = _paging(env.body, len(rows), page)
    return r.RegistrationPage(registrations=rows, total_count=total, total_page_count=pages,
                              current_page_number=current, **_common(env))


def _paging(body: Obj, row_count: int, page: int) -> tuple[int, int, int]:
    """(total rows, total pages, this page); guessed from the rows when NAVER omits them."""
    total = _amount(body, "totalCount")
    pages = _amount(body, "totalPageCount")
    current = _amount(body, "currentPageNumber")
    return (
        row_count if total is None else total,
        (1 if row_count else 0) if pages is None else pages,
        page if current is None else current,
    )


def payment_reservation(env: Envelope, recurrent_id: str) -> r.PaymentReservation:
    """Success body of ``recurrent/pay/v3/reserve``: without a paymentId it is useless."""
    b = env.body
    return r.PaymentReservation(
        recurrent_id=_text(b, "recurrentId") or recurrent_id,
        payment_id=_required_text(b, "paymentId", "a Success"),
        **_common(env),
    )


def payment_detail(obj: Obj, where: str, payment_id: str | None = None) -> r.PaymentDetail:
    """An approval ``detail`` or a history row; ``payment_id`` is used if the object lacks it."""
    payment_id = _text(obj, "paymentId") or payment_id
    if not payment_id:
        raise ParseError(f"{where} without paymentId")
    return r.PaymentDetail(
        payment_id=payment_id,
        total_pay_amount=_required_amount(obj, "totalPayAmount", where),
        pay_hist_id=_text(obj, "payHistId"),
        merchant_pay_key=_text(obj, "merchantPayKey"),
        merchant_user_key=_text(obj, "merchantUserKey"),
        product_name=_text(obj, "productName"),
        admission_ymdt=_time(obj, "admissionYmdt"),
        admission_type_code=_text(obj, "admissionTypeCode"),
        admission_state=_text(obj, "admissionState"),
        primary_pay_amount=_amount(obj, "primaryPayAmount") or 0,
        npoint_pay_amount=_amount(obj, "npointPayAmount") or 0,
        tax_scope_amount=_amount(obj, "taxScopeAmount"),
        tax_ex_scope_amount=_amount(obj, "taxExScopeAmount"),
        primary_pay_means=_text(obj, "primaryPayMeans"),
        merchant_pay_transaction_key=_text(obj, "merchantPayTransactionKey"),
        raw=obj,
    )


def approval(env: Envelope) -> r.Approval:
    """Success body of an approval. The engine checks amounts, so they must be there."""
    b = env.body
    detail_obj = b.get("detail")
    if not isinstance(detail_obj, dict):
        raise ParseError("a Success without detail")
    detail = payment_detail(detail_obj, "a Success detail", _text(b, "paymentId"))
    return r.Approval(
        payment_id=_text(b, "paymentId") or detail.payment_id,
        recurrent_id=_text(b, "recurrentId"),
        detail=detail,
        **_common(env),
    )


def cancellation(env: Envelope, payment_id: str, *, pending: bool) -> r.Cancellation:
    """Body of ``v1/cancel`` for Success, or CancelNotComplete (``pending``)."""
    b = env.body
    return r.Cancellation(
        payment_id=_text(b, "paymentId") or payment_id,
        pay_hist_id=_text(b, "payHistId") or "",
        total_rest_amount=_amount(b, "totalRestAmount"),
        pending=pending,
        primary_pay_means=_text(b, "primaryPayMeans"),
        primary_pay_cancel_amount=_amount(b, "primaryPayCancelAmount"),
        primary_pay_rest_amount=_amount(b, "primaryPayRestAmount"),
        npoint_cancel_amount=_amount(b, "npointCancelAmount"),
        npoint_rest_amount=_amount(b, "npointRestAmount"),
        tax_scope_amount=_amount(b, "taxScopeAmount"),
        tax_ex_scope_amount=_amount(b, "taxExScopeAmount"),
        cancel_ymdt=_time(b, "cancelYmdt"),
        **_common(env),
    )


def history_page(env: Envelope, page: int) -> r.HistoryPage:
    """Body of ``v2.2/list/history`` (also the empty InvalidPaymentId answer)."""
    rows = [payment_detail(row, "a history row") for row in _rows(env.body, "list")]
    total, pages, current = _paging(env.body, len(rows), page)
    return r.HistoryPage(rows=rows, total_count=total, total_page_count=pages,
                         current_page_number=current, **_common(env))


def purchase_confirmation(env: Envelope) -> r.PurchaseConfirmation:
    """Success body of ``v1/purchase-confirm``."""
    return r.PurchaseConfirmation(confirm_time=_time(env.body, "confirmTime"), **_common(env))


def point_accrual(env: Envelope, payment_id: str) -> r.PointAccrual:
    """Success body of ``v1/naverpoint-save``."""
    return r.PointAccrual(payment_id=_text(env.body, "paymentId") or payment_id, **_common(env))


def cash_amount(env: Envelope) -> r.CashAmount:
    """Success body of ``v1/receipt/cash-amount``."""
    b = env.body
    return r.CashAmount(
        total_cash_amount=_required_amount(b, "totalCashAmount", "a Success"),
        supply_cash_amount=_amount(b, "supplyCashAmount"),
        vat_cash_amount=_amount(b, "vatCashAmount"),
        **_common(env),
    )
