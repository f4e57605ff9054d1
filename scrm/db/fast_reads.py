"""Hot read-only statements on PostgreSQL straight through asyncpg, past SQLAlchemy's per-statement work.

The web chat's batched catch-up reads (scrm/web/webchat_catchup.py) run several times per visitor
question. Through SQLAlchemy each cost ~450 us of the serve process's CPU (pool checkout and check-in,
execution options, compiled-cache lookup, result wrapping) for a statement whose own driver work is
~30 us. Here a statement is compiled once to its SQL text and run on a small asyncpg pool of its own
(separate from the engine's pool, so a slow catch-up never holds connections writes wait for), each
statement on its own in autocommit, as Database.one_statement runs reads on PostgreSQL.

Only plain reads belong here: no type processing beyond asyncpg's own happens (json/jsonb are decoded
as SQLAlchemy's asyncpg dialect decodes them; timestamps come back as aware datetimes, as through it).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, IntegrityError

POOL_SIZE = 3  # the catch-up's READERS plus the socket-open lookup: more would only queue in PostgreSQL


class Row(asyncpg.Record):
    """A result row that also reads as `row.column`, as SQLAlchemy's rows do."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class _Connection(asyncpg.Connection):  # type: ignore[misc]
    """A pooled connection released without asyncpg's reset statement (RESET ALL, UNLISTEN, ...): a round trip
    per release, for session state these reads never set."""

    def get_reset_query(self) -> str:
        return ""


class _Compiled:
    """A statement's SQL text and where each positional argument comes from."""

    __slots__ = ("sql", "names", "fixed")

    def __init__(self, statement: Any, dialect: Any, params: dict[str, Any]) -> None:
        compiled = statement.compile(dialect=dialect)
        # Expanding IN lists of constants (e.g. a status IN a fixed tuple) are rendered once: the caller's
        # own parameters must not expand (on PostgreSQL lists go as one array: = ANY($n)), so the text is
        # the same for every call.
        state = compiled.construct_expanded_state(params)
        self.sql: str = state.statement
        self.names: tuple[str, ...] = tuple(state.positiontup or ())
        self.fixed = {k: v for k, v in state.parameters.items() if k not in params}
        expanded = set(state.parameters) - set(compiled.binds)
        assert not expanded & set(params), f"fast reads take no expanding parameters: {sorted(expanded)}"

    def args(self, params: dict[str, Any]) -> list[Any]:
        fixed = self.fixed
        return [params[name] if name in params else fixed[name] for name in self.names]


def _connect_kwargs(url: URL, dialect: Any) -> dict[str, Any]:
    """asyncpg.connect()'s arguments for the engine's URL, as SQLAlchemy's asyncpg dialect derives them
    (host, port, user, ... and the URL's query options), less the options only its adapter takes."""
    _args, kwargs = dialect.create_connect_args(url)
    for adapter_only in ("async_creator_fn", "prepared_statement_cache_size", "prepared_statement_name_func"):
        kwargs.pop(adapter_only, None)
    # No JIT: these are short index reads, but before a table's first ANALYZE (a new install, or autovacuum
    # off) the planner's guesses can cost a batched catch-up over jit_above_cost, and compiling it took
    # ~300 ms of a read that runs in ~7.
    return {**kwargs, "server_settings": {**kwargs.get("server_settings", {}), "jit": "off"}}


async def _init(conn: asyncpg.Connection) -> None:
    # As SQLAlchemy's asyncpg dialect does: json and jsonb come back as Python objects.
    for name in ("json", "jsonb"):
        await conn.set_type_codec(name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


class FastReads:
    """The asyncpg pool and compiled statements of one Database (PostgreSQL only)."""

    def __init__(self, url: URL, dialect: Any, pool_size: int = POOL_SIZE) -> None:
        self._connect = _connect_kwargs(url, dialect)
        self._dialect = dialect
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._opening: asyncio.Lock | None = None
        self._compiled: dict[int, tuple[Any, _Compiled]] = {}

    async def _get_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            if self._opening is None:
                self._opening = asyncio.Lock()
            async with self._opening:
                if self._pool is None:
                    self._pool = await asyncpg.create_pool(min_size=0, max_size=self._pool_size, init=_init,
                                                           connection_class=_Connection, **self._connect)
        return self._pool

    def _compile(self, statement: Any, params: dict[str, Any]) -> _Compiled:
        # Keyed by identity: the callers build their statements once (functools.cache); the statement is
        # kept alongside so its id is not reused by another object.
        found = self._compiled.get(id(statement))
        if found is None or found[0] is not statement:
            found = self._compiled[id(statement)] = (statement, _Compiled(statement, self._dialect, params))
        return found[1]

    async def fetch(self, statement: Any, params: dict[str, Any]) -> list[Any]:
        """The rows of one read-only statement built once by the caller (its bind parameters named)."""
        compiled = self._compile(statement, params)
        pool = await self._get_pool()
        async with pool.acquire() as conn:
            return list(await conn.fetch(compiled.sql, *compiled.args(params), record_class=Row))

    async def call(self, statement: Any, params: dict[str, Any]) -> list[Any]:
        """The rows of one statement that is atomic on its own (a function call that writes), as fetch();
        a driver error is raised as SQLAlchemy raises it (IntegrityError, DBAPIError with the asyncpg error
        as `orig`), so callers tell its cause as they do through the engine (scrm/db/errors.py)."""
        compiled = self._compile(statement, params)
        try:
            pool = await self._get_pool()
            async with pool.acquire() as conn:
                return list(await conn.fetch(compiled.sql, *compiled.args(params), record_class=Row))
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            state = getattr(exc, "sqlstate", None) or ""
            error = IntegrityError if state.startswith("23") else DBAPIError
            raise error(compiled.sql, None, exc, connection_invalidated=_lost(exc)) from exc  # type: ignore[arg-type]

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()


def _lost(exc: BaseException) -> bool:
    """Whether the connection is gone (the server away or restarting), as SQLAlchemy's `connection_invalidated`."""
    return isinstance(exc, OSError | asyncpg.PostgresConnectionError | asyncpg.ConnectionDoesNotExistError
                      | asyncpg.CannotConnectNowError) or (getattr(exc, "sqlstate", None) or "").startswith("08")
