"""SQLite transactions take the write lock when they begin (``BEGIN IMMEDIATE``, models/db.py).

Two processes that read, then write, would otherwise both hold read locks and fail the
upgrade with SQLITE_BUSY instead of waiting their turn; the charge path relies on it.
"""

from __future__ import annotations

import sqlite3

import pytest
import sqlalchemy as sa

from models.db import make_engine


def test_a_transaction_holds_the_write_lock_from_its_begin(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "lock.db"
    engine = make_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    other = sqlite3.connect(path, timeout=0.1, isolation_level=None)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("SELECT count(*) FROM t")).scalar_one()  # a read, no write yet
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")  # another writer must wait: the lock is held
        other.execute("BEGIN IMMEDIATE")  # released at commit
        other.execute("INSERT INTO t VALUES (1)")
        other.execute("COMMIT")
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM t")).scalar_one() == 1
    finally:
        other.close()
        engine.dispose()
