"""``npay-billing refund CHARGE_ID [--amount N] [--tax-free N] [--reason TEXT] [--wait] [--json]``.

The command stores the refund (``refund_requests.request_refund``: in one transaction, with the
over-refund guard; a refund over what is left is refused here, exit 1, nothing stored), then
sends ``worker.refund_charge(refund_id)`` to the broker; a running worker talks to NAVER. If the
broker cannot be reached the refund stays stored (``requested``) and the walk sends it once a
worker runs (exit 2, saying so).

``--wait`` follows the refund by polling the database until it is succeeded, completing
(NAVER's CancelNotComplete: refunded, NAVER finishes it by itself), failed or held, or the
timeout passes. Exit 0 only for succeeded or completing.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from worker.cli.output import emit_json, when, won
from worker.cli.retry import broker_url
from worker.cli.support import CliError, Env, SetupError, current_env, json_option, redact

if TYPE_CHECKING:
    from models import Refund

ENDED = frozenset({"succeeded", "completing", "failed", "held"})
OK = frozenset({"succeeded", "completing"})


def refund_view(env: Env, refund_id: int) -> dict[str, Any]:
    """The refund and its charge's refund figures, as ``--json`` prints them."""
    from models import Charge, Refund, Subscription
    from worker.refund_requests import refund_payload, totals

    with env.sessions()() as s:
        refund = s.get(Refund, refund_id)
        assert refund is not None
        charge = s.get(Charge, refund.charge_id)
        sub = s.get(Subscription, refund.subscription_id)
        assert charge is not None and sub is not None
        figures = totals(s, charge)
        view = refund_payload(refund, charge, sub, figures.refunded)
        view["charge"]["refundable_amount"] = figures.refundable
        view["refund"].update(idempotency_key=refund.idempotency_key, expected_rest=refund.expected_rest,
                              next_attempt_at=refund.next_attempt_at, created_at=refund.created_at,
                              refunded_at=refund.refunded_at, confirmed_at=refund.confirmed_at)
        return {"refund": view["refund"], "charge": view["charge"]}


def send_refund(url: str, refund_id: int) -> None:
    """Publish ``worker.refund_charge(refund_id)``; SetupError if the broker is down."""
    from celery import Celery
    from kombu.exceptions import KombuError
    from redis.exceptions import RedisError

    app = Celery("npay-billing", set_as_current=False)
    app.config_from_object("celeryconfig")
    app.conf.broker_url = url
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0.2, timeout=3)
            app.send_task("worker.refund_charge", args=[refund_id], connection=conn, retry=False)
    except (KombuError, RedisError, OSError) as exc:
        raise SetupError(f"refund {refund_id} is stored (requested) but the broker at {redact(url)} "
                         f"cannot be reached: {exc}; the walk sends it once a worker runs") from None


def _read(env: Env, refund_id: int) -> Refund:
    from models import Refund

    with env.sessions()() as s:
        refund = s.get(Refund, refund_id)
        assert refund is not None
        return refund


def follow(env: Env, refund_id: int, timeout: float, poll: float,
           on_change: Any) -> tuple[str, bool]:
    """Poll until the refund ends (``ENDED``) or ``timeout`` passes: (status, timed out)."""
    from models import utcnow

    deadline = time.monotonic() + timeout
    last = _read(env, refund_id).status
    while True:
        refund = _read(env, refund_id)
        if refund.status != last:
            on_change(utcnow(), last, refund)
            last = refund.status
        if last in ENDED:
            return last, False
        if time.monotonic() >= deadline:
            return last, True
        time.sleep(poll)


@click.command()
@click.argument("charge_id", type=int)
@click.option("--amount", type=click.IntRange(min=1), metavar="WON",
              help="Refund this much (default: everything not refunded yet).")
@click.option("--tax-free", "tax_free", type=click.IntRange(min=0), metavar="WON",
              help="Tax-free part of the refund (default: in proportion to what is left of each part).")
@click.option("--reason", metavar="TEXT", help="Cancel reason sent to NAVER (at most 256 bytes).")
@click.option("--wait", is_flag=True, help="Follow the refund until it ends (polls the database).")
@click.option("--timeout", type=click.FloatRange(min=0), default=120.0, show_default=True,
              help="Seconds --wait follows the refund.")
@click.option("--poll", type=click.FloatRange(min=0.05), default=0.5, hidden=True)
@json_option
def refund(charge_id: int, amount: int | None, tax_free: int | None, reason: str | None, wait: bool,
           timeout: float, poll: float, as_json: bool) -> None:
    """Refund a succeeded charge in full or in part (NAVER Pay cancel).

    Any number of partial refunds up to the approved amount; a refund over what is left is
    refused before anything is stored. Sends worker.refund_charge to the broker.
    """
    from models import utcnow
    from worker.refund_requests import RefundRefused, request_refund

    env = current_env()
    try:
        stored = request_refund(env.sessions(), charge_id, utcnow(), amount=amount, tax_free=tax_free,
                                reason=reason)
    except RefundRefused as exc:
        raise CliError(str(exc)) from None
    url = broker_url()
    if not as_json:
        click.echo(f"refund {stored.id} of charge {charge_id}: {won(stored.amount)} "
                   f"(tax-free {won(stored.tax_free_amount)}) stored; sending worker.refund_charge "
                   f"to {redact(url)}")
    send_refund(url, stored.id)
    if not wait:
        if as_json:
            emit_json({**refund_view(env, stored.id), "broker": redact(url)})
        return
    _wait(env, stored.id, timeout, poll, as_json, url)


def _wait(env: Env, refund_id: int, timeout: float, poll: float, as_json: bool, url: str) -> None:
    changes: list[dict[str, Any]] = []

    def on_change(at: datetime, old: str, new: Refund) -> None:
        changes.append({"at": at, "from": old, "to": new.status, "code": new.last_code})
        if not as_json:
            click.echo(f"{when(at)}  refund {refund_id}: {old} -> {new.status}"
                       + (f" ({new.last_code})" if new.last_code else ""))

    try:
        status, timed_out = follow(env, refund_id, timeout, poll, on_change)
    except KeyboardInterrupt:
        raise CliError(f"stopped following refund {refund_id} (it goes on)") from None
    view = refund_view(env, refund_id)
    if as_json:
        emit_json({**view, "broker": redact(url), "transitions": changes, "status": status,
                   "timed_out": timed_out})
    elif timed_out:
        click.echo(f"timed out after {timeout:g} s: refund {refund_id} is {status} "
                   "(is a worker running? `celery -A worker worker`)")
    else:
        charge = view["charge"]
        click.echo(f"refund {refund_id} ended {status}"
                   + (f": {view['refund']['naver_message']}" if status not in OK else "")
                   + f"; charge {charge['id']} refunded {won(charge['refunded_amount'])} of "
                   f"{won(charge['approved_amount'])}")
    if status not in OK:
        raise SystemExit(1)
