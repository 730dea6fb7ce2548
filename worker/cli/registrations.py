"""``npay-billing registrations sync``: find registrations customers ended in NAVER Pay, now.

The same pass as the ``worker.sync_registrations`` beat entry (worker/registration_sync.py),
but one whole sweep per merchant from ``--since`` (default: the merchant's stored start, or a
month before its oldest billable subscription) to now, every page; the periodic cursor is not
moved. Exit code 1 when NAVER's list could not be read for some merchant (what was read is
still applied and shown).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

import click

from worker.cli.output import KST, emit_json, table, when
from worker.cli.support import SetupError, current_env, json_option

if TYPE_CHECKING:
    from models import Merchant
    from worker.naverpay.client import NaverPayClient
    from worker.registration_sync import SyncReport


@click.group()
def registrations() -> None:
    """NAVER Pay registrations (billing keys): sync with what customers did in NAVER Pay."""


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
