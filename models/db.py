"""Engine and session factory for SQLite (embedded default) and PostgreSQL (production).

SQLite gets WAL, a busy timeout and foreign keys per connection, so that the worker, beat and
the CLI can share one file. PostgreSQL gets a pool sized for a threads-pool worker and a
liveness ping of every connection that sat idle in the pool (see :func:`ping_when_idle`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn, cast

from sqlalchemy import Connection, Engine, create_engine, event, exc
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
            _pool_defaults(kwargs)
        engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin_immediate)
        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        # Plain postgresql:// would pick psycopg2, which we do not ship; psycopg 3 is installed.
        url = str(parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False))
    # Timestamps are stored as naive UTC; make CURRENT_TIMESTAMP agree whatever the server zone.
    kwargs.setdefault("connect_args", {"options": "-c timezone=UTC"})
    _pool_defaults(kwargs)
    engine = create_engine(url, **kwargs)
    if not kwargs.get("pool_pre_ping"):
        ping_when_idle(engine, IDLE_PING_AFTER)
    return engine


def pool_sizes(environ: Mapping[str, str] = os.environ) -> tuple[int, int]:
    """Connections a process keeps (``BILLING_DB_POOL_SIZE``, default 32) and may open beyond
    them for a moment (``BILLING_DB_MAX_OVERFLOW``, default 8).

    A threads-pool worker holds a connection only inside a charge's short transactions, never
    across a NAVER call, so 32 kept connections serve far more threads; connections beyond the
    kept ones are closed when given back, and under load that churn (a new PostgreSQL
    connection per transaction) cost more CPU than the charges. Mind the server's
    ``max_connections``: every worker process may hold size + overflow."""
    return (_whole(environ, "BILLING_DB_POOL_SIZE", 32, least=1),
            _whole(environ, "BILLING_DB_MAX_OVERFLOW", 8, least=0))


def _whole(environ: Mapping[str, str], name: str, default: int, least: int) -> int:
    raw = environ.get(name, str(default))
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, got {raw!r}") from None
    if value < least:
        raise ValueError(f"{name} must be at least {least}, got {value}")
    return value


def _pool_defaults(kwargs: dict[str, Any]) -> None:
    size, overflow = pool_sizes()
    kwargs.setdefault("pool_size", size)
    kwargs.setdefault("max_overflow", overflow)


IDLE_PING_AFTER = 10.0
"""Seconds a pooled connection may sit unused before its next checkout pings it."""


def ping_when_idle(engine: Engine, idle: float = IDLE_PING_AFTER,
                   clock: Any = time.monotonic) -> None:
    """Ping a pooled connection on checkout when it sat idle ``idle`` seconds or more.

    SQLAlchemy's ``pool_pre_ping`` pings on *every* checkout: one more round trip per
    transaction, three per charge. A connection that was in use a moment ago is alive; the
    one that sat in the pool is the one a server restart, a failover or an idle timeout may
    have closed. A failed ping raises ``DisconnectionError``: the pool discards that
    connection and hands out a fresh one before any statement ran. A connection that breaks
    within ``idle`` seconds of its last use fails its statement instead; the transaction
    rolls back as on any other database error (every charge step commits before the NAVER
    call it announces, so nothing is sent on a transaction that failed).
    """

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi: Any, record: Any) -> None:
        record.info["npay_idle_since"] = clock()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("npay_idle_since")
        if since is None or clock() - since < idle:
            return  # new (just connected) or used a moment ago
        try:
            alive = engine.dialect.do_ping(dbapi)
        except engine.dialect.loaded_dbapi.Error as error:
            raise exc.DisconnectionError(f"idle connection failed its ping: {error}") from error
        if alive is False:
            raise exc.DisconnectionError("idle connection failed its ping")


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
    # Sent on the driver's connection: through exec_driver_sql it cost as much as a statement.
    conn.connection.dbapi_connection.execute("BEGIN IMMEDIATE")


def rowcount(result: Any) -> int:
    """Rows matched by an UPDATE/DELETE (the compare-and-set primitive's answer)."""
    return int(result.rowcount or 0)


def raise_driver_error(conn: Connection, error: BaseException, statement: str, params: Any,
                       cursor: Any) -> NoReturn:
    """Raise a driver error from a statement run on ``conn``'s own DBAPI cursor the way
    ``Connection.execute`` would: wrapped as ``sqlalchemy.exc.DBAPIError`` (``IntegrityError``,
    ``OperationalError``...), through ``handle_error`` events, and with a lost connection
    invalidated so the pool never hands it out again. (SQLAlchemy's own handler, private but
    stable across 2.0.x; pyproject pins ``<2.1`` and tests/worker/test_prepared.py checks it.)"""
    conn._handle_dbapi_exception(error, statement, params, cursor, None)
    raise AssertionError("unreachable: SQLAlchemy's handler raises")  # pragma: no cover


@contextmanager
def driver_cursor(conn: Connection) -> Iterator[DriverCursor]:
    """A cursor of ``conn``'s driver connection (inside its transaction), closed on leaving."""
    cursor = DriverCursor(conn)
    try:
        yield cursor
    finally:
        cursor.close()


class DriverCursor:
    """The driver's own cursor of ``conn``, for statements compiled once and run many times
    (the charge path's ``worker.charge_store.Prepared``, the walk's ``scheduler.batchsql``):
    SQLAlchemy's per-statement work (execution context, cursor result) is skipped, what it adds
    around a statement is kept. A transaction is begun first if none is (as
    ``Connection.execute``'s autobegin; SQLite: BEGIN IMMEDIATE); a driver error goes through
    :func:`raise_driver_error`. When the engine has cursor listeners (tracing such as
    OpenTelemetry's, statement logs in tests), the same text and values run through
    ``exec_driver_sql`` instead, so they get the execution context they expect."""

    def __init__(self, conn: Connection) -> None:
        if not conn.in_transaction():
            conn.begin()
        self._conn = conn
        self._cursor = cast(Any, conn.connection.dbapi_connection).cursor()
        self._rows: list[Any] | None = None  # what exec_driver_sql returned, not fetched yet
        self._rowcount: int | None = None  # its row count (None: the driver's cursor ran it)

    def execute(self, sql: str, params: Any) -> None:
        self._run(sql, tuple(params) if isinstance(params, list) else params, many=False)

    def executemany(self, sql: str, params: list[Any]) -> None:
        self._run(sql, params, many=True)

    def _run(self, sql: str, params: Any, many: bool) -> None:
        conn, cursor = self._conn, self._cursor
        dispatch = conn.dispatch
        if dispatch.before_cursor_execute or dispatch.after_cursor_execute:
            result = conn.exec_driver_sql(sql, params)
            self._rowcount = result.rowcount
            self._rows = [tuple(r) for r in result.fetchall()] if result.returns_rows else []
            return
        self._rows = self._rowcount = None
        try:
            if many:
                cursor.executemany(sql, params)
            else:
                cursor.execute(sql, params)
        except conn.dialect.loaded_dbapi.Error as exc:
            raise_driver_error(conn, exc, sql, params, cursor)

    def fetchall(self) -> list[Any]:
        if self._rows is not None:
            rows, self._rows = self._rows, None
            return rows
        try:
            return list(self._cursor.fetchall())
        except self._conn.dialect.loaded_dbapi.Error as exc:
            raise_driver_error(self._conn, exc, "(fetch)", None, self._cursor)

    @property
    def rowcount(self) -> int:
        """Rows the last statement matched (with RETURNING on SQLite: once its rows were
        fetched)."""
        return int(self._rowcount if self._rowcount is not None else self._cursor.rowcount)

    def close(self) -> None:
        self._cursor.close()


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded objects usable after commit."""
    return sessionmaker(engine, expire_on_commit=False)
