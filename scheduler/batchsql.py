"""The walk's batch statements on the driver's own cursor (issue 8, the month-start spike).

SQLAlchemy's per-row and per-value work (result rows, bind processing of every value,
compiling ``IN`` lists of hundreds of parameters) was a third of a walk batch's CPU. These
helpers run a statement on the session connection's driver cursor, inside its transaction,
with every value through its column type's own converters (what SQLAlchemy applies), each
distinct value converted once; a driver error comes out as SQLAlchemy's (``IntegrityError``
...), so the walk's redo of a refused batch still catches it.

psycopg parses the text of a statement on every execute once it has many parameters (its
cache takes only short ones): on PostgreSQL id lists go in as one array parameter
(``= ANY(CAST(%s AS INTEGER[]))``), so the text never changes; SQLite keeps ``IN`` lists.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, Dialect, Select, Table

from models.db import driver_cursor


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


def values_among(conn: Connection, table: Table, column: str, ids: list[Any],
                 where: tuple[str, list[str]] | None = None, chunk: int = 10_000) -> set[Any]:
    """The distinct ``column`` values of ``table``'s rows whose ``column`` is in ``ids`` (and,
    with ``where = (other, texts)``, whose ``other`` is one of ``texts``), read on ``conn``'s
    driver cursor: one array on PostgreSQL, ``IN`` lists of ``chunk`` on SQLite."""
    dialect = conn.dialect
    found: set[Any] = set()
    with driver_cursor(conn) as cursor:
        if dialect.name == "postgresql":
            kind = table.c[column].type.compile(dialect)
            extra = f" AND {where[0]} = ANY(CAST(%s AS TEXT[]))" if where else ""
            cursor.execute(f"SELECT DISTINCT {column} FROM {table.name} "
                           f"WHERE {column} = ANY(CAST(%s AS {kind}[])){extra}",
                           [list(ids), *([[str(t) for t in where[1]]] if where else [])])
            found.update(v for (v,) in cursor.fetchall())
            return found
        for start in range(0, len(ids), chunk):
            part = list(ids[start:start + chunk])
            extra = f" AND {where[0]} IN ({', '.join('?' * len(where[1]))})" if where else ""
            cursor.execute(f"SELECT DISTINCT {column} FROM {table.name} "
                           f"WHERE {column} IN ({', '.join('?' * len(part))}){extra}",
                           [*part, *([str(t) for t in where[1]] if where else [])])
            found.update(v for (v,) in cursor.fetchall())
    return found
