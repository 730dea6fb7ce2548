"""PostgreSQL connections are pinged on checkout only after sitting idle (models/db.py).

Against a real PostgreSQL: a pooled connection whose server process was killed while it sat
in the pool is replaced at checkout (the statement runs on a fresh one, no error reaches the
caller); a connection used a moment ago is not pinged (the round trip pre-ping would spend
on every transaction).
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

import models.db
from models.db import make_engine, ping_when_idle


def _backend_pid(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())


def _kill(url: str, pid: int) -> None:
    killer = sa.create_engine(make_engine(url).url, poolclass=sa.pool.NullPool)
    with killer.connect() as conn:
        conn.exec_driver_sql(f"SELECT pg_terminate_backend({pid})")
    killer.dispose()


def test_a_connection_killed_while_idle_is_replaced_at_checkout(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models.db, "IDLE_PING_AFTER", 0.0)  # every checkout counts as idle
    engine = make_engine(postgres_url, pool_size=1, max_overflow=0)
    try:
        first = _backend_pid(engine)
        _kill(postgres_url, first)
        second = _backend_pid(engine)  # no OperationalError: the ping found it dead
        assert second != first
    finally:
        engine.dispose()


def test_a_connection_used_a_moment_ago_is_not_pinged(postgres_url: str) -> None:
    now = [0.0]
    engine = sa.create_engine(make_engine(postgres_url).url, pool_size=1, max_overflow=0)
    pings: list[object] = []
    real_ping = engine.dialect.do_ping

    def counting_ping(dbapi_connection: object) -> bool:
        pings.append(dbapi_connection)
        return real_ping(dbapi_connection)

    engine.dialect.do_ping = counting_ping  # type: ignore[method-assign]
    ping_when_idle(engine, idle=10.0, clock=lambda: now[0])
    try:
        for _ in range(3):
            _backend_pid(engine)
            now[0] += 1.0
        assert pings == []  # new, then used a second ago, twice
        now[0] += 10.0
        _backend_pid(engine)
        assert len(pings) == 1
    finally:
        engine.dispose()


def test_pool_sizes_come_from_the_environment_with_clear_errors(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert models.db.pool_sizes({}) == (32, 8)
    assert models.db.pool_sizes({"BILLING_DB_POOL_SIZE": "5", "BILLING_DB_MAX_OVERFLOW": "0"}) == (5, 0)
    for env, text in (({"BILLING_DB_POOL_SIZE": "many"}, "BILLING_DB_POOL_SIZE must be a whole number"),
                      ({"BILLING_DB_POOL_SIZE": "0"}, "BILLING_DB_POOL_SIZE must be at least 1"),
                      ({"BILLING_DB_MAX_OVERFLOW": "-1"}, "BILLING_DB_MAX_OVERFLOW must be at least 0")):
        with pytest.raises(ValueError, match=text):
            models.db.pool_sizes(env)
    engine = make_engine(f"sqlite:///{tmp_path / 'pool.db'}")
    try:  # a file database keeps as many connections as a threads-pool worker needs
        assert engine.pool.size() == 32  # type: ignore[attr-defined]
    finally:
        engine.dispose()
