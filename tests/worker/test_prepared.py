"""The charge path's statements run on the driver's cursor (``charge_store.Prepared``).

Against real SQLite and PostgreSQL: what they read is what SQLAlchemy's own execution reads
(types converted, UTC instants), a driver error comes out as SQLAlchemy's exception, a lost
PostgreSQL connection is invalidated (the pool never hands it out again), a statement outside
a transaction begins one, and engine listeners see every statement.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session

from models import ChargeStatus as CS
from models import make_engine
from tests.worker.cli_helpers import add_charge, subscribe
from worker.charge_store import compare_and_set, insert_attempts, load_charge, renew_charge
from worker.recording import attempt_values

T0 = datetime(2026, 11, 1, 0, 0, tzinfo=UTC)


def test_a_charge_reads_the_same_as_through_sqlalchemys_execution(db: Any) -> None:
    sub = subscribe(db, customer_email="a@example.com")
    charge_id = add_charge(db, sub, status="retry_wait", next_attempt_at="2026-11-02 03:04:05",
                           attempt_count=2, last_code="InsufficientBalance")
    add_charge(db, sub, status="held", cycle="2026-10-01 00:00:00", held_from="reserving")
    with db.engine.connect() as conn:
        raw = load_charge(conn, charge_id)  # the driver's cursor
    with Session(db.engine) as session:
        ordinary = load_charge(session, charge_id)  # Session.execute: SQLAlchemy's own path
    assert raw is not None and raw == ordinary
    assert raw.next_attempt_at == datetime(2026, 11, 2, 3, 4, 5, tzinfo=UTC)
    assert raw.cycle_at == datetime(2026, 11, 1, tzinfo=UTC) and raw.cycle_at.tzinfo is not None
    assert raw.older_open is None  # a held older cycle has alerted the merchant: not waited for
    assert raw.subscription.customer_email == "a@example.com" and raw.subscription.merchant.id == 1
    with db.engine.connect() as conn:
        assert load_charge(conn, 987654) is None


def test_a_driver_error_is_sqlalchemys_and_nothing_is_written(db: Any) -> None:
    row = attempt_values(kind="reserve", key="k-1", charge_id=987654, at=T0)  # no such charge
    with db.engine.connect() as conn:
        conn.begin()
        with pytest.raises(sa.exc.IntegrityError) as caught:
            insert_attempts(conn, [row])
        assert "charge_attempts" in str(caught.value) or "foreign" in str(caught.value).lower()
        assert caught.value.statement and "INSERT INTO charge_attempts" in caught.value.statement
    assert db.sql("SELECT count(*) FROM charge_attempts")[0][0] == 0


def test_a_statement_outside_a_transaction_begins_one(db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    sub = subscribe(db)
    charge_id = add_charge(db, sub, lease_owner="run-1")

    def not_here(*_: Any, **__: Any) -> None:
        raise AssertionError("the driver's cursor runs it, not SQLAlchemy's execution")

    monkeypatch.setattr(sa.Connection, "exec_driver_sql", not_here)
    monkeypatch.setattr(sa.Connection, "execute", not_here)
    with db.engine.connect() as conn:
        assert not conn.in_transaction()
        assert renew_charge(conn, charge_id, "run-1", datetime(2030, 1, 1, tzinfo=UTC))
        assert conn.in_transaction()  # begun as execute() would; closing rolls it back
        assert load_charge(conn, charge_id) is not None  # a SELECT too
    monkeypatch.undo()
    assert db.sql("SELECT lease_until FROM charges")[0][0] is None  # rolled back with the connection


def test_with_cursor_listeners_statements_take_sqlalchemys_way(db: Any) -> None:
    """Tracing (OpenTelemetry's SQLAlchemy instrumentation, say) keeps its state on the
    execution context: with listeners, every statement gets a real one."""
    sub = subscribe(db)
    charge_id = add_charge(db, sub, lease_owner="run-1")
    seen: list[tuple[str, Any]] = []

    def before(_conn: Any, _cursor: Any, statement: str, params: Any, context: Any, _many: bool) -> None:
        assert context is not None
        context.traced = True

    def after(_conn: Any, _cursor: Any, statement: str, params: Any, context: Any, _many: bool) -> None:
        assert context.traced
        seen.append((statement, params))

    sa.event.listen(db.engine, "before_cursor_execute", before)
    sa.event.listen(db.engine, "after_cursor_execute", after)
    try:
        with db.engine.begin() as conn:
            assert renew_charge(conn, charge_id, "run-1", datetime(2030, 1, 1, tzinfo=UTC))
            charge = load_charge(conn, charge_id)
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", before)
        sa.event.remove(db.engine, "after_cursor_execute", after)
    assert charge is not None and charge.lease_owner == "run-1"
    assert [s.split()[0] for s, _ in seen] == ["UPDATE", "SELECT"], seen
    assert "run-1" in repr(seen[0][1])
    assert db.sql("SELECT lease_until FROM charges")[0][0] is not None


def test_a_compare_and_set_writes_through_the_driver_and_a_wrong_source_does_not(db: Any) -> None:
    sub = subscribe(db)
    charge_id = add_charge(db, sub)
    with db.engine.begin() as conn:
        charge = load_charge(conn, charge_id)
        assert charge is not None
        assert not compare_and_set(conn, charge, (CS.RESERVED,), CS.APPROVING, T0, owner=None)
        assert compare_and_set(conn, charge, (CS.PENDING,), CS.RESERVING, T0, owner=None, attempt_count=1)
    assert db.sql("SELECT status, prev_status, attempt_count FROM charges")[0] == ("reserving", "pending", 1)


def test_a_lost_postgresql_connection_is_invalidated_not_reused(postgres_url: str) -> None:
    from models.migrate import upgrade

    upgrade(postgres_url)
    engine = make_engine(postgres_url, pool_size=1, max_overflow=0)
    try:
        with engine.connect() as conn:
            pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        killer = sa.create_engine(engine.url, poolclass=sa.pool.NullPool)
        with killer.connect() as other:
            other.exec_driver_sql(f"SELECT pg_terminate_backend({pid})")
        killer.dispose()
        with engine.connect() as conn:  # (used a moment ago: no idle ping on checkout)
            with pytest.raises(sa.exc.DBAPIError) as caught:
                renew_charge(conn, 1, "run-1", datetime(2030, 1, 1, tzinfo=UTC))
            assert caught.value.connection_invalidated
        with engine.connect() as conn:  # a fresh connection, not the dead one
            assert conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one() != pid
    finally:
        engine.dispose()


_INSTANTS = st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1),  # noqa: DTZ001
                         timezones=st.just(UTC))  # (hypothesis takes naive bounds)
_TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=20)  # (PostgreSQL: no NUL)
_INT = st.integers(min_value=0, max_value=2**31 - 1)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_stored_charge_reads_the_same_through_the_driver(db: Any, data: st.DataObject) -> None:
    """Whatever a charge row holds (instants to the microsecond over three centuries, any
    text, NULLs, large integers), the driver's cursor reads what SQLAlchemy's execution reads."""
    from models import Charge

    n = uuid.uuid4().hex[:12]
    sub_id = subscribe(db, f"RE-{n}")  # its own: (subscription, cycle) is unique
    amount = data.draw(st.integers(min_value=1, max_value=2**31 - 1))  # (the table's CHECKs)
    values = {
        "subscription_id": sub_id, "recurrent_id": data.draw(_TEXT), "cycle_at": data.draw(_INSTANTS),
        "merchant_pay_id": f"NPB-{n}", "amount": amount,
        "tax_free_amount": data.draw(st.integers(min_value=0, max_value=amount)),
        "status": data.draw(st.sampled_from([s.value for s in CS])),
        "payment_id": data.draw(st.none() | _TEXT), "attempt_count": data.draw(_INT),
        "next_attempt_at": data.draw(st.none() | _INSTANTS), "lease_owner": data.draw(st.none() | _TEXT),
        "held_from": data.draw(st.none() | st.sampled_from(["reserving", "unknown"])),
        "backoff_count": data.draw(_INT), "key_round": data.draw(_INT),
        "last_code": data.draw(st.none() | _TEXT), "updated_at": data.draw(_INSTANTS),
        "agreed_amount": data.draw(st.none() | _INT),
    }
    with db.engine.begin() as conn:
        charge_id = conn.execute(sa.insert(Charge.__table__).values(**values)
                                 .returning(Charge.__table__.c.id)).scalar_one()
    with db.engine.connect() as conn:
        raw = load_charge(conn, charge_id)
    with Session(db.engine) as session:
        ordinary = load_charge(session, charge_id)
    assert raw is not None and raw == ordinary
    assert raw.cycle_at == values["cycle_at"] and raw.next_attempt_at == values["next_attempt_at"]
    assert (raw.recurrent_id, raw.amount, raw.last_code) == (values["recurrent_id"], values["amount"],
                                                             values["last_code"])
