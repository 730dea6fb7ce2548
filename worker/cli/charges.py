"""``npay-billing charges list | show | cash-amount``: the charges table, each charge's NAVER
calls and its purchase-confirm / point-accrual state, and its cash-receipt amount."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from worker.cli.output import emit_json, fields, when, won
from worker.cli.support import CliError, Refused, current_env, find_charge, find_subscription, json_option
from worker.cli.views import (
    attempt_dict,
    attempts_table,
    charge_dict,
    charge_fields,
    charges_table,
    refund_dict,
    refunds_table,
)

if TYPE_CHECKING:
    from models import ChargeFollowup

CHARGE_STATUSES = ("pending", "reserving", "reserved", "approving", "unknown", "retry_wait",
                   "succeeded", "failed", "amount_mismatch", "skipped", "canceled", "held",
                   "consent_held")


@click.group()
def charges() -> None:
    """Inspect charges (one per subscription and billing cycle) and their attempts."""


@charges.command("list")
@click.option("--status", type=click.Choice(CHARGE_STATUSES), help="Only this status.")
@click.option("--subscription", "subscription_key", metavar="ID_OR_RECURRENT_ID",
              help="Only this subscription's charges.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@json_option
def list_(status: str | None, subscription_key: str | None, limit: int, as_json: bool) -> None:
    """List charges, newest first."""
    from sqlalchemy import func, select

    from models import Charge

    query = select(Charge)
    with current_env().sessions()() as session:
        if subscription_key is not None:
            sub = find_subscription(session, subscription_key)
            query = query.where(Charge.subscription_id == sub.id)
        if status:
            query = query.where(Charge.status == status)
        rows = list(session.scalars(query.order_by(Charge.id.desc()).limit(limit)).unique())
        total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    if as_json:
        emit_json([charge_dict(c) for c in rows])
        return
    if not rows:
        click.echo("no charges match; the walk creates them when subscriptions come due")
        return
    click.echo(charges_table(rows))
    if total > len(rows):
        click.echo(f"(showing {len(rows)} of {total}; use --limit)")


@charges.command("show")
@click.argument("key", metavar="ID")
@click.option("--raw", is_flag=True, help="Also print each attempt's (redacted) raw NAVER body.")
@json_option
def show(key: str, raw: bool, as_json: bool) -> None:
    """Show one charge and every NAVER Pay call made for it (charge_attempts)."""
    from sqlalchemy import select

    from models import ChargeAttempt, ChargeFollowup, Refund
    from worker.refund_requests import totals

    with current_env().sessions()() as session:
        charge = find_charge(session, key)
        attempts = list(session.scalars(
            select(ChargeAttempt).where(ChargeAttempt.charge_id == charge.id)
            .order_by(ChargeAttempt.id)))
        refunds = list(session.scalars(
            select(Refund).where(Refund.charge_id == charge.id).order_by(Refund.id)))
        refunded = totals(session, charge).refunded
        followups = list(session.scalars(
            select(ChargeFollowup).where(ChargeFollowup.charge_id == charge.id)
            .order_by(ChargeFollowup.kind.desc())))
    if as_json:
        emit_json({"charge": {**charge_dict(charge), "refunded_amount": refunded},
                   "refunds": [refund_dict(r) for r in refunds],
                   "followups": [followup_dict(f) for f in followups],
                   "attempts": [attempt_dict(a, raw=raw) for a in attempts]})
        return
    click.echo(charge_fields(charge))
    click.echo(followup_lines(followups))
    if refunds:
        click.echo(f"refunded  {won(refunded)} of {won(charge.approved_amount)}")
        click.echo("")
        click.echo(refunds_table(refunds))
    click.echo("")
    if attempts:
        click.echo("attempts (NAVER Pay calls, oldest first):")
        click.echo(attempts_table(attempts, raw=raw))
    else:
        click.echo("no NAVER Pay call made yet")


# --- issue 9: purchase confirm / point accrual state, cash-receipt amount -------------------

FOLLOWUP_COLUMNS = ("kind", "status", "attempts", "key_round", "next_at", "last_code", "last_message",
                    "done_at", "naver_time")
FOLLOWUP_TITLES = {"confirm": "purchase confirm (거래완료)", "accrual": "point accrual (포인트 적립)"}


def followup_dict(row: ChargeFollowup) -> dict[str, Any]:
    """A charge_followups row for ``--json``."""
    return {name: getattr(row, name) for name in FOLLOWUP_COLUMNS}


def followup_lines(rows: list[ChargeFollowup]) -> str:
    """``confirm``/``accrual`` state lines under the charge's fields."""
    if not rows:
        return fields([("confirm/accrual", "none owed (the merchant's settlement/point basis)")])
    pairs = []
    for row in rows:
        if row.status == "done":
            state = f"done {when(row.done_at)}" + (f" (confirmTime {when(row.naver_time)})"
                                                  if row.naver_time else "")
        elif row.status == "failed":
            state = f"failed after {row.attempts} tries: {row.last_code}"
        else:
            state = f"{row.status}, next {when(row.next_at)}" + (f", last {row.last_code}"
                                                                 if row.last_code else "")
        pairs.append((FOLLOWUP_TITLES.get(row.kind, row.kind), state))
    return fields(pairs)


@charges.command("cash-amount")
@click.argument("key", metavar="CHARGE_ID")
@json_option
def cash_amount(key: str, as_json: bool) -> None:
    """Ask NAVER Pay how much of a charge a cash receipt (현금영수증) may be issued for."""
    from models import ChargeStatus
    from worker.cli.registrations import _client_for
    from worker.naverpay.errors import NaverPayError

    with current_env().sessions()() as session:
        charge = find_charge(session, key)
        merchant = charge.subscription.merchant
        if charge.payment_id is None or charge.status != ChargeStatus.SUCCEEDED:
            raise Refused(f"charge {charge.id} is {charge.status}: only a succeeded charge has a "
                          "cash-receipt amount")
        payment_id = charge.payment_id
        client = _client_for()(merchant)
    try:
        amount = client.cash_amount(payment_id=payment_id)
    except NaverPayError as exc:
        raise CliError(f"NAVER Pay did not answer the cash-amount query for charge {charge.id}: "
                       f"{exc.code or type(exc).__name__}: {exc}") from None
    data = {"charge_id": charge.id, "payment_id": payment_id, "total_cash_amount": amount.total_cash_amount,
            "supply_cash_amount": amount.supply_cash_amount, "vat_cash_amount": amount.vat_cash_amount}
    if as_json:
        emit_json(data)
        return
    click.echo(fields([("charge", charge.id), ("paymentId", payment_id),
                       ("현금영수증 대상 (total)", won(amount.total_cash_amount)),
                       ("supply", won(amount.supply_cash_amount)), ("VAT", won(amount.vat_cash_amount))]))
