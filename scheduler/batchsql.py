"""SQL shapes for the walk's batches that keep a statement's text the same whatever the batch.

psycopg parses the text of a statement on every execute once it has many parameters (its
cache takes only short ones): ``id IN (:1, ..., :500)`` costs a parse per batch. On PostgreSQL
the values go in as one array parameter instead; SQLite keeps ``IN``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import ColumnElement, Connection, Dialect, Select, String, Table, any_, cast
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import DBAPIError


def among(column: ColumnElement[Any], values: Any, dialect_name: str) -> ColumnElement[bool]:
    """``column IN (values)``; on PostgreSQL ``column = ANY(CAST(:array AS type[]))``."""
    if dialect_name == "postgresql":
        # No length: a CAST to varchar(n)[] would cut longer values (and match them wrongly).
        array = ARRAY(String() if isinstance(column.type, String) else column.type)
        return column == any_(cast(list(values), array))
    return column.in_(list(values))


class DriverQuery:
    """A statement compiled once for a dialect and run on the driver's own cursor, its rows
    as the driver's plain tuples converted column by column (the walk's batches read and
    write thousands of rows; SQLAlchemy's per-row and per-value work was a third of a batch).

    The values go through each column's own converters (``TypeEngine.bind_processor`` /
    ``result_processor`` of the dialect: what SQLAlchemy itself applies), each distinct value
    converted once per :meth:`rows` call (a spike's rows share their instants). It runs on the
    session's connection, so inside the batch's transaction."""

    def __init__(self, statement: Select[Any], dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
        self.text = compiled.string
        params = compiled.construct_params()
        processed = {}
        for name, value in params.items():
            # An IN list's values are rendered as binds <name>_1, <name>_2 ... of its type.
            bind = compiled.binds.get(name)
            if bind is None:
                bind = compiled.binds.get(name.rsplit("_", 1)[0])
            if bind is None:
                raise ValueError(f"no parameter {name!r} in {self.text!r}")
            convert = bind.type.dialect_impl(dialect).bind_processor(dialect)
            processed[name] = convert(value) if convert is not None and value is not None else value
        positions = compiled.positiontup
        self.params: Any = ([processed[n] for n in positions] if compiled.positional and positions
                            else processed)
        self.converters: list[Callable[[Any], Any] | None] = [
            column.type.dialect_impl(dialect).result_processor(dialect, None)
            for column in statement.selected_columns]

    def rows(self, conn: Connection) -> list[tuple[Any, ...]]:
        """The statement's rows on ``conn`` (its transaction), converted."""
        with driver_cursor(conn) as cursor:
            cursor.execute(self.text, self.params)
            raw = cursor.fetchall()
        return convert_rows(raw, self.converters)


@contextmanager
def driver_cursor(conn: Connection) -> Iterator[Any]:
    """A cursor of ``conn``'s driver connection (inside its transaction), closed on leaving;
    a driver error comes out as SQLAlchemy's (``DBAPIError``: ``IntegrityError`` ...), as from
    ``Connection.execute``, so the walk's redo of a refused batch sees it."""
    dbapi_error = conn.dialect.loaded_dbapi.Error
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        yield cursor
    except dbapi_error as exc:
        raise DBAPIError.instance(None, None, exc, dbapi_error) from exc
    finally:
        cursor.close()


def convert_rows(raw: list[Any], converters: list[Callable[[Any], Any] | None]) -> list[tuple[Any, ...]]:
    """``raw`` driver rows with each column through its converter (None: as it is), each
    distinct non-NULL value converted once."""
    if not raw or not any(converters):
        return [tuple(r) for r in raw]
    columns = list(zip(*raw, strict=True))
    for k, convert in enumerate(converters):
        if convert is None:
            continue
        memo: dict[Any, Any] = {}
        done: list[Any] = []
        for value in columns[k]:
            if value is None:
                done.append(None)
                continue
            try:
                out = memo[value]
            except KeyError:
                out = memo[value] = convert(value)
            except TypeError:  # unhashable: converted every time
                out = convert(value)
            done.append(out)
        columns[k] = tuple(done)
    return list(zip(*columns, strict=True))


def update_by_ids(conn: Connection, table: Table, values: dict[str, Any], ids: list[Any],
                  chunk: int = 10_000) -> None:
    """``UPDATE table SET values WHERE id IN ids`` on ``conn``'s driver cursor (its
    transaction): each value through its column's converter once, the ids as one array on
    PostgreSQL, in chunks of ``chunk`` on SQLite; one statement text per set of columns."""
    dialect = conn.dialect
    params = []
    for name, value in values.items():
        convert = table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
        params.append(convert(value) if convert is not None and value is not None else value)
    sets = ", ".join(f"{name} = %s" for name in values)
    with driver_cursor(conn) as cursor:
        if dialect.name == "postgresql":
            id_type = table.c.id.type.compile(dialect)
            cursor.execute(f"UPDATE {table.name} SET {sets} WHERE id = ANY(CAST(%s AS {id_type}[]))",
                           [*params, list(ids)])
            return
        sets = sets.replace("%s", "?")
        for start in range(0, len(ids), chunk):
            part = list(ids[start:start + chunk])
            cursor.execute(f"UPDATE {table.name} SET {sets} WHERE id IN ({', '.join('?' * len(part))})",
                           [*params, *part])
