"""``npay-billing registrations``: NAVER Pay registrations (billing keys).

``sync``: find registrations customers ended in NAVER Pay, now. The same pass as the
``worker.sync_registrations`` beat entry (worker/registration_sync.py), but one whole sweep per
merchant from ``--since`` (default: the merchant's stored start, or a month before its oldest
billable subscription) to now, every page; the periodic cursor is not moved. Exit code 1 when
NAVER's list could not be read for some merchant (what was read is still applied and shown).

``complete``: finish a NAVER Pay registration by hand, for merchants who run their own front
end (NAVER's window returned to *their* page with ``reserveId`` and ``tempReceiptId``), and to
resume a registration whose approval was not confirmed (the web page said "처리 중"). The
approval is sent at most once per reserveId (same idempotency key on every resend); the
subscription is created (or, with ``--change``, moved to the new registration) in the same
transaction that records it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from worker.cli.output import KST, emit_json, table, when
from worker.cli.support import CliError, SetupError, current_env, find_subscription, json_option

if TYPE_CHECKING:
    from models import Merchant
    from worker.naverpay.client import NaverPayClient
    from worker.registration_sync import SyncReport

PLAN_OPTIONS = ("merchant_user_id", "product_code", "product_name", "amount", "cron")


@click.group()
def registrations() -> None:
    """NAVER Pay registrations (billing keys): complete one made in NAVER's window, and sync
    with what customers did in NAVER Pay."""


@registrations.command("sync")
@click.option("--since", type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
              metavar="DATE", help="Sweep registrations made from this day (Asia/Seoul) on.")
@json_option
@click.pass_context
def sync(ctx: click.Context, since: datetime | None, as_json: bool) -> None:
    """Revoke subscriptions whose registration NAVER Pay lists as ended (their pending
    charges are canceled and a registration.ended webhook event is queued)."""
    from models import utcnow
    from worker.registration_sync import sync_by_hand

    start = since.replace(tzinfo=KST) if since is not None else None
    now = utcnow()
    if start is not None and start > now:
        raise SetupError(f"--since {since:%Y-%m-%d} is in the future")
    env = current_env()
    report = sync_by_hand(env.sessions(), _client_for(), now, since=start)
    _deliver_later(report)
    if as_json:
        emit_json(report.to_json())
    else:
        _print(report)
    if any(m.error for m in report.merchants):
        ctx.exit(1)


def _client_for() -> Callable[[Merchant], NaverPayClient]:
    """The worker's per-merchant NAVER Pay clients (credentials from the environment)."""
    from worker.runtime import Runtime
    from worker.settings import Settings

    env = current_env()
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        raise SetupError(f"configuration: {exc}") from None
    return Runtime(settings=settings, engine=env.engine(), sessions=env.sessions()).client_for


def _deliver_later(report: SyncReport) -> None:
    """The outbox rows are committed; the walk enqueues their delivery (no broker needed)."""
    if report.notification_ids:
        click.echo(f"{len(report.notification_ids)} registration.ended event(s) queued; the walk "
                   "delivers them", err=True)


def _print(report: SyncReport) -> None:
    if not report.merchants:
        click.echo("no merchant has billable subscriptions; nothing to sync")
        return
    click.echo(table(["MERCHANT", "PAGES", "EXPIRED ROWS", "ENDED", "RESULT"],
                     [[m.merchant_id, m.pages, m.rows, len(m.ended), m.error or m.skipped or "ok"]
                      for m in report.merchants], right=["MERCHANT", "PAGES", "EXPIRED ROWS", "ENDED"]))
    ended = [(m.merchant_id, e) for m in report.merchants for e in m.ended]
    if ended:
        click.echo("")
        click.echo("revoked (the customer ended the registration in NAVER Pay):")
        click.echo(table(["SUBSCRIPTION", "RECURRENT ID", "ENDED AT", "CANCELED CHARGES"],
                         [[e.subscription_id, e.recurrent_id, when(e.expired_at),
                           ",".join(map(str, e.canceled_charge_ids)) or None] for _, e in ended],
                         right=["SUBSCRIPTION"]))


@registrations.command("complete")
@click.option("--reserve-id", required=True, help="reserveId NAVER returned to your returnUrl.")
@click.option("--temp-receipt-id", required=True, help="tempReceiptId NAVER returned with it.")
@click.option("--user", "merchant_user_id", help="NEW: your id of the customer.")
@click.option("--product-code", help="NEW: your product code, e.g. PLAN-M.")
@click.option("--product-name", help="NEW: shown to the customer, e.g. '월간 구독'.")
@click.option("--amount", type=int, help="NEW: won charged per cycle.")
@click.option("--tax-free", "tax_free_amount", type=int, default=0, show_default=True)
@click.option("--cron", help="NEW: when to bill (5 fields, or 6 with seconds last).")
@click.option("--timezone", default="Asia/Seoul", show_default=True)
@click.option("--merchant-id", type=int, default=1, show_default=True)
@click.option("--email", "customer_email", help="NEW: customer e-mail for notifications.")
@click.option("--name", "customer_name", help="NEW: customer name for notifications.")
@click.option("--change", "change", metavar="ID_OR_RECURRENT_ID",
              help="CHANGE: the subscription whose payment means this registration replaces.")
@json_option
def complete(reserve_id: str, temp_receipt_id: str, change: str | None, as_json: bool,
             **plan: Any) -> None:
    """Approve a registration and create its subscription (or move one with --change).

    \b
    Without plan options and --change, resumes the attempt already recorded for RESERVE_ID
    (e.g. one the returnUrl page left "처리 중").
    \b
    Example:
      npay-billing registrations complete --reserve-id 20261129cmVz... \\
          --temp-receipt-id 20261129TP1003007822dHRWam --user user-42 \\
          --product-code PLAN-M --product-name '월간 구독' --amount 9900 --cron '0 9 1 * *'
    """
    from worker.cli.web import build_registrar

    env = current_env()
    registrar = build_registrar(env)
    flow = _flow(env, change, plan)
    outcome = registrar.complete(flow, reserve_id, temp_receipt_id)
    if as_json:
        emit_json({"status": outcome.status, "action": outcome.action, "code": outcome.code,
                   "subscription_id": outcome.subscription_id, "recurrent_id": outcome.recurrent_id,
                   "pre_recurrent_id": outcome.pre_recurrent_id, "replayed": outcome.replayed,
                   "detail": outcome.detail})
    if outcome.status == "completed":
        if not as_json:
            verb = "moved to" if outcome.action == "CHANGE" else "created on"
            again = " (already recorded)" if outcome.replayed else ""
            click.echo(f"subscription {outcome.subscription_id} {verb} recurrentId "
                       f"{outcome.recurrent_id}{again}")
        return
    hint = "; run the command again to resume" if outcome.status == "pending" else ""
    raise CliError(f"registration {outcome.status}: {outcome.detail or outcome.code}{hint}")


def _flow(env: Any, change: str | None, plan: dict[str, Any]) -> Any:
    from worker.web.flow import Flow

    given = [name for name in PLAN_OPTIONS if plan.get(name) is not None]
    if change is not None:
        if given:
            raise SetupError("--change takes no plan options (the subscription keeps its plan)")
        with env.sessions()() as session:
            sub = find_subscription(session, change)
        return Flow(action="CHANGE", merchant_id=sub.merchant_id, product_code=sub.product_code,
                    product_name=sub.product_name, amount=sub.amount, subscription_id=sub.id,
                    target_recurrent_id=sub.recurrent_id)
    if not given:
        return None  # resume what is recorded for this reserveId
    _check_plan(env, plan)
    return Flow(action="NEW", merchant_id=plan["merchant_id"], product_code=plan["product_code"],
                product_name=plan["product_name"], amount=plan["amount"],
                merchant_user_id=plan["merchant_user_id"], customer_email=plan["customer_email"],
                customer_name=plan["customer_name"], tax_free_amount=plan["tax_free_amount"],
                cron=plan["cron"], timezone=plan["timezone"])


def _check_plan(env: Any, plan: dict[str, Any]) -> None:
    """Everything wrong with the plan, before NAVER is asked anything."""
    from models import Merchant
    from scheduler.cycles import CycleError, parse_zone, validate_cron

    missing = [f"--{name.replace('_', '-')}" for name in PLAN_OPTIONS if plan.get(name) is None]
    found = [f"{', '.join(missing)} required for a new subscription"] if missing else []
    amount = plan.get("amount")
    if amount is not None and amount <= 0:
        found.append(f"--amount must be a positive number of won, got {amount}")
    elif amount is not None and not 0 <= plan["tax_free_amount"] <= amount:
        found.append(f"--tax-free must be between 0 and the amount ({amount})")
    try:
        if plan.get("cron") is not None:
            plan["cron"] = validate_cron(plan["cron"])
        parse_zone(plan["timezone"])
    except CycleError as exc:
        found.append(str(exc))
    with env.sessions()() as session:
        if session.get(Merchant, plan["merchant_id"]) is None:
            found.append(f"no merchant with id {plan['merchant_id']}")
    if found:
        raise SetupError("cannot complete the registration: " + "; ".join(found))
