"""A consumer batch's new rows of one table in one execution on PostgreSQL (services/outbox.BatchRows: the
bot's messages, deliveries, FAQ outcomes and unanswered questions).

`INSERT ... SELECT FROM unnest(arrays)`: one execution whatever the row count, with a text that does not
depend on it. An executemany binds and PostgreSQL executes each row apart; a multi-row VALUES is a new
statement to prepare and plan for each count. Columns the rows leave out get their Python defaults here
(as the executemany would apply them); a column type or default this does not handle keeps the executemany.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

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

from scrm import json_codec


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


class _Unnest(NamedTuple):
    """One table's INSERT ... SELECT FROM unnest: its SQL, its array parameters (name, element type), the
    defaults of the columns the rows leave out, and the keys whose values travel as JSON text."""

    sql: str
    arrays: tuple[tuple[str, Any], ...]
    defaults: tuple[tuple[str, Any], ...]
    json_keys: tuple[str, ...]


@functools.lru_cache(maxsize=64)
def _unnest_parts(table: Any, keys: tuple[str, ...], prefix: str = "c") -> _Unnest | None:
    """The INSERT of `keys` (parameters named `prefix`0, 1...), or None: a column type or default this path
    does not handle (the caller's executemany applies them)."""
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
    arrays = ", ".join(f":{prefix}{n}" for n in range(len(names)))
    aliases = ", ".join(f"c{n}" for n in range(len(names)))
    sql = (f"INSERT INTO {table.name} ({columns}) SELECT {values} "
           f"FROM unnest({arrays}) WITH ORDINALITY AS v({aliases}, n) ORDER BY v.n")
    json_keys = tuple(key for key, kind in zip(names, kinds, strict=True) if kind and kind[1] == "json")
    return _Unnest(sql, tuple((f"{prefix}{n}", kind[0]) for n, kind in enumerate(kinds) if kind is not None),
                   tuple(defaults), json_keys)


@functools.lru_cache(maxsize=32)
def _unnest_insert(table: Any, keys: tuple[str, ...]) -> tuple[Any, tuple[tuple[str, Any], ...], tuple[str, ...]] | None:
    """(statement, the defaults of the columns the rows leave out, json keys) or None (a column type or
    default this path does not handle: the caller's executemany applies them)."""
    parts = _unnest_parts(table, keys)
    if parts is None:
        return None
    statement = text(parts.sql).bindparams(*(bindparam(name, type_=ARRAY(element)) for name, element in parts.arrays))
    return statement, parts.defaults, parts.json_keys


def _array_params(parts: _Unnest, keys: tuple[str, ...], rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """The array parameters of `parts` for `rows` (their columns, then the defaults of those they leave out)."""
    columns: list[list[Any]] = [[row[name] for row in rows] for name in keys]
    columns += [[make() for _ in rows] for _, make in parts.defaults]
    names = (*keys, *(key for key, _ in parts.defaults))
    params = {}
    for (param, _), name, values in zip(parts.arrays, names, columns, strict=True):
        params[param] = [json_codec.dumps(value) for value in values] if name in parts.json_keys else values
    return params


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
    statement = built[0]
    if key is not None:
        statement = _returning_ids(statement, table.c[key].name)
    parts = _unnest_parts(table, keys)
    assert parts is not None  # as built
    params = _array_params(parts, keys, rows)
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


# An execution option: the tables a text statement reads and writes, which statement_tables cannot see in its
# text. Declared, a batch's pending rows need not be inserted before it (outbox.BatchRows.written_before).
TABLES = "scrm_tables"


def statement_tables(statement: Any) -> frozenset[str] | None:
    """The names of the tables `statement` reads or writes (subqueries and joins included); None when they
    are not known (a text statement that does not declare them with the TABLES option, a lightweight table
    clause)."""
    found = _TABLES_OF.get(id(statement))
    if found is not None and found[0] is statement:
        return found[1]
    tables: frozenset[str] | None = None
    options = getattr(statement, "get_execution_options", None)
    declared = options().get(TABLES) if options is not None else None
    if declared is not None:
        tables = frozenset(declared)
    # An ORM entity loaded from a text statement (from_statement) names the entity's table, not what the text reads.
    elif not isinstance(statement, TextClause | TextualSelect) and not isinstance(
            getattr(statement, "element", None), TextClause | TextualSelect):
        clauses = find_tables(statement, include_crud=True, include_joins=True)
        if all(isinstance(clause, Table) for clause in clauses):
            tables = frozenset(clause.name for clause in clauses)
    if len(_TABLES_OF) >= _TABLES_OF_MAX:
        _TABLES_OF.clear()
    _TABLES_OF[id(statement)] = (statement, tables)
    return tables


def insert_together(connection: Any, batches: list[tuple[Any, list[dict[str, Any]]]], *,
                    key: str | None = None) -> list[Any] | None:
    """PostgreSQL: the plain rows of several tables in ONE statement (the first tables' INSERTs as WITH
    clauses of the last one's): one round trip, where one per table cost each its own execution in the
    consumer (SQLAlchemy's per-statement work was most of a batch's insert time) and in PostgreSQL.
    Foreign keys between them hold: PostgreSQL checks them at the statement's end, when every row is in.
    With `key` (unique to each row of the last table): its new ids, in its rows' order. None: not on
    PostgreSQL, fewer than two tables, or rows this path does not handle (the caller inserts table by table)."""
    if connection.dialect.name != "postgresql" or len(batches) < 2:
        return None
    shapes = []
    for table, rows in batches:
        keys = tuple(rows[0])
        if not all(len(row) == len(keys) and row.keys() == rows[0].keys() for row in rows):
            return None
        shapes.append((table, keys))
    statement = _together_statement(tuple(shapes), key)
    if statement is None:
        return None
    params: dict[str, list[Any]] = {}
    for n, ((table, keys), (_, rows)) in enumerate(zip(shapes, batches, strict=True)):
        parts = _unnest_parts(table, keys, f"t{n}_")
        assert parts is not None  # as the statement
        params |= _array_params(parts, keys, rows)
    result = connection.execute(statement, params)
    if key is None:
        return []
    ids = dict((found, new_id) for new_id, found in result)
    return [ids[row[key]] for row in batches[-1][1]]


@functools.lru_cache(maxsize=64)
def _together_statement(shapes: tuple[tuple[Any, tuple[str, ...]], ...], key: str | None) -> Any:
    """insert_together's statement for these tables and columns (None: one this path does not handle)."""
    parts = [_unnest_parts(table, keys, f"t{n}_") for n, (table, keys) in enumerate(shapes)]
    if any(part is None for part in parts):
        return None
    known = [part for part in parts if part is not None]
    first = ", ".join(f"w{n} AS ({part.sql})" for n, part in enumerate(known[:-1]))
    last = known[-1].sql
    if key is not None:
        last += f' RETURNING id, "{shapes[-1][0].c[key].name}"'
    return text(f"WITH {first} {last}").bindparams(
        *(bindparam(name, type_=ARRAY(element)) for part in known for name, element in part.arrays))
