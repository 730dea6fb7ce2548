"""How rows look in the CLI: one dict per row for ``--json``, one list of cells per table row.

JSON carries the raw columns (integers of won, instants as ISO-8601 UTC via
``output.plain``); tables carry the human form (Seoul time, ``9,900원``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from worker.cli.output import fields, table, when, won

if TYPE_CHECKING:
    from models import Charge, ChargeAttempt, Refund, Subscription

SUBSCRIPTION_COLUMNS = (
    "id", "merchant_id", "recurrent_id", "merchant_user_id", "customer_email", "customer_name",
    "product_code", "product_name", "amount", "tax_free_amount", "cron", "timezone", "status",
    "next_charge_at", "last_error", "agreed_amount", "trial_ends_at", "created_at", "updated_at",
)
CHARGE_COLUMNS = (
    "id", "subscription_id", "recurrent_id", "cycle_at", "merchant_pay_id", "payment_id",
    "amount", "tax_free_amount", "status", "attempt_count", "next_attempt_at", "last_code",
    "last_message", "approved_amount", "approved_at", "reason", "refund_total", "agreed_amount",
    "created_at", "updated_at",
)
ATTEMPT_COLUMNS = (
    "id", "charge_id", "subscription_id", "attempt_no", "kind", "idempotency_key", "outcome",
    "result_code", "http_status", "message", "elapsed_ms", "created_at",
)


def _columns(row: object, names: tuple[str, ...]) -> dict[str, Any]:
    return {name: getattr(row, name) for name in names}


def subscription_dict(sub: Subscription) -> dict[str, Any]:
    """Every column of a subscription row."""
    return _columns(sub, SUBSCRIPTION_COLUMNS)


def charge_dict(charge: Charge) -> dict[str, Any]:
    """Every column of a charge row."""
    return _columns(charge, CHARGE_COLUMNS)


def attempt_dict(attempt: ChargeAttempt, raw: bool = False) -> dict[str, Any]:
    """A charge_attempts row; its (already redacted) raw body only when asked for."""
    data = _columns(attempt, ATTEMPT_COLUMNS)
    if raw:
        data["raw_body"] = attempt.raw_body
    return data


def subscriptions_table(subs: list[Subscription]) -> str:
    """Subscriptions, one line each."""
    return table(
        ["ID", "RECURRENT ID", "USER", "PRODUCT", "AMOUNT", "CRON", "STATUS", "NEXT CHARGE"],
        [[s.id, s.recurrent_id, s.merchant_user_id, s.product_name, won(s.amount), s.cron,
          s.status, when(s.next_charge_at)] for s in subs],
        right=["ID", "AMOUNT"])


def subscription_fields(sub: Subscription) -> str:
    """One subscription, shown vertically."""
    amount = won(sub.amount) + (f" (tax-free {won(sub.tax_free_amount)})"
                                if sub.tax_free_amount else "")
    return fields([
        ("id", sub.id), ("recurrentId", sub.recurrent_id), ("status", sub.status),
        ("last error", sub.last_error), ("merchant", sub.merchant_id),
        ("user", sub.merchant_user_id), ("email", sub.customer_email),
        ("product", f"{sub.product_name} ({sub.product_code})"), ("amount", amount),
        ("cron", f"{sub.cron} ({sub.timezone})"), ("next charge", when(sub.next_charge_at)),
        ("created", when(sub.created_at)), ("updated", when(sub.updated_at)),
    ])


def charges_table(charges: list[Charge]) -> str:
    """Charges, one line each."""
    return table(
        ["ID", "SUB", "CYCLE", "AMOUNT", "STATUS", "TRIES", "NEXT ATTEMPT", "CODE"],
        [[c.id, c.subscription_id, when(c.cycle_at), won(c.amount), c.status, c.attempt_count,
          when(c.next_attempt_at), c.last_code] for c in charges],
        right=["ID", "SUB", "AMOUNT", "TRIES"])


def charge_fields(charge: Charge) -> str:
    """One charge, shown vertically."""
    return fields([
        ("id", charge.id), ("subscription", charge.subscription_id),
        ("recurrentId", charge.recurrent_id), ("cycle", when(charge.cycle_at)),
        ("status", charge.status), ("amount", won(charge.amount)),
        ("approved", f"{won(charge.approved_amount)} at {when(charge.approved_at)}"
                     if charge.approved_amount is not None else None),
        ("merchantPayId", charge.merchant_pay_id), ("paymentId", charge.payment_id),
        ("attempts", charge.attempt_count), ("next attempt", when(charge.next_attempt_at)),
        ("last code", charge.last_code), ("last message", charge.last_message),
        ("reason", charge.reason),
        ("refunds", f"{won(charge.refund_total)} requested, in progress or done"
                    if charge.refund_total else None),
        ("created", when(charge.created_at)),
        ("updated", when(charge.updated_at)),
    ])


def attempts_table(attempts: list[ChargeAttempt], raw: bool = False) -> str:
    """A charge's NAVER calls; with ``raw`` each is followed by its redacted body."""
    rows = [[a.attempt_no, a.kind, a.idempotency_key, a.outcome, a.result_code, a.http_status,
             f"{a.elapsed_ms} ms" if a.elapsed_ms is not None else None, when(a.created_at)]
            for a in attempts]
    text = table(["#", "KIND", "KEY", "OUTCOME", "CODE", "HTTP", "TOOK", "TIME"], rows,
                 right=["#", "HTTP", "TOOK"])
    if raw:
        bodies = [f"--- attempt {a.id} ({a.kind}) raw body:\n{a.raw_body or '-'}" for a in attempts]
        text = "\n".join([text, *bodies])
    return text


REFUND_COLUMNS = (
    "id", "charge_id", "payment_id", "amount", "tax_free_amount", "reason", "status", "idempotency_key",
    "key_round", "expected_rest", "send_count", "last_code", "last_message", "pay_hist_id",
    "naver_rest_amount", "next_attempt_at", "refunded_at", "confirmed_at", "created_at", "updated_at",
)


def refund_dict(refund: Refund) -> dict[str, Any]:
    """A refunds row (issue 9)."""
    return _columns(refund, REFUND_COLUMNS)


def refunds_table(refunds: list[Refund]) -> str:
    """A charge's refunds, one line each."""
    return table(["REFUND", "AMOUNT", "TAX-FREE", "STATUS", "CODE", "REQUESTED", "REASON"],
                 [[r.id, won(r.amount), won(r.tax_free_amount), r.status, r.last_code,
                   when(r.created_at), r.reason] for r in refunds],
                 right=["REFUND", "AMOUNT", "TAX-FREE"])
