"""``npay-billing retry TARGET [--reopen] [--wait]``: a manual retry through the broker.

The command never charges anything itself. It resolves TARGET (a charge id, or a recurrentId
standing for its latest charge not succeeded) read-only, refuses at once what the task would
refuse (a paid charge, an amount mismatch, a failed charge without ``--reopen``), then sends
``worker.retry_charge`` to the broker, so the worker applies the rules again under its own
transaction. The resolved charge id is what is sent: the charge checked here is the charge
retried and followed.

``--wait`` follows the charge by polling the database (results are ignored by design, there is
no result backend), printing each change with a timestamp until a final state, ``retry_wait``
after a new attempt, or the timeout. Exit 0 only when the charge succeeded.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from worker.cli.output import clock_time, emit_json, when
from worker.cli.support import CliError, Env, SetupError, current_env, json_option, redact

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/0"
FINAL = frozenset({"succeeded", "failed", "amount_mismatch", "canceled", "skipped"})
ACTIONS = {"enqueued": "in flight, run again", "due_now": "next attempt moved to now",
           "resume_now": "held charge resumed now, no attempt consumed",
           "reopened": "reopened"}


@dataclass(frozen=True)
class Seen:
    """One observation of the charge row."""

    charge_id: int
    status: str
    attempts: int
    updated_at: datetime | None
    last_code: str | None = None
    next_attempt_at: datetime | None = None

    @property
    def key(self) -> tuple[str, int, datetime | None]:
        """What counts as a change."""
        return self.status, self.attempts, self.updated_at


def broker_url() -> str:
    """``CELERY_BROKER_URL``, as the worker reads it."""
    return os.environ.get("CELERY_BROKER_URL") or DEFAULT_BROKER_URL


def _read(session: Session, charge_id: int) -> Seen:
    from models import Charge

    session.expire_all()
    c = session.get(Charge, charge_id)
    assert c is not None
    return Seen(c.id, c.status, c.attempt_count, c.updated_at, c.last_code, c.next_attempt_at)


def precheck(env: Env, target: str, reopen: bool) -> tuple[Seen, str]:
    """The charge TARGET names and what the retry will do; CliError when it would be refused."""
    from worker.manual import RetryRefused, find_charge, retry_action

    with env.sessions()() as session:
        try:
            charge = find_charge(session, target)
            action = retry_action(charge, reopen)
        except RetryRefused as exc:
            raise CliError(str(exc)) from None
        return _read(session, charge.id), action


def send_retry(url: str, charge_id: int, reopen: bool) -> None:
    """Publish ``worker.retry_charge(str(charge_id), reopen)``; SetupError if the broker is down."""
    from celery import Celery
    from kombu.exceptions import KombuError
    from redis.exceptions import RedisError

    app = Celery("npay-billing", set_as_current=False)
    app.config_from_object("celeryconfig")
    app.conf.broker_url = url
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0.2, timeout=3)
            app.send_task("worker.retry_charge", args=[str(charge_id), reopen], connection=conn,
                          retry=False)
    except (KombuError, RedisError, OSError) as exc:
        raise SetupError(f"cannot reach the broker at {redact(url)}: {exc}; start redis-server "
                         "or set CELERY_BROKER_URL") from None


def _describe(seen: Seen) -> str:
    text = f"{seen.status} (attempt {seen.attempts})"
    if seen.last_code and seen.status in ("retry_wait", "failed"):
        text += f" {seen.last_code}"
    if seen.status == "retry_wait" and seen.next_attempt_at:
        text += f", next attempt {clock_time(seen.next_attempt_at)}"
    return text


def _ended(seen: Seen, start: Seen) -> bool:
    if seen.key == start.key:
        return False  # nothing happened yet (a reopened charge starts in a final state)
    if seen.status in FINAL:
        return True
    return seen.status == "retry_wait" and seen.attempts > start.attempts


def follow(sessions: sessionmaker[Session], start: Seen, timeout: float, poll: float,
           on_change: Any) -> tuple[Seen, bool]:
    """Poll until the charge ends or ``timeout`` passes; returns (last seen, timed out)."""
    from models import utcnow

    deadline = time.monotonic() + timeout
    last = start
    with sessions() as session:
        while True:
            seen = _read(session, start.charge_id)
            session.rollback()  # end the read transaction: see the worker's next commit
            if (seen.status, seen.attempts) != (last.status, last.attempts):
                on_change(utcnow(), last, seen)
            last = seen
            if _ended(seen, start):
                return seen, False
            if time.monotonic() >= deadline:
                return seen, True
            time.sleep(poll)


@click.command()
@click.argument("target", metavar="CHARGE_ID_OR_RECURRENT_ID")
@click.option("--reopen", is_flag=True,
              help="Also retry a failed, canceled or skipped charge (its subscription must be active).")
@click.option("--wait", is_flag=True, help="Follow the charge until it ends (polls the database).")
@click.option("--timeout", type=click.FloatRange(min=0), default=120.0, show_default=True,
              help="Seconds --wait follows the charge.")
@click.option("--poll", type=click.FloatRange(min=0.05), default=0.5, hidden=True)
@json_option
def retry(target: str, reopen: bool, wait: bool, timeout: float, poll: float, as_json: bool) -> None:
    """Retry a charge now, by charge id or recurrentId (its latest charge not succeeded).

    Sends the task worker.retry_charge to the broker (CELERY_BROKER_URL); a running worker
    does the rest. A succeeded charge is never charged again.
    """
    env = current_env()
    start, action = precheck(env, target, reopen)
    url = broker_url()
    send_retry(url, start.charge_id, reopen)
    summary: dict[str, Any] = {"charge_id": start.charge_id, "previous_status": start.status,
                               "action": action, "broker": redact(url)}
    if not as_json:
        click.echo(f"sent worker.retry_charge for charge {start.charge_id} ({start.status}: "
                   f"{ACTIONS.get(action, action)}) to {redact(url)}")
    if not wait:
        if as_json:
            emit_json(summary)
        return
    _wait(env, start, timeout, poll, as_json, summary)


def _wait(env: Env, start: Seen, timeout: float, poll: float, as_json: bool,
          summary: dict[str, Any]) -> None:
    changes: list[dict[str, Any]] = []

    def on_change(at: datetime, old: Seen, new: Seen) -> None:
        changes.append({"at": at, "from": old.status, "to": new.status, "attempt": new.attempts,
                        "code": new.last_code})
        if not as_json:
            click.echo(f"{when(at)}  charge {new.charge_id}: {old.status} -> {_describe(new)}")

    if not as_json:
        click.echo(f"following charge {start.charge_id} for up to {timeout:g} s "
                   "(Ctrl-C stops following, not the retry)")
    try:
        last, timed_out = follow(env.sessions(), start, timeout, poll, on_change)
    except KeyboardInterrupt:
        raise CliError(f"stopped following; see `npay-billing charges show {start.charge_id}`") from None
    if as_json:
        emit_json({**summary, "transitions": changes, "status": last.status, "timed_out": timed_out})
    elif timed_out:
        hint = " (is a worker running? `celery -A worker worker`)" if not changes else ""
        click.echo(f"timed out after {timeout:g} s: charge {start.charge_id} is {last.status}{hint}; "
                   f"see `npay-billing charges show {start.charge_id}`")
    else:
        click.echo(f"charge {start.charge_id} ended {_describe(last)}")
    if last.status != "succeeded":
        raise SystemExit(1)
