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

Refunds: :func:`compare_refunds` takes NAVER's cancel rows and the local refunds as
:class:`LocalRefund` values (``worker.reconciliation.TableRefunds`` reads them from the
``refunds`` table), or ``None`` when no source is wired; then every cancel at NAVER is
``refund_unknown_here``. A cancel row is matched to a refund by, in this order::

    payHistId == refund.pay_hist_id                       (NAVER's id of the cancel, once known)
    merchantPayTransactionKey is one of the refund's keys (``<base>`` or any round ``<base>-N``)
    the row carries no key and no payHistId of ours: same paymentId, same amount first
                                                          (NAVER echoing no key at all)

    NAVER cancel + no refund here ........................... refund_unknown_here
                 + refund succeeded/completing, same amount .. (clean)
                 + other amount, or refund not refunded here .. refund_differs
    refund succeeded here + no cancel at NAVER .............. refund_missing_at_naver
    refund completing (CancelNotComplete) + no cancel ....... nothing while younger than the
        completing grace (default one day after NAVER accepted it): NAVER completes such a
        cancel by itself and the refund engine confirms it from history (completing ->
        succeeded); after the grace: refund_missing_at_naver. ``TableRefunds`` returns every
        completing refund accepted before the day's end, so the next days' runs see it.
    refunds in any other state (requested, cancelling, unknown, held, failed) + no cancel:
        nothing (no money went back here; the refund engine resolves them).

``worker.reconciliation`` reads the own history (by paymentId) of a refund reported missing
before keeping the finding: NAVER may stamp the cancel on the other side of midnight.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
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
    refund_id: int | None = None  # the local refund of a refund_* finding, when there is one

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


REFUNDED = ("succeeded", "completing")  # money NAVER took back (or completes by itself)


@dataclass(frozen=True)
class LocalRefund:
    """A refund as the refunds table records it (the comparison's input)."""

    refund_id: int
    payment_id: str
    amount: int
    status: str  # succeeded/completing count as refunded; anything else is not done yet
    transaction_key: str | None = None  # the idempotency key (any round ``<base>-N``)
    pay_hist_id: str | None = None  # NAVER's id of the cancel, once known
    refunded_at: datetime | None = None  # when NAVER accepted it

    def owns_key(self, key: str | None) -> bool:
        """Whether ``key`` (a merchantPayTransactionKey) is one of this refund's key rounds."""
        if not key or not self.transaction_key:
            return False
        base = self.transaction_key.split("-")[0]
        return key == base or key.startswith(base + "-") or key == self.transaction_key


class RefundSource(Protocol):
    """Where local refunds come from (``worker.reconciliation.TableRefunds``: the refunds table)."""

    def refunds(self, merchant_id: int, payment_ids: Collection[str], start: datetime,
                end: datetime) -> list[LocalRefund]:
        """Refunds of ``payment_ids``; the merchant's refunds NAVER accepted in ``[start, end)``;
        and its refunds still ``completing`` that NAVER accepted before ``end``."""
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
                    charge_ids: dict[str, int] | None = None, *, now: datetime | None = None,
                    completing_grace: timedelta = timedelta(days=1)) -> list[Finding]:
    """NAVER's successful cancel rows against local refunds (``None``: no refunds source).

    Matching and kinds as in the module docstring; each refund matches at most one cancel, and
    rows are matched by their ids (payHistId, key) before any keyless row is matched by amount.
    ``now`` decides whether a ``completing`` refund outlived its grace (None: never reported).
    """
    ids = charge_ids or {}
    done = [c for c in cancels if not is_approval(c) and c.admission_state in (None, "SUCCESS")]
    if local is None:
        return [_refund_finding(Kind.REFUND_UNKNOWN_HERE, c, None, ids,
                                "NAVER shows a cancel; refunds are not tracked here yet") for c in done]
    left = list(local)
    matched: dict[int, LocalRefund] = {}
    for i, cancel in enumerate(done):  # by NAVER's id of the cancel, else by our key
        refund = _match_by_id(cancel, left)
        if refund is not None:
            matched[i] = refund
            left.remove(refund)
    for i, cancel in enumerate(done):  # rows with no key: by paymentId and amount
        if i in matched or cancel.merchant_pay_transaction_key:
            continue
        same = [r for r in left if r.payment_id == cancel.payment_id and r.pay_hist_id is None]
        refund = next((r for r in same if r.amount == cancel.total_pay_amount), None) or \
            (same[0] if same else None)
        if refund is not None:
            matched[i] = refund
            left.remove(refund)
    findings = []
    for i, cancel in enumerate(done):
        refund = matched.get(i)
        if refund is None:
            findings.append(_refund_finding(Kind.REFUND_UNKNOWN_HERE, cancel, None, ids,
                                            "NAVER shows a cancel no refund here knows"))
        elif refund.amount != cancel.total_pay_amount or refund.status not in REFUNDED:
            findings.append(_refund_finding(
                Kind.REFUND_DIFFERS, cancel, refund, ids,
                f"NAVER cancelled {cancel.total_pay_amount} won; refund {refund.refund_id} is "
                f"{refund.amount} won ({refund.status})"))
    for refund in left:
        if refund.status == "completing" and (now is None or refund.refunded_at is None
                                              or now < refund.refunded_at + completing_grace):
            continue  # NAVER completes it by itself (CancelNotComplete); not a difference yet
        if refund.status in REFUNDED:
            detail = f"refund {refund.refund_id} is {refund.status} here, NAVER shows no cancel"
            findings.append(Finding(Kind.REFUND_MISSING_AT_NAVER, detail,
                                    payment_id=refund.payment_id, charge_id=ids.get(refund.payment_id),
                                    local_amount=refund.amount, local_status=refund.status,
                                    refund_id=refund.refund_id))
    return findings


def _match_by_id(cancel: PaymentDetail, refunds: list[LocalRefund]) -> LocalRefund | None:
    if cancel.pay_hist_id:
        by_hist = next((r for r in refunds if r.pay_hist_id == cancel.pay_hist_id), None)
        if by_hist is not None:
            return by_hist
    key = cancel.merchant_pay_transaction_key
    return next((r for r in refunds if r.owns_key(key)), None) if key else None


def _refund_finding(kind: Kind, cancel: PaymentDetail, refund: LocalRefund | None,
                    ids: dict[str, int], detail: str) -> Finding:
    return Finding(kind, detail, payment_id=cancel.payment_id, merchant_pay_id=cancel.merchant_pay_key,
                   charge_id=ids.get(cancel.payment_id), naver_amount=cancel.total_pay_amount,
                   local_amount=refund.amount if refund else None,
                   local_status=refund.status if refund else None,
                   refund_id=refund.refund_id if refund else None)
