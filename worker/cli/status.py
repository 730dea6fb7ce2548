"""``npay-billing status`` (an overview) and ``watch`` (one live line per interval).

What they show is read by :func:`worker.overview.overview`, which the metrics endpoint uses
too; a walk lag that keeps growing means beat or the workers are not keeping up (or not
running).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import click

from worker.cli.output import clock_time, duration, emit_json, fields, table, when, won
from worker.cli.support import current_env, json_option

if TYPE_CHECKING:
    from worker.overview import Overview


def _nonzero(counts: dict[str, int]) -> str:
    shown = [f"{name} {n}" for name, n in counts.items() if n]
    return " · ".join(shown) + f"  (total {sum(counts.values())})" if shown else "none"


def _read(next_limit: int = 5) -> Overview:
    from models import utcnow
    from worker.overview import overview

    with current_env().sessions()() as session:
        return overview(session, utcnow(), next_limit)


@click.command()
@json_option
def status(as_json: bool) -> None:
    """Counts by state, the walk's lag, open unknown outcomes, what needs a human (held and
    surfaced charges, registrations not expired) and the next due charges."""
    view = _read()
    if as_json:
        emit_json(view.to_json())
        return
    lag = duration(view.lag_seconds) + (f" (oldest due {when(view.oldest_due)})" if view.oldest_due
                                        else " (nothing overdue)")
    click.echo(fields([
        ("subscriptions", _nonzero(view.subscriptions)), ("charges", _nonzero(view.charges)),
        ("walk lag", lag),
        ("unknown open", f"{view.unknown_open} (unknown/approving: resolved via NAVER history)"),
        ("notifications", f"{view.notifications_pending} pending, "
                          f"{view.notifications.get('failed', 0)} failed"),
        *_attention(view),
        ("now", when(view.now)),
    ]))
    if view.next_due:
        click.echo("\nnext due:")
        click.echo(table(["WHEN", "KIND", "SUB", "CHARGE", "RECURRENT ID", "AMOUNT"],
                         [[when(d["at"]), d["kind"], d["subscription_id"], d["charge_id"],
                           d["recurrent_id"], won(d["amount"])] for d in view.next_due],
                         right=["SUB", "CHARGE", "AMOUNT"]))


def _attention(view: Overview) -> list[tuple[str, str]]:
    """What needs a human: held and surfaced charges, registrations not expired, refunds held
    or unsettled."""
    oldest = (f", oldest {duration(view.oldest_stuck_seconds)} (since {when(view.oldest_stuck)})"
              if view.oldest_stuck else "")
    revoking, failed = view.subscriptions.get("revoking", 0), view.subscriptions.get("expire_failed", 0)
    return [
        ("held", f"{view.held} (merchant-side fault: check credentials and settings; resumes by itself)"),
        ("unsettled", f"{view.stuck} charge(s), {view.surfaced} surfaced to a human{oldest}"),
        ("consent", f"{view.charges.get('consent_held', 0)} charge(s) held for the customer's consent "
                    "(amount above the agreed one: `npay-billing consent record`, or lower the amount)"),
        ("expiring", f"{revoking} revoking, {failed} expire_failed"
                     + (" (NAVER would not expire them: check in NAVER Pay)" if failed else "")),
        ("refunds", f"{view.refunds_held} held (merchant-side fault: resumes by itself), "
                    f"{view.refunds_unsettled} unsettled (resolved via NAVER history), "
                    f"{view.refunds.get('failed', 0)} failed"),
    ]


def watch_line(view: Overview) -> str:
    """One compact progress line."""
    c = view.charges
    failed = c["failed"] + c["amount_mismatch"]
    nxt = view.next_due[0]["at"] if view.next_due else None
    return (f"{when(view.now)}  succeeded {c['succeeded']} · retrying {c['retry_wait']} · "
            f"failed {failed} · expired {view.subscriptions['revoked']} · "
            f"unknown {view.unknown_open} · notify {view.notifications_pending} · "
            f"next {clock_time(nxt)} · lag {duration(view.lag_seconds)}")


@click.command()
@click.option("--interval", type=click.FloatRange(min=0.1), default=2.0, show_default=True,
              help="Seconds between two lines.")
@click.option("--once", is_flag=True, help="Print one line and exit.")
def watch(interval: float, once: bool) -> None:
    """Print live progress, one line every --interval seconds, until Ctrl-C.

    Columns: charges succeeded, retrying (retry_wait), failed (incl. amount mismatch),
    registrations expired (subscriptions revoked), unknown outcomes open, notifications
    pending, the next due time and the walk's lag.
    """
    try:
        while True:
            click.echo(watch_line(_read(next_limit=1)))
            if once:
                return
            time.sleep(interval)
    except KeyboardInterrupt:
        click.echo("", err=True)
