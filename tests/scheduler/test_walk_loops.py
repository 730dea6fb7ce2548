"""The spike walk's structure (issue 8, goal 4), on SQLite and PostgreSQL.

- The common batch reads its rows on the driver's cursor (``batchsql.DriverQuery``): the
  same rows, converted by the same column types, as SQLAlchemy's own read, for every step's
  selector; a walk over ordinary rows never falls back (no refused batch, no slow read).
- SQLite's charge INSERT runs on the driver's cursor in chunks; a row the database refuses
  comes out as SQLAlchemy's IntegrityError (the walk's row-by-row redo catches that).
- The due step's batch loops (two at once on PostgreSQL, one on SQLite), also with two
  walks at once: never a second charge for a cycle, every due row billed, every new charge
  handed to ``on_batch`` exactly once, after its batch committed.
- Charges whose enqueue failed after their batch committed (a crash in between, Redis down)
  are taken again by the walk once their lease passed.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from models import make_engine, make_session_factory
from scheduler import billing
from scheduler.batchsql import DriverQuery
from scheduler.billing import BatchResult, WalkConfig
from scheduler.walk import walk
from tests.scheduler.test_walk_batch_insert import _row, _stored, _subscriptions

T0 = datetime(2026, 11, 28, 3, 0, 0, tzinfo=UTC)
EVERY_5S = "* * * * * */5"


def _add(db: Any, n: int, prefix: str = "RE", **extra: Any) -> list[int]:
    rows = [{"recurrent_id": f"{prefix}-{i}", "merchant_user_id": "u1", "product_code": "P",
             "product_name": "월간 구독", "amount": 9900, "cron": EVERY_5S, **extra} for i in range(n)]
    with db.engine.begin() as conn:
        conn.execute(sa.text(f"INSERT INTO subscriptions ({', '.join(rows[0])}) "
                             f"VALUES ({', '.join(':' + c for c in rows[0])})"), rows)
    return [i for (i,) in db.sql("SELECT id FROM subscriptions WHERE recurrent_id LIKE :p ORDER BY id",
                                 p=f"{prefix}-%")]


def _one_per_cycle(db: Any) -> list[tuple[int, Any]]:
    rows = [tuple(r) for r in db.sql("SELECT subscription_id, cycle_at FROM charges")]
    assert len(rows) == len(set(rows)), "a cycle has two charges"
    return rows


@pytest.mark.parametrize("selector", [billing.resumed_rows, billing.new_rows, billing.due_rows])
def test_the_driver_read_is_sqlalchemys_read(db, selector) -> None:
    _add(db, 5, "NEW")  # next_charge_at NULL
    _add(db, 5, "DUE", next_charge_at=(T0 - timedelta(seconds=3)).replace(tzinfo=None),
         trial_ends_at=(T0 + timedelta(days=3)).replace(tzinfo=None), agreed_amount=0,
         upcoming_notice_at=(T0 - timedelta(days=1)).replace(tzinfo=None))
    _add(db, 4, "BACK", seen_status="paused", next_charge_at=(T0 - timedelta(days=40)).replace(tzinfo=None))
    _add(db, 3, "OFF", status="paused")
    light = billing._light(selector(T0), WalkConfig())
    with db.sessions.begin() as session:
        conn = session.connection()
        expected = [tuple(r) for r in conn.execute(light)]
        got = DriverQuery(light, conn.dialect).rows(conn)
    assert expected  # each selector picks some of the rows above
    assert sorted(got) == sorted(expected)
    assert [type(v) for v in got[0]] == [type(v) for v in expected[0]]
    for row in got:
        assert all(v.tzinfo is UTC for v in row if isinstance(v, datetime))


def test_a_walk_over_ordinary_rows_takes_the_fast_path(db, caplog) -> None:
    _add(db, 12, "A")
    _add(db, 5, "B", seen_status="paused")  # resumed
    caplog.set_level(logging.WARNING)
    walk(db.sessions, T0)
    report = walk(db.sessions, T0 + timedelta(seconds=6), WalkConfig(batch_size=5))
    assert len(report.new_charge_ids) == 17 and report.invalid == [] and report.failed_steps == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_a_batch_larger_than_a_chunk_is_stored_whole(db) -> None:
    subs = _subscriptions(db, billing._SQLITE_CHUNK + 101)
    rows = [_row(s) for s in subs]
    result = BatchResult()
    with db.sessions.begin() as session:
        billing._insert(session, rows, result)
    assert len(result.new_charge_ids) == len(subs) == len(set(result.new_charge_ids))
    assert _stored(db) == rows


def test_a_charge_row_the_database_refuses_is_an_integrity_error(db) -> None:
    subs = _subscriptions(db, 3)
    rows = [_row(subs[0]), _row(subs[1], amount=0), _row(subs[2])]  # CHECK amount > 0
    with pytest.raises(IntegrityError), db.sessions.begin() as session:
        billing._insert(session, rows, BatchResult())
    assert _stored(db) == []  # the transaction is rolled back whole


@pytest.mark.parametrize("walks", [1, 2])
def test_batch_loops_bill_each_due_cycle_once_and_hand_it_over_once(db, walks) -> None:
    subs = _add(db, 173)
    walk(db.sessions, T0)  # schedules every row
    config = WalkConfig(batch_size=7, due_loops=2)
    handed: list[int] = []
    lock = threading.Lock()
    committed_first = []

    def on_batch(ids: list[int]) -> None:
        with db.engine.connect() as conn:  # another connection sees them: committed before
            seen = conn.execute(sa.text("SELECT count(*) FROM charges WHERE id IN "
                                        f"({', '.join(str(i) for i in ids)})")).scalar_one()
        with lock:
            committed_first.append(seen == len(ids))
            handed.extend(ids)

    results: list[BatchResult] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(walks)

    def one_walk() -> None:
        engine = make_engine(db.url)
        try:
            barrier.wait()
            results.append(billing.run_step(make_session_factory(engine), billing.due_rows,
                                            T0 + timedelta(seconds=6), config, on_batch,
                                            loops=config.due_loops))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=one_walk) for _ in range(walks)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    cycles = _one_per_cycle(db)
    assert sorted(s for s, _ in cycles) == sorted(subs)  # every row billed, once
    ids = [i for (i,) in db.sql("SELECT id FROM charges")]
    assert sorted(handed) == sorted(ids)  # each new charge handed over exactly once
    assert all(committed_first)
    assert sum(len(r.new_charge_ids) for r in results) == len(subs)
    assert sum(r.conflicts for r in results) == 0  # disjoint rows: no loop raced another


def test_charges_whose_enqueue_failed_are_taken_again_after_their_lease(db) -> None:
    _add(db, 23)
    walk(db.sessions, T0)
    config = WalkConfig(batch_size=5, lease=timedelta(seconds=30))

    def lost(ids: list[int]) -> None:  # committed, then the process died / Redis was down
        raise ConnectionError("broker unreachable")

    report = walk(db.sessions, T0 + timedelta(seconds=6), config, on_new_charges=lost)
    assert len(report.new_charge_ids) == 23 and report.failed_steps == []
    soon = walk(db.sessions, T0 + timedelta(seconds=7), config)
    assert soon.stuck_charge_ids == []  # leased: not taken again yet
    later = walk(db.sessions, T0 + timedelta(seconds=37), WalkConfig(batch_size=50, lease=config.lease))
    assert sorted(later.stuck_charge_ids) == sorted(report.new_charge_ids)
    _one_per_cycle(db)


def test_update_by_ids_writes_converted_values_to_exactly_those_rows(db) -> None:
    from scheduler.batchsql import update_by_ids

    subs = _add(db, 9)
    when = datetime(2026, 12, 31, 15, 0, 0, 123456, tzinfo=UTC)
    table = billing._SUBSCRIPTIONS
    with db.sessions.begin() as session:  # chunks of 2 ids on SQLite (one array on PostgreSQL)
        update_by_ids(session.connection(), table, {"next_charge_at": when, "last_error": None,
                                                    "scheduled_cron": "0 0 1 * *"}, subs[:5], chunk=2)
    with db.sessions() as session:
        got = session.execute(sa.select(table.c.id, table.c.next_charge_at, table.c.scheduled_cron)
                              .order_by(table.c.id)).all()
    assert [tuple(r) for r in got] == ([(s, when, "0 0 1 * *") for s in subs[:5]]
                                       + [(s, None, None) for s in subs[5:]])


def test_values_among_finds_the_ids_with_rows_of_those_statuses(db) -> None:
    from models import PriceChange
    from scheduler.batchsql import values_among

    subs = _add(db, 6)
    for sub, status in zip(subs, ["pending", "consented", "applied", "pending", "canceled", "pending"],
                           strict=True):
        db.sql("INSERT INTO price_changes (subscription_id, new_amount, effective_at, kind, status, "
               "created_at, updated_at) VALUES (:s, 12000, :t, 'change', :st, :t, :t)",
               s=sub, st=status, t=T0.replace(tzinfo=None))
    table = PriceChange.__table__
    with db.sessions.begin() as session:
        conn = session.connection()
        open_ones = values_among(conn, table, "subscription_id", subs[:5],
                                 where=("status", ["pending", "consented"]), chunk=2)
        assert open_ones == {subs[0], subs[1], subs[3]}
        assert values_among(conn, table, "subscription_id", subs, chunk=4) == set(subs)
        assert values_among(conn, table, "subscription_id", [10**6]) == set()


def test_statements_on_the_driver_cursor_are_seen_by_the_engines_listeners(db) -> None:
    """With cursor listeners (tracing), the driver path runs through exec_driver_sql: they see
    every statement with a real execution context, and the walk does the same work."""
    _add(db, 8)
    walk(db.sessions, T0)
    seen: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
        assert context is not None
        seen.append(" ".join(statement.split())[:80])

    sa.event.listen(db.engine, "before_cursor_execute", count)
    try:
        report = walk(db.sessions, T0 + timedelta(seconds=6))
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", count)
    assert len(report.new_charge_ids) == 8
    assert any(s.startswith("SELECT subscriptions.id, subscriptions.merchant_id") for s in seen)
    assert any(s.startswith("UPDATE subscriptions SET next_charge_at") for s in seen)
    assert any(s.startswith("INSERT INTO charges") for s in seen)


def test_a_walk_with_less_than_a_batch_to_do_stays_in_the_callers_thread(db, monkeypatch) -> None:
    """Most walks find a few rows: no loop threads start (a second loop would also read a row
    catching up on missed cycles again once the first committed it, still due, and decide it
    twice in one walk)."""
    _add(db, 3)
    db.sql("UPDATE subscriptions SET next_charge_at = :t", t=(T0 - timedelta(hours=2)).replace(tzinfo=None))
    started: list[str] = []
    real_thread = threading.Thread

    def counting_thread(*args: Any, **kwargs: Any) -> threading.Thread:
        started.append(kwargs.get("name", "?"))
        return real_thread(*args, **kwargs)

    monkeypatch.setattr(billing.threading, "Thread", counting_thread)
    config = WalkConfig(batch_size=7, due_loops=2, missed_grace=timedelta(seconds=12))
    result = billing.run_step(db.sessions, billing.due_rows, T0, config, None, loops=config.due_loops)
    monkeypatch.undo()
    assert started == []
    assert result.rows == 3
    assert result.skipped == 3 * config.max_cycles_per_subscription  # each row once: 100 cycles
    assert len(db.sql("SELECT id FROM charges")) == 3 * config.max_cycles_per_subscription
    # a full first batch: the loops start (PostgreSQL; SQLite keeps one loop)
    _add(db, 20, "MORE", next_charge_at=(T0 - timedelta(seconds=3)).replace(tzinfo=None))
    monkeypatch.setattr(billing.threading, "Thread", counting_thread)
    more = billing.run_step(db.sessions, billing.due_rows, T0, config, None, loops=config.due_loops)
    monkeypatch.undo()
    assert started == ([] if db.dialect == "sqlite" else ["walk-loop-0", "walk-loop-1"])
    assert more.rows >= 20 and len(db.sql("SELECT id FROM charges WHERE status = 'pending'")) == 20
