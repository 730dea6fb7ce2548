"""The comparisons of reconciliation (정산 대사), as pure functions over plain values.

NAVER's side is a day of payment-history rows (``PaymentDetail``: 01 approval SUCCESS/FAIL,
03/04 cancels); our side is the ``charges`` rows those rows point at (by ``paymentId``, else
by ``merchantPayKey`` = our ``merchant_pay_id`` + ``-<attempt>``) and, once the refunds
table lands, our refunds. Each difference is a :class:`Finding` of one :class:`Kind`::

    NAVER approval SUCCESS  + no charge here                    -> unknown_here
                            + charge unknown/approving          -> unsettled_here (repairable)
                            + charge succeeded, amount differs  -> amount_differs
                            + charge amount_mismatch            -> amount_differs
                            + charge in any other state         -> approved_not_succeeded
    charge succeeded (approved that day) + no SUCCESS at NAVER  -> missing_at_naver
    NAVER cancel (03/04)    -> compare_refunds (the refunds seam, below)

Only ``unsettled_here`` is ever repaired, and only by the charge state machine itself
(``worker.reconciliation`` hands the charge to ``process_charge``, which reads history by
paymentId and moves it with compare-and-set transitions). Everything else is reported.

Refunds seam: :func:`compare_refunds` takes NAVER's cancel rows and the local refunds as
:class:`LocalRefund` values, or ``None`` when this installation has no refunds table yet; then
every cancel at NAVER is ``refund_unknown_here`` (money went back that we did not record).
The integrator wires a :class:`RefundSource` over the ``refunds`` table once it lands.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from worker.naverpay.results import PaymentDetail


class Kind(StrEnum):
    """What differs between NAVER's history and our books."""

    UNKNOWN_HERE = "unknown_here"  # approved at NAVER, no charge here
    UNSETTLED_HERE = "unsettled_here"  # our charge is unknown/approving; history may settle it
    APPROVED_NOT_SUCCEEDED = "approved_not_succeeded"  # approved at NAVER, not succeeded here
    AMOUNT_DIFFERS = "amount_differs"  # approved at NAVER for another amount
    MISSING_AT_NAVER = "missing_at_naver"  # succeeded here, no approval at NAVER
    REFUND_UNKNOWN_HERE = "refund_unknown_here"  # a cancel at NAVER we have no refund for
    REFUND_DIFFERS = "refund_differs"  # a cancel at NAVER whose local refund differs
    REFUND_MISSING_AT_NAVER = "refund_missing_at_naver"  # a refund here NAVER does not show


class Resolution(StrEnum):
    """What the run did about a finding."""

    REPAIRED = "repaired"  # history proved the outcome; the state machine applied it
    REPORTED = "reported"  # left for a human
    DEFERRED = "deferred"  # not provable yet (busy, or inside the settle window): next run


@dataclass(frozen=True)
class Finding:
    """One difference, with what both sides say."""

    kind: Kind
    detail: str
    payment_id: str | None = None
    merchant_pay_id: str | None = None
    charge_id: int | None = None
    naver_amount: int | None = None
    local_amount: int | None = None
    local_status: str | None = None
    resolution: Resolution = Resolution.REPORTED

    def resolved(self, resolution: Resolution, detail: str, local_status: str | None) -> Finding:
        """This finding after the run acted on it."""
        return replace(self, resolution=resolution, detail=detail, local_status=local_status)


@dataclass(frozen=True)
class LocalCharge:
    """The columns of a charge that reconciliation compares."""

    id: int
    merchant_pay_id: str
    payment_id: str | None
    status: str
    amount: int
    approved_amount: int | None


@dataclass(frozen=True)
class LocalRefund:
    """A refund as the refunds table will record it (the seam's input)."""

    refund_id: int
    payment_id: str
    amount: int
    status: str  # "succeeded" counts as done; anything else is not done yet
    transaction_key: str | None = None


class RefundSource(Protocol):
    """Where local refunds come from (the refunds table, wired by the integrator)."""

    def refunds(self, payment_ids: Collection[str], start: datetime, end: datetime) -> list[LocalRefund]:
        """Refunds of ``payment_ids``, and refunds completed in ``start..end``."""
        ...


_ATTEMPT = re.compile(r"^(?P<base>.+)-\d+$")


def merchant_pay_base(merchant_pay_key: str | None) -> str | None:
    """Our ``merchant_pay_id`` from NAVER's ``merchantPayKey`` (we send ``<id>-<attempt>``)."""
    if not merchant_pay_key:
        return None
    match = _ATTEMPT.match(merchant_pay_key)
    return match.group("base") if match else merchant_pay_key


def is_approval(row: PaymentDetail) -> bool:
    """An approval row (01; rows without a type code are approvals, as the engine reads them)."""
    return row.admission_type_code in (None, "01")


def compare_approval(row: PaymentDetail, charge: LocalCharge | None) -> Finding | None:
    """NAVER's SUCCESS approval ``row`` against the charge it belongs to (None: no charge)."""
    if charge is None:
        return Finding(Kind.UNKNOWN_HERE, "NAVER approved a payment no charge here knows",
                       payment_id=row.payment_id, merchant_pay_id=row.merchant_pay_key,
                       naver_amount=row.total_pay_amount)

    def finding(kind: Kind, detail: str) -> Finding:
        assert charge is not None
        return Finding(kind, detail, payment_id=row.payment_id, merchant_pay_id=charge.merchant_pay_id,
                       charge_id=charge.id, naver_amount=row.total_pay_amount,
                       local_amount=charge.amount, local_status=charge.status)

    if charge.payment_id != row.payment_id:
        return finding(Kind.APPROVED_NOT_SUCCEEDED,
                       f"NAVER approved paymentId {row.payment_id} of charge {charge.id}, whose "
                       f"own paymentId is {charge.payment_id} (a second approval?)")
    if charge.status in ("unknown", "approving"):
        return finding(Kind.UNSETTLED_HERE, "NAVER approved it; our charge has no outcome yet")
    if charge.status in ("succeeded", "amount_mismatch"):
        if row.total_pay_amount == charge.amount and charge.status == "succeeded":
            return None
        return finding(Kind.AMOUNT_DIFFERS, f"NAVER approved {row.total_pay_amount} won, the charge "
                                            f"is {charge.amount} won ({charge.status})")
    return finding(Kind.APPROVED_NOT_SUCCEEDED, f"NAVER approved it but the charge is {charge.status}")


def compare_missing(charge: LocalCharge, rows: Sequence[PaymentDetail]) -> Finding | None:
    """A charge that succeeded here against every history row of its paymentId."""
    if any(is_approval(r) and r.admission_state in (None, "SUCCESS") for r in rows):
        return None
    seen = "only a refused approval" if rows else "no approval"
    return Finding(Kind.MISSING_AT_NAVER, f"succeeded here, NAVER history shows {seen}",
                   payment_id=charge.payment_id, merchant_pay_id=charge.merchant_pay_id,
                   charge_id=charge.id, local_amount=charge.approved_amount or charge.amount,
                   local_status=charge.status)


def compare_refunds(cancels: Sequence[PaymentDetail], local: Sequence[LocalRefund] | None,
                    charge_ids: dict[str, int] | None = None) -> list[Finding]:
    """NAVER's successful cancel rows against local refunds (``None``: no refunds table yet).

    A cancel is matched to a refund by ``merchantPayTransactionKey`` first (our key of that
    cancel), else by (paymentId, amount); each refund matches at most one cancel. Unmatched
    cancels are ``refund_unknown_here``; a match whose amount differs, or whose refund is not
    ``succeeded`` here, is ``refund_differs``; a succeeded refund no cancel matched is
    ``refund_missing_at_naver``.
    """
    ids = charge_ids or {}
    done = [c for c in cancels if not is_approval(c) and c.admission_state in (None, "SUCCESS")]
    if local is None:
        return [_refund_finding(Kind.REFUND_UNKNOWN_HERE, c, None, ids,
                                "NAVER shows a cancel; refunds are not tracked here yet") for c in done]
    left = list(local)
    findings = []
    for cancel in done:
        refund = _match_refund(cancel, left)
        if refund is None:
            findings.append(_refund_finding(Kind.REFUND_UNKNOWN_HERE, cancel, None, ids,
                                            "NAVER shows a cancel no refund here knows"))
            continue
        left.remove(refund)
        if refund.amount != cancel.total_pay_amount or refund.status != "succeeded":
            findings.append(_refund_finding(
                Kind.REFUND_DIFFERS, cancel, refund, ids,
                f"NAVER cancelled {cancel.total_pay_amount} won; refund {refund.refund_id} is "
                f"{refund.amount} won ({refund.status})"))
    for refund in left:
        if refund.status == "succeeded":
            findings.append(Finding(Kind.REFUND_MISSING_AT_NAVER,
                                    f"refund {refund.refund_id} succeeded here, NAVER shows no cancel",
                                    payment_id=refund.payment_id, charge_id=ids.get(refund.payment_id),
                                    local_amount=refund.amount, local_status=refund.status))
    return findings


def _match_refund(cancel: PaymentDetail, refunds: list[LocalRefund]) -> LocalRefund | None:
    key = cancel.merchant_pay_transaction_key
    if key:
        by_key = next((r for r in refunds if r.transaction_key == key), None)
        if by_key is not None:
            return by_key
    same = [r for r in refunds if r.payment_id == cancel.payment_id]
    return next((r for r in same if r.amount == cancel.total_pay_amount), None) or (same[0] if same else None)


def _refund_finding(kind: Kind, cancel: PaymentDetail, refund: LocalRefund | None,
                    ids: dict[str, int], detail: str) -> Finding:
    return Finding(kind, detail, payment_id=cancel.payment_id, merchant_pay_id=cancel.merchant_pay_key,
                   charge_id=ids.get(cancel.payment_id), naver_amount=cancel.total_pay_amount,
                   local_amount=refund.amount if refund else None,
                   local_status=refund.status if refund else None)
