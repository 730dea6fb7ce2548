"""Engine and session factory for SQLite (embedded default) and PostgreSQL (production).

SQLite gets WAL, a busy timeout and foreign keys per connection, so that the worker, beat and
the CLI can share one file. PostgreSQL gets a modest pool and pre-ping.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

DEFAULT_DATABASE_URL = "sqlite:///var/npay-billing.db"


def database_url_from_env(environ: Mapping[str, str] = os.environ) -> str:
    """``DATABASE_URL``, or the embedded SQLite default under ``var/``."""
    return environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL


def is_sqlite(url: str) -> bool:
    """Whether ``url`` names an SQLite database."""
    return make_url(url).get_backend_name() == "sqlite"


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url``; creates the folder of an SQLite file if needed."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin_immediate)
        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        # Plain postgresql:// would pick psycopg2, which we do not ship; psycopg 3 is installed.
        url = str(parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False))
    # Timestamps are stored as naive UTC; make CURRENT_TIMESTAMP agree whatever the server zone.
    kwargs.setdefault("connect_args", {"options": "-c timezone=UTC"})
    kwargs.setdefault("pool_pre_ping", True)
    # Room for a thread pool worker (`--pool threads -c 32`) without waiting on connections.
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 30)
    return create_engine(url, **kwargs)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # Let SQLAlchemy, not pysqlite, decide when transactions begin (see _sqlite_begin_immediate).
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def _sqlite_begin_immediate(conn: Any) -> None:
    # BEGIN IMMEDIATE takes the write lock up front: two processes that read-then-write would
    # otherwise deadlock with SQLITE_BUSY on lock upgrade instead of waiting their turn.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def rowcount(result: Any) -> int:
    """Rows matched by an UPDATE/DELETE (the compare-and-set primitive's answer)."""
    return int(result.rowcount or 0)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded objects usable after commit."""
    return sessionmaker(engine, expire_on_commit=False)
