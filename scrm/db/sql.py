"""Small SQL building blocks shared by the hot paths."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import Select, Text, any_, func, literal, select, true
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import aliased
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


def by_each_key(
    query: Select[*tuple[Any, ...]], key: Any, keys: Collection[str], *, postgresql: bool,
    entity: type[Any] | None = None,
) -> Select[*tuple[Any, ...]]:
    """The rows of `query` whose unique `key` is one of `keys`, each looked up through its index.

    On PostgreSQL the keys are unnested and each probes `query ... AND key = k LIMIT 1` (a LATERAL
    subquery), so the plan is one unique-index lookup per key whatever the planner believes about
    the table. With `key = ANY($1)` instead, statistics that lag behind a fast-growing table (a new
    inbox's first minutes) made it scan every row of the inbox and compare each with every key:
    5 ms per batch at 6,000 messages, growing with each message stored. A locking `query` locks
    the rows in the order of `keys`. `entity`: `query` selects that mapped class, and so does the
    result. SQLite: `query WHERE key IN keys`.
    """
    if not postgresql:
        return query.where(key.in_(list(keys)))
    wanted = func.unnest(literal(list(keys), ARRAY(Text))).table_valued("key").render_derived(name="keys")
    found = query.where(key == wanted.c.key).limit(1).lateral("found")
    return select(aliased(entity, found) if entity is not None else found).select_from(wanted).join(found, true())


def is_postgresql(session: Any) -> bool:
    """Whether a (sync or async) session is bound to PostgreSQL."""
    bind = session.bind
    return bind is not None and bind.dialect.name == "postgresql"
