"""``npay-billing charges list | show``: the charges table and each charge's NAVER calls."""

from __future__ import annotations

import click

from worker.cli.output import emit_json
from worker.cli.support import current_env, find_charge, find_subscription, json_option
from worker.cli.views import attempt_dict, attempts_table, charge_dict, charge_fields, charges_table

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

    from models import ChargeAttempt

    with current_env().sessions()() as session:
        charge = find_charge(session, key)
        attempts = list(session.scalars(
            select(ChargeAttempt).where(ChargeAttempt.charge_id == charge.id)
            .order_by(ChargeAttempt.id)))
    if as_json:
        emit_json({"charge": charge_dict(charge),
                   "attempts": [attempt_dict(a, raw=raw) for a in attempts]})
        return
    click.echo(charge_fields(charge))
    click.echo("")
    if attempts:
        click.echo("attempts (NAVER Pay calls, oldest first):")
        click.echo(attempts_table(attempts, raw=raw))
    else:
        click.echo("no NAVER Pay call made yet")
