"""SQL shapes for the walk's batches that keep a statement's text the same whatever the batch.

psycopg parses the text of a statement on every execute once it has many parameters (its
cache takes only short ones): ``id IN (:1, ..., :500)`` costs a parse per batch. On PostgreSQL
the values go in as one array parameter instead; SQLite keeps ``IN``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, String, any_, cast
from sqlalchemy.dialects.postgresql import ARRAY


def among(column: ColumnElement[Any], values: Any, dialect_name: str) -> ColumnElement[bool]:
    """``column IN (values)``; on PostgreSQL ``column = ANY(CAST(:array AS type[]))``."""
    if dialect_name == "postgresql":
        # No length: a CAST to varchar(n)[] would cut longer values (and match them wrongly).
        array = ARRAY(String() if isinstance(column.type, String) else column.type)
        return column == any_(cast(list(values), array))
    return column.in_(list(values))
