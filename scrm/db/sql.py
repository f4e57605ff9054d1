"""Small SQL building blocks shared by the hot paths."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import any_, literal
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.sql.elements import ColumnElement


def one_of(column: Any, values: Collection[Any], *, postgresql: bool) -> ColumnElement[bool]:
    """`column IN values` whose SQL text does not depend on how many values there are (on PostgreSQL).

    An IN list renders one placeholder per value, so every batch size is a new statement for asyncpg:
    one more prepare round trip and plan, and the statement cache churns. `= ANY($1)` with one array
    parameter is prepared once. SQLite has no arrays and no server-side prepare: a plain IN there.
    """
    if postgresql:
        return column == any_(literal(list(values), ARRAY(column.type)))  # type: ignore[no-any-return]
    return column.in_(list(values))  # type: ignore[no-any-return]


def is_postgresql(session: Any) -> bool:
    """Whether a (sync or async) session is bound to PostgreSQL."""
    bind = session.bind
    return bind is not None and bind.dialect.name == "postgresql"
