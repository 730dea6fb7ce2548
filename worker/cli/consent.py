"""``npay-billing consent add | list | record | cancel | link``: price changes and the
customer's consent (the consent rule, ``scheduler/consent.py``; not legal advice).

``add`` inserts the row a user would insert with SQL into ``price_changes``; ``record`` writes
consent given by other means (phone, a signed form, the shop's own site); ``link`` prints the
signed consent link (``BILLING_CONSENT_SECRET``, ``BILLING_PUBLIC_URL``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from worker.cli.output import emit_json, table, when, won
from worker.cli.support import CliError, NotFound, SetupError, current_env, find_subscription, json_option

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from models import PriceChange, Subscription

CHANGE_COLUMNS = ("id", "subscription_id", "kind", "status", "old_amount", "new_amount", "effective_at",
                  "notice_sent_at", "consented_at", "consent_via", "paused_at", "applied_at", "note")


def change_dict(change: PriceChange) -> dict[str, Any]:
    """Every column of a price_changes row."""
    return {name: getattr(change, name) for name in CHANGE_COLUMNS}


def consent_state(change: PriceChange) -> str:
    """Notice and consent in a few words."""
    if change.status in ("applied", "canceled"):
        return change.status
    notice = "notice not sent" if change.notice_sent_at is None else f"notice {when(change.notice_sent_at)}"
    consent = (f"consented {when(change.consented_at)} ({change.consent_via})" if change.consented_at
               else "no consent yet")
    return f"{notice}; {consent}" + ("; subscription paused for it" if change.paused_at else "")


def changes_table(changes: list[PriceChange]) -> str:
    """Price changes, one line each."""
    return table(["ID", "SUB", "KIND", "NEW AMOUNT", "EFFECTIVE", "STATUS", "NOTICE / CONSENT"],
                 [[c.id, c.subscription_id, c.kind, won(c.new_amount), when(c.effective_at), c.status,
                   consent_state(c)] for c in changes], right=["ID", "SUB", "NEW AMOUNT"])


def consent_lines(session: Session, sub: Subscription) -> str:
    """What ``subscriptions show`` prints about the consent rule for ``sub``."""
    from sqlalchemy import select

    from models import Charge, PriceChange

    open_changes = list(session.scalars(select(PriceChange).where(
        PriceChange.subscription_id == sub.id, PriceChange.status.in_(("pending", "consented")))
        .order_by(PriceChange.effective_at, PriceChange.id)))
    held = list(session.scalars(select(Charge.id).where(Charge.subscription_id == sub.id,
                                                        Charge.status == "consent_held")))
    lines = [f"agreed amount: {won(sub.agreed_amount)}"
             + (" (not seen by the walk yet)" if sub.agreed_amount is None else "")]
    if sub.trial_ends_at is not None:
        lines.append(f"free trial until: {when(sub.trial_ends_at)}")
    if held:
        lines.append(f"charges held for consent: {', '.join(map(str, held))}")
    if open_changes:
        lines.append("pending price changes:")
        lines.append(changes_table(open_changes))
    else:
        lines.append("pending price changes: none")
    return "\n".join(lines)


@click.group()
def consent() -> None:
    """Price changes and the customer's consent to them (전자상거래법; not legal advice)."""


def _parse_when(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise SetupError(f"--effective {value!r} is not a date (YYYY-MM-DD) or ISO-8601 time") from None
    if moment.tzinfo is None:
        from worker.cli.output import KST

        moment = moment.replace(tzinfo=KST)  # people write Seoul dates
    return moment.astimezone(UTC)


@consent.command("add")
@click.argument("key", metavar="SUBSCRIPTION")
@click.option("--amount", type=int, required=True, help="The new amount per cycle, in won.")
@click.option("--effective", required=True, help="From when (Seoul date or ISO-8601), e.g. 2027-01-01.")
@json_option
def add(key: str, amount: int, effective: str, as_json: bool) -> None:
    """Add a price change (the same row an SQL insert into price_changes makes)."""
    from models import PriceChange

    if amount <= 0:
        raise SetupError(f"--amount must be a positive number of won, got {amount}")
    at = _parse_when(effective)
    with current_env().sessions().begin() as session:
        sub = find_subscription(session, key)
        change = PriceChange(subscription_id=sub.id, new_amount=amount, effective_at=at)
        session.add(change)
        session.flush()
        session.refresh(change)
        data = change_dict(change)
    if as_json:
        emit_json(data)
        return
    click.echo(f"added price change {data['id']}: subscription {sub.id} to {won(amount)} from {when(at)}; "
               "a raise is billed only with the customer's consent")


@consent.command("list")
@click.option("--all", "show_all", is_flag=True, help="Also applied and canceled changes.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@json_option
def list_(show_all: bool, limit: int, as_json: bool) -> None:
    """List price changes (open ones unless --all), by effective date."""
    from sqlalchemy import select

    from models import PriceChange

    query = select(PriceChange)
    if not show_all:
        query = query.where(PriceChange.status.in_(("pending", "consented")))
    with current_env().sessions()() as session:
        changes = list(session.scalars(query.order_by(PriceChange.effective_at, PriceChange.id).limit(limit)))
    if as_json:
        emit_json([change_dict(c) for c in changes])
    elif not changes:
        click.echo("no price changes" + ("" if show_all else " open; --all shows applied ones"))
    else:
        click.echo(changes_table(changes))


@consent.command("record")
@click.argument("change_id", type=int, required=False)
@click.option("--subscription", "key", help="Instead of CHANGE_ID: consent to this subscription's amount.")
@click.option("--amount", type=int, help="With --subscription: the amount consented to.")
@click.option("--via", required=True, help="How it was given, e.g. 'phone 2026-11-29, agent kim'.")
@json_option
def record(change_id: int | None, key: str | None, amount: int | None, via: str, as_json: bool) -> None:
    """Record consent given by other means than the link.

    \b
    Examples:
      npay-billing consent record 7 --via 'phone, 2026-11-29'
      npay-billing consent record --subscription 42 --amount 12900 --via 'signed form'
    """
    from models import utcnow
    from worker.consent import ConsentError, record_consent, record_consent_to_amount

    if (change_id is None) == (key is None):
        raise SetupError("give either CHANGE_ID or --subscription with --amount")
    if key is not None and amount is None:
        raise SetupError("--subscription needs --amount (the amount the customer agreed to)")
    try:
        with current_env().sessions().begin() as session:
            if change_id is not None:
                change = record_consent(session, change_id, utcnow(), f"cli: {via}")
            else:
                assert amount is not None and key is not None
                sub = find_subscription(session, key)
                change = record_consent_to_amount(session, sub.id, amount, utcnow(), f"cli: {via}")
            data = change_dict(change)
    except ConsentError as exc:
        raise (NotFound if "no " in str(exc)[:3] else CliError)(str(exc)) from None
    if as_json:
        emit_json(data)
        return
    click.echo(f"consent recorded for price change {data['id']} ({won(data['new_amount'])} from "
               f"{when(data['effective_at'])}); the walk bills it from its effective cycle")


@consent.command("cancel")
@click.argument("change_id", type=int)
def cancel(change_id: int) -> None:
    """Withdraw a price change that is not applied yet."""
    from models import PriceChange, utcnow

    with current_env().sessions().begin() as session:
        change = session.get(PriceChange, change_id, with_for_update=True)
        if change is None:
            raise NotFound(f"no price change with id {change_id}; see `npay-billing consent list`")
        if change.status == "applied":
            raise CliError(f"price change {change_id} is already applied; add a new one to change the amount")
        change.status, change.updated_at = "canceled", utcnow()
    click.echo(f"price change {change_id} canceled")


@consent.command("link")
@click.argument("change_id", type=int)
def link(change_id: int) -> None:
    """Print the signed consent link of a price change."""
    from models import PriceChange, utcnow
    from worker.settings import Settings

    config = Settings.from_env().consent
    if not config.secret:
        raise SetupError("set BILLING_CONSENT_SECRET (and BILLING_PUBLIC_URL) to make consent links")
    with current_env().sessions()() as session:
        if session.get(PriceChange, change_id) is None:
            raise NotFound(f"no price change with id {change_id}; see `npay-billing consent list`")
    from worker.consent import consent_url

    click.echo(consent_url(config, change_id, utcnow()))
