"""How much database work one charge costs (issue 8): counted with SQLAlchemy engine events,
never timed. A happy-path charge is three transactions, each committed before the NAVER call it
announces: lease + pending -> reserving; the reservation's row + reserving -> reserved ->
approving; the approval's row + succeeded + notification rows + the leases given back.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from models import Charge, Notification
from tests.worker.test_charging import World
from worker import notify
from worker.charge_store import trail_text
from worker.charging import ChargeEngine, process_charge


class Counts:
    """Transactions (BEGINs), commits and statements an engine saw, and each statement's SQL."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine, self.transactions, self.commits, self.sql = engine, 0, 0, []
        self.listeners = [("begin", self._begin), ("commit", self._commit),
                          ("before_cursor_execute", self._statement)]
        for name, fn in self.listeners:
            sa.event.listen(engine, name, fn)

    def _begin(self, *_: Any) -> None:
        self.transactions += 1

    def _commit(self, *_: Any) -> None:
        self.commits += 1

    def _statement(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        self.sql.append(" ".join(statement.split())[:60])

    def close(self) -> None:
        for name, fn in self.listeners:
            sa.event.remove(self.engine, name, fn)


@pytest.fixture
def world(db, sandbox_url):
    w = World(db, sandbox_url)
    yield w
    w.client.close()


def test_a_happy_path_charge_is_three_transactions(world):
    rid = world.subscribe()
    charge_id = world.due_charge()
    counts = Counts(world.db.engine)
    try:
        out = world.run(charge_id)
    finally:
        counts.close()
    assert out.status == "succeeded" and len(world.sandbox.approved(rid)) == 1
    assert (counts.transactions, counts.commits) == (3, 3), counts.sql
    statements = [s for s in counts.sql if not s.startswith("BEGIN")]  # SQLite's BEGIN IMMEDIATE
    assert len(statements) <= 10, statements
    assert not any(s.startswith("SELECT") for s in statements[3:]), statements  # no re-read
    assert world.attempts(charge_id) == [("reserve", "ok", "Success"), ("approve", "ok", "Success")]
    assert world.db.sql("SELECT status, prev_status, lease_owner, lease_until, stuck_since "
                        "FROM charges")[0] == ("succeeded", "approving", None, None, None)
    assert world.db.sql("SELECT lock_owner, lock_until FROM subscriptions")[0] == (None, None)


def test_the_state_before_each_call_is_committed_with_the_previous_calls_row(world):
    """Seen from outside while each NAVER call is in flight: the announcing state is
    committed, and so is the row of the call before it."""
    world.subscribe()
    charge_id = world.due_charge()
    seen = []

    class Watching:
        def __getattr__(self, name):
            method = getattr(world.client, name)

            def call(**kwargs):
                seen.append((name, world.charge(charge_id).status,
                             [a[0] for a in world.attempts(charge_id)]))
                return method(**kwargs)
            return call

    engine = ChargeEngine(sessions=world.db.sessions, client_for=lambda _m: Watching(),
                          clock=world.clock, sleep=world.sleeps)
    assert process_charge(engine, charge_id, "watched").status == "succeeded"
    assert seen == [("reserve_payment", "reserving", []),
                    ("approve_payment", "approving", ["reserve"])]


def test_transition_logs_name_both_steps_of_a_two_step_transition(world, caplog):
    world.subscribe()
    charge_id = world.due_charge()
    with caplog.at_level(logging.INFO, logger="worker"):
        assert world.run(charge_id).status == "succeeded"
    lines = [r.getMessage() for r in caplog.records
             if r.name.startswith("worker.") and r.getMessage().startswith(f"charge {charge_id}:")]
    # Both steps of the two-step transition (reserving -> reserved -> approving in one
    # statement) are named, in the run's one line.
    assert lines == [f"charge {charge_id}: pending -> reserving -> reserved -> approving -> succeeded"]


def test_a_run_path_with_a_gap_is_shown_in_segments():
    joined = [("pending", "reserving"), ("reserving", "reserved")]
    assert trail_text(joined) == "pending -> reserving -> reserved"
    gap = [("pending", "reserving"), ("unknown", "approving")]
    assert trail_text(gap) == "pending -> reserving; unknown -> approving"
    assert trail_text([]) == ""


def _outbox(conn: sa.Connection) -> list[tuple[Any, ...]]:
    table = Notification.__table__
    rows = conn.execute(sa.select(table).order_by(table.c.channel))
    found = []
    for row in rows:
        payload = json.loads(row.payload)
        payload.pop("event_id")
        found.append((row.event, row.channel, row.dedupe_key, row.status, row.subscription_id,
                      row.charge_id, row.created_at, row.lease_until, payload))
    return found


def test_success_notifications_are_the_rows_notify_queue_writes(world):
    """The charge path writes its success notifications with Core from the rows it holds;
    they must be exactly what ``notify.queue`` writes for the same charge."""
    world.policy(webhook_url="http://127.0.0.1:9/hook", notify_email=1, notify_on="succeeded")
    world.subscribe(customer_email="c@example.com")
    charge_id = world.due_charge()
    out = world.run(charge_id)
    assert out.status == "succeeded" and len(out.notification_ids) == 2
    with world.db.engine.connect() as conn:
        ours = _outbox(conn)
        assert sorted(conn.execute(sa.select(Notification.id)).scalars()) == sorted(out.notification_ids)
        conn.rollback()
        with conn.begin() as tx:
            conn.execute(sa.delete(Notification))
            with Session(bind=conn) as s:
                ids = notify.queue(s, notify.SUCCEEDED, s.get(Charge, charge_id), world.clock())
            assert len(ids) == 2
            theirs = _outbox(conn)
            tx.rollback()
    assert [row[:2] for row in ours] == [("charge.succeeded", "email"), ("charge.succeeded", "webhook")]
    assert ours == theirs
