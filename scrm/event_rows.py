"""A consumer batch's new rows of one table in one execution on PostgreSQL (services/outbox.BatchRows: the
bot's messages, deliveries, FAQ outcomes and unanswered questions).

`INSERT ... SELECT FROM unnest(arrays)`: one execution whatever the row count, with a text that does not
depend on it. An executemany binds and PostgreSQL executes each row apart; a multi-row VALUES is a new
statement to prepare and plan for each count. Columns the rows leave out get their Python defaults here
(as the executemany would apply them); a column type or default this does not handle keeps the executemany.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    Float,
    Integer,
    Numeric,
    String,
    Table,
    Text,
    bindparam,
    insert,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.sql.elements import TextClause
from sqlalchemy.sql.selectable import TextualSelect
from sqlalchemy.sql.util import find_tables


def array_kind(column_type: Any) -> tuple[Any, str] | None:
    """(array element type, SQL cast) for a column's values, or None: a type this path does not handle."""
    if isinstance(column_type, JSON):
        return None if getattr(column_type, "none_as_null", False) else (Text, "json")
    impl = getattr(column_type, "impl", column_type)
    if isinstance(impl, DateTime):
        return (DateTime(timezone=True), "") if getattr(impl, "timezone", False) else None
    if isinstance(impl, Enum):  # a text array does not cast to an enum type
        return None
    for base, name in ((Boolean, "boolean"), (BigInteger, "bigint"), (Integer, "integer"), (Float, "double precision"),
                       (Numeric, ""), (String, "text")):
        if isinstance(impl, base):
            return (base, name) if name else None  # Numeric (not Float): decimals, not handled here
    return None


@functools.lru_cache(maxsize=32)
def _unnest_insert(table: Any, keys: tuple[str, ...]) -> tuple[Any, tuple[tuple[str, Any], ...], tuple[str, ...]] | None:
    """(statement, the defaults of the columns the rows leave out, json keys) or None (a column type or
    default this path does not handle: the caller's executemany applies them)."""
    defaults: list[tuple[str, Any]] = []
    for column in table.c:
        if column.key in keys or column.default is None:
            continue
        default = column.default
        if getattr(default, "is_scalar", False):
            defaults.append((column.key, lambda arg=default.arg: arg))
        elif getattr(default, "is_callable", False):
            defaults.append((column.key, lambda fn=default.arg: fn(None)))
        else:
            return None
    names = (*keys, *(key for key, _ in defaults))
    kinds = [array_kind(table.c[key].type) for key in names]
    if any(kind is None for kind in kinds):
        return None
    columns = ", ".join(f'"{table.c[key].name}"' for key in names)
    values = ", ".join(f"v.c{n}::json" if kind and kind[1] == "json" else f"v.c{n}" for n, kind in enumerate(kinds))
    arrays = ", ".join(f":c{n}" for n in range(len(names)))
    aliases = ", ".join(f"c{n}" for n in range(len(names)))
    statement = text(f"INSERT INTO {table.name} ({columns}) SELECT {values} "
                     f"FROM unnest({arrays}) WITH ORDINALITY AS v({aliases}, n) ORDER BY v.n").bindparams(
        *(bindparam(f"c{n}", type_=ARRAY(kind[0])) for n, kind in enumerate(kinds) if kind is not None))
    json_keys = tuple(key for key, kind in zip(names, kinds, strict=True) if kind and kind[1] == "json")
    return statement, tuple(defaults), json_keys


def insert_rows(connection: Any, table: Any, rows: list[dict[str, Any]], *, key: str | None = None) -> list[Any]:
    """Insert plain `rows` of `table` (the same keys in each) on PostgreSQL with one execution (see
    _unnest_insert); rows of another shape, or of a type it does not handle, with the executemany.
    With `key` (a column unique to each row): the new ids, in the rows' order."""
    keys = tuple(rows[0])
    same = all(len(row) == len(keys) and row.keys() == rows[0].keys() for row in rows)
    built = _unnest_insert(table, keys) if connection.dialect.name == "postgresql" and same else None
    if built is None:
        if key is None:
            connection.execute(insert(table), rows)
            return []
        returning = insert(table).returning(table.c.id, sort_by_parameter_order=True)
        return list(connection.execute(returning, rows).scalars().all())
    statement, defaults, json_keys = built
    if key is not None:
        statement = _returning_ids(statement, table.c[key].name)
    names = (*keys, *(key for key, _ in defaults))
    columns: list[list[Any]] = [[row[name] for row in rows] for name in keys]
    columns += [[make() for _ in rows] for _, make in defaults]
    params = {}
    for n, (name, values) in enumerate(zip(names, columns, strict=True)):
        params[f"c{n}"] = [json.dumps(value) for value in values] if name in json_keys else values
    if key is None:
        connection.execute(statement, params)
        return []
    ids = dict((found, new_id) for new_id, found in connection.execute(statement, params))
    return [ids[row[key]] for row in rows]


@functools.lru_cache(maxsize=8)
def _returning_ids(statement: Any, key_column: str) -> Any:
    """The INSERT returning each new row's id with its key (RETURNING has no order: matched by the key)."""
    return text(f'{statement.text} RETURNING id, "{key_column}"').bindparams(*statement._bindparams.values())  # noqa: SLF001



# Statements a batch runs again and again (built once): their tables, cached by identity (the statement kept
# alongside, so its id is not reused by another object). Bounded: ORM lookups build a new statement each time.
_TABLES_OF: dict[int, tuple[Any, frozenset[str] | None]] = {}
_TABLES_OF_MAX = 512


def statement_tables(statement: Any) -> frozenset[str] | None:
    """The names of the tables `statement` reads or writes (subqueries and joins included); None when they
    are not known (a text statement, a lightweight table clause)."""
    found = _TABLES_OF.get(id(statement))
    if found is not None and found[0] is statement:
        return found[1]
    tables: frozenset[str] | None = None
    # An ORM entity loaded from a text statement (from_statement) names the entity's table, not what the text reads.
    if not isinstance(statement, TextClause | TextualSelect) and not isinstance(
            getattr(statement, "element", None), TextClause | TextualSelect):
        clauses = find_tables(statement, include_crud=True, include_joins=True)
        if all(isinstance(clause, Table) for clause in clauses):
            tables = frozenset(clause.name for clause in clauses)
    if len(_TABLES_OF) >= _TABLES_OF_MAX:
        _TABLES_OF.clear()
    _TABLES_OF[id(statement)] = (statement, tables)
    return tables
