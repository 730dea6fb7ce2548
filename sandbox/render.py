"""What answers look like: approval detail, history rows, cancel bodies, list rows, receipts.

Field names follow naverpay-api.md §3.4, §3.6, §3.7, §3.8 and §3.11. Values NAVER computes from
data the sandbox does not have (card numbers, commissions) are fixed, plausible stand-ins.
"""

from __future__ import annotations

from typing import Any

from sandbox.config import SandboxConfig
from sandbox.records import Cancel, HistoryRow, Payment, Registration

COMMISSION_PER_MILLE = 22  # a stand-in fee (2.2 %); real fees depend on the merchant contract

_MASKED_CARD = "465887******1234"
_MASKED_ACCOUNT = "1234******5678"


def _commission(amount: int) -> int:
    return amount * COMMISSION_PER_MILLE // 1000


def _means(payment: Payment) -> dict[str, Any]:
    card = payment.pay_means == "CARD"
    return {
        "primaryPayMeans": payment.pay_means,
        "cardCorpCode": payment.card_corp_code if card else "",
        "cardNo": _MASKED_CARD if card else "",
        "cardAuthNo": payment.card_auth_no if card else "",
        "cardInstCount": 0,
        "usedCardPoint": False,
        "bankCorpCode": "" if card else "004",
        "bankAccountNo": "" if card else _MASKED_ACCOUNT,
    }


def approval_detail(payment: Payment, config: SandboxConfig) -> dict[str, Any]:
    """``detail`` of an approval answer (and the base of its history row)."""
    order = payment.order
    commission = _commission(order.total)
    return {
        "paymentId": payment.payment_id,
        "payHistId": payment.pay_hist_id,
        "merchantId": config.merchant_id,
        "merchantName": config.merchant_name,
        "merchantPayKey": order.merchant_pay_id,
        "merchantUserKey": order.merchant_user_id,
        "productName": order.product_name,
        "admissionYmdt": payment.admission_ymdt,
        "admissionTypeCode": "01",
        "admissionState": "SUCCESS" if payment.decline_code is None else "FAIL",
        "totalPayAmount": order.total,
        "applyPayAmount": order.total,
        "primaryPayAmount": order.total,
        "npointPayAmount": 0,
        "giftCardAmount": 0,
        "discountPayAmount": 0,
        "taxScopeAmount": order.tax_scope,
        "taxExScopeAmount": order.tax_ex_scope,
        "environmentDepositAmount": 0,
        **_means(payment),
        "settleExpected": True,
        "settleExpectAmount": order.total - commission,
        "payCommissionAmount": commission,
        "tradeConfirmYmdt": payment.trade_confirm_ymdt or "",
        "extraDeduction": False,
        "useCfmYmdt": order.use_cfm_ymdt,
        "userIdentifier": order.merchant_user_id,
    }


def settle_info(amount: int, created: bool) -> dict[str, Any]:
    """``settleInfo`` of a history row for ``amount`` won on the main means."""
    commission = _commission(amount)
    return {
        "primaryCommissionAmount": commission,
        "npointCommissionAmount": 0,
        "giftCardCommissionAmount": 0,
        "discountCommissionAmount": 0,
        "primarySettleAmount": amount - commission,
        "npointSettleAmount": 0,
        "giftCardSettleAmount": 0,
        "discountSettleAmount": 0,
        "totalSettleAmount": amount - commission,
        "totalCommissionAmount": commission,
        "settleCreated": created,
    }


def history_row(row: HistoryRow, config: SandboxConfig) -> dict[str, Any]:
    """One row of a history answer: the approval detail, overridden for cancel rows."""
    payment = row.payment
    data = approval_detail(payment, config)
    data.update(admissionState="SUCCESS" if row.success else "FAIL", giftCardPayAmount=0,
                merchantPayTransactionKey="", merchantExtraParameter="")
    amount = payment.order.total
    if row.cancel is not None:
        amount = row.cancel.amount
        data.update(_cancel_overrides(row.cancel))
    data["settleInfo"] = settle_info(amount, payment.trade_confirm_ymdt is not None)
    return data


def _cancel_overrides(cancel: Cancel) -> dict[str, Any]:
    return {
        "payHistId": cancel.pay_hist_id,
        "admissionYmdt": cancel.completed_ymdt,
        "admissionTypeCode": cancel.type_code,
        "totalPayAmount": cancel.amount,
        "applyPayAmount": cancel.amount,
        "primaryPayAmount": cancel.amount,
        "taxScopeAmount": cancel.tax_scope,
        "taxExScopeAmount": cancel.tax_ex_scope,
        "environmentDepositAmount": cancel.environment_deposit,
        "settleExpectAmount": cancel.amount - _commission(cancel.amount),
        "payCommissionAmount": _commission(cancel.amount),
        "merchantPayTransactionKey": cancel.transaction_key,
    }


def cancel_body(payment: Payment, cancel: Cancel) -> dict[str, Any]:
    """Body of a cancel answer (Success, or CancelNotComplete with payHistId "")."""
    return {
        "paymentId": payment.payment_id,
        "payHistId": cancel.pay_hist_id,
        "primaryPayMeans": payment.pay_means,
        "primaryPayCancelAmount": cancel.amount,
        "primaryPayRestAmount": cancel.rest_after,
        "npointCancelAmount": 0,
        "npointRestAmount": 0,
        "giftCardCancelAmount": 0,
        "giftCardRestAmount": 0,
        "discountCancelAmount": 0,
        "taxScopeAmount": cancel.tax_scope,
        "taxExScopeAmount": cancel.tax_ex_scope,
        "cancelYmdt": cancel.completed_ymdt or cancel.requested_ymdt,
        "totalRestAmount": cancel.rest_after,
    }


def registration_row(registration: Registration) -> dict[str, Any]:
    """One row of ``recurrent/v1/list``."""
    card = registration.behaviour.pay_means == "CARD"
    return {
        "recurrentId": registration.recurrent_id,
        "productCode": registration.product_code,
        "naverPointUse": "N",
        "primaryPayMeans": registration.behaviour.pay_means,
        "primaryPayMeansCorpCd": registration.behaviour.card_corp_code if card else "004",
        "primaryPayMeansNo": _MASKED_CARD if card else _MASKED_ACCOUNT,
        "recurrentState": registration.state.value,
        "registYmdt": registration.regist_ymdt,
        "expireYmdt": registration.expire_ymdt or "",
    }


def cash_amount(payment: Payment) -> dict[str, Any]:
    """Cash-receipt eligible amounts: bank transfers count as cash, cards do not (§3.11)."""
    if payment.pay_means != "BANK":
        return {"totalCashAmount": 0, "supplyCashAmount": 0, "vatCashAmount": 0}
    vat = payment.tax_scope_rest - round(payment.tax_scope_rest / 1.1)
    return {
        "totalCashAmount": payment.rest,
        "supplyCashAmount": payment.rest - vat,
        "vatCashAmount": vat,
    }
