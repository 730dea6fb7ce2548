"""``npay-billing subscriptions add | list | show`` (pause/resume/cancel: ``lifecycle``).

``add`` inserts exactly the row a user would insert with SQL (the columns given, server
defaults for the rest, ``next_charge_at`` NULL so the walk schedules the first cycle), but
checks it first, so a typo is reported here instead of turning the row ``invalid`` later.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from worker.cli.lifecycle import cancel, pause, resume
from worker.cli.output import emit_json, when
from worker.cli.support import SetupError, current_env, find_subscription, json_option
from worker.cli.views import (
    charge_dict,
    charges_table,
    subscription_dict,
    subscription_fields,
    subscriptions_table,
)

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

SUBSCRIPTION_STATUSES = ("active", "paused", "canceled", "revoking", "revoked", "invalid", "expire_failed")
REQUIRED_TEXT = {"recurrent_id": "--recurrent-id", "merchant_user_id": "--user",
                 "product_code": "--product-code", "product_name": "--product-name"}


@click.group()
def subscriptions() -> None:
    """Add, inspect, pause, resume and cancel subscriptions (one per NAVER Pay recurrentId)."""


@subscriptions.command("add")
@click.option("--recurrent-id", required=True, help="The billing key NAVER Pay issued at registration.")
@click.option("--user", "merchant_user_id", required=True, help="Your id of the customer (merchantUserId).")
@click.option("--product-code", required=True, help="Your product code, e.g. PLAN-M.")
@click.option("--product-name", required=True, help="Shown to the customer, e.g. '월간 구독'.")
@click.option("--amount", type=int, required=True,
              help="Won charged per cycle (at least 100, NAVER Pay's minimum).")
@click.option("--tax-free", "tax_free_amount", type=int, default=0, show_default=True,
              help="The tax-free part of the amount, in won.")
@click.option("--cron", required=True,
              help="When to bill: 5 fields (minute hour day month weekday), or 6 with seconds last.")
@click.option("--timezone", default="Asia/Seoul", show_default=True, help="IANA zone the cron is read in.")
@click.option("--merchant-id", type=int, default=1, show_default=True, help="Row of the merchants table.")
@click.option("--email", "customer_email", help="Customer e-mail for notifications.")
@click.option("--name", "customer_name", help="Customer name for notifications.")
@json_option
def add(as_json: bool, **values: Any) -> None:
    """Add a subscription; the walk schedules its first charge.

    \b
    Example:
      npay-billing subscriptions add --recurrent-id 20261128RE1003007926ZStYYU \\
          --user user-42 --product-code PLAN-M --product-name '월간 구독' \\
          --amount 9900 --cron '0 9 1 * *'
    """
    from sqlalchemy import insert
    from sqlalchemy.exc import IntegrityError

    from models import Subscription

    row = {k: v for k, v in values.items() if v is not None}
    sessions = current_env().sessions()
    try:
        with sessions.begin() as session:
            _check_new(session, row)
            new_id = session.execute(insert(Subscription).values(**row)
                                     .returning(Subscription.id)).scalar_one()
    except IntegrityError as exc:  # a concurrent insert of the same recurrentId
        raise SetupError(f"cannot add the subscription: {str(exc.orig).splitlines()[0]}") from None
    if as_json:
        with sessions() as session:
            emit_json(subscription_dict(find_subscription(session, str(new_id))))
        return
    click.echo(f"added subscription {new_id} (recurrentId {row['recurrent_id']}); "
               "the walk schedules its first charge")


def _check_new(session: Session, row: dict[str, Any]) -> None:
    """Normalise ``row`` in place, or SetupError listing everything wrong with it: the walk's
    own checks (NAVER's input limits, a cron that fires no closer than the merchant's
    ``min_cycle_interval``), so a row this command accepts is never marked invalid later."""
    from sqlalchemy import select

    from models import Merchant, Subscription
    from scheduler.cycles import CycleError, parse_zone, schedule_problem, validate_cron
    from scheduler.validation import limit_problems, merchant_problems, min_interval

    found = [f"{option} is empty" for column, option in REQUIRED_TEXT.items()
             if not row[column].strip()]
    found += [_as_option(problem) for problem in limit_problems(Subscription(**row))]
    merchant = session.get(Merchant, row["merchant_id"])
    try:
        row["cron"] = validate_cron(row["cron"])
    except CycleError as exc:
        found.append(str(exc))
    else:
        if merchant is not None:
            problem = schedule_problem(row["cron"], min_interval(merchant))
            if problem:
                found.append(problem)
    try:
        parse_zone(row["timezone"])
    except CycleError as exc:
        found.append(str(exc))
    if merchant is None:
        found.append(f"no merchant with id {row['merchant_id']} (see the merchants table)")
    else:
        found.extend(merchant_problems(merchant))
    taken = session.scalar(select(Subscription.id).where(Subscription.recurrent_id == row["recurrent_id"]))
    if taken is not None:
        found.append(f"recurrentId {row['recurrent_id']!r} is already subscription {taken}")
    if found:
        raise SetupError("cannot add the subscription: " + "; ".join(found))


def _as_option(problem: str) -> str:
    """A column named in a walk problem, named as this command's option instead."""
    for column, option in {**REQUIRED_TEXT, "amount": "--amount", "tax_free_amount": "--tax-free"}.items():
        if problem.startswith(column + " "):
            return option + problem[len(column):]
    return problem


@subscriptions.command("list")
@click.option("--status", type=click.Choice(SUBSCRIPTION_STATUSES), help="Only this status.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@json_option
def list_(status: str | None, limit: int, as_json: bool) -> None:
    """List subscriptions, oldest first."""
    from sqlalchemy import func, select

    from models import Subscription

    query = select(Subscription)
    if status:
        query = query.where(Subscription.status == status)
    with current_env().sessions()() as session:
        subs = list(session.scalars(query.order_by(Subscription.id).limit(limit)).unique())
        total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    if as_json:
        emit_json([subscription_dict(s) for s in subs])
        return
    if not subs:
        click.echo("no subscriptions" + (f" with status {status}" if status else "")
                   + "; add one with `npay-billing subscriptions add` or SQL")
        return
    click.echo(subscriptions_table(subs))
    if total > len(subs):
        click.echo(f"(showing {len(subs)} of {total}; use --limit)")



@subscriptions.command("show")
@click.argument("key", metavar="ID_OR_RECURRENT_ID")
@click.option("--charges", "charge_limit", type=click.IntRange(min=0), default=10, show_default=True,
              help="How many of its most recent charges to show.")
@json_option
def show(key: str, charge_limit: int, as_json: bool) -> None:
    """Show one subscription and its most recent charges."""
    from sqlalchemy import select

    from models import Charge, PriceChange
    from worker.cli.consent import change_dict, consent_lines

    with current_env().sessions()() as session:
        sub = find_subscription(session, key)
        recent = list(session.scalars(
            select(Charge).where(Charge.subscription_id == sub.id)
            .order_by(Charge.cycle_at.desc()).limit(charge_limit)).unique())
        consent_text = consent_lines(session, sub)
        changes = [change_dict(c) for c in session.scalars(
            select(PriceChange).where(PriceChange.subscription_id == sub.id).order_by(PriceChange.id))]
    if as_json:
        emit_json({"subscription": subscription_dict(sub), "charges": [charge_dict(c) for c in recent],
                   "price_changes": changes})
        return
    click.echo(subscription_fields(sub))
    click.echo(consent_text)
    click.echo("")
    if recent:
        click.echo(f"recent charges (newest first, at most {charge_limit}):")
        click.echo(charges_table(recent))
    elif sub.next_charge_at:
        click.echo(f"no charges yet; the first is due {when(sub.next_charge_at)}")
    else:
        click.echo("no charges yet")


subscriptions.add_command(pause)
subscriptions.add_command(resume)
subscriptions.add_command(cancel)
