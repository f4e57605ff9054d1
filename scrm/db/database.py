"""Engines and sessions for SQLite (embedded default) and PostgreSQL (production).

SQLite allows one writer at a time: write transactions start with BEGIN IMMEDIATE (so a read
followed by a write cannot fail with SQLITE_BUSY mid-transaction) and are serialized in-process
by a lock; other processes wait through busy_timeout. PostgreSQL needs neither.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from scrm import json_codec
from scrm.db import (
    schema,  # noqa: F401 - every table mapped before the first flush
    sqlite_close,
)
from scrm.db.sessions import Session

if TYPE_CHECKING:
    from scrm.db.fast_reads import FastReads


class DatabaseUnavailable(Exception):
    """The database cannot be reached: webhooks answer 503 so the platform retries."""


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # aiosqlite must not emit its own BEGIN: we issue BEGIN (IMMEDIATE) ourselves below.
    dbapi_connection.isolation_level = None
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA busy_timeout=10000")  # first: the statements below may wait for a lock
    cur.execute("PRAGMA journal_mode")
    if str(cur.fetchone()[0]).lower() != "wal":
        # Switching needs an exclusive lock; WAL then persists in the file for every later connection.
        cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


PING_AFTER_IDLE = 5.0  # seconds a pooled PostgreSQL connection may rest before it is checked on checkout
HOT_CALL_POOL = 4  # hot_call()'s connections: two group commits in flight per inbox, and a few inboxes at once


def _ping_when_idle(engine: AsyncEngine) -> None:
    """Check a pooled connection before use only when it has been resting.

    `pool_pre_ping` costs a round trip on every checkout, one per transaction, on every hot path.
    A connection that was in use a moment ago is alive; one that rested may have been closed by a
    database restart or an idle timeout: that one is pinged and, if dead, replaced before the caller
    sees it (a connection that dies while in use is handled by SQLAlchemy's disconnect detection).
    """

    @event.listens_for(engine.sync_engine, "checkin")
    def _rested_since(_dbapi_connection: Any, record: Any) -> None:
        record.info["checked_in"] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _ping_if_rested(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        rested = record.info.get("checked_in")
        if rested is None or time.monotonic() - rested < PING_AFTER_IDLE:
            return
        try:
            dbapi_connection.ping()
        except Exception as exc:  # noqa: BLE001 - any failure: let the pool open a fresh connection
            raise DisconnectionError(f"pooled connection is gone: {exc}") from exc


@dataclass(eq=False)
class SharedTransaction:
    """A consumer's transaction that the listeners it calls join (event_log.py).

    Their writes and the consumer's record of progress commit together: an effect happens exactly
    once even when the process dies at any point. `savepoints`: each joined transaction() becomes a
    savepoint, so a failing listener undoes only its own writes (used when a batch is retried event by
    event); off in the common case, where a savepoint per listener would be two statements more each.
    """

    db: Database
    session: AsyncSession
    owner: asyncio.Task[Any] | None
    savepoints: bool = False
    events: list[Any] = field(default_factory=list)  # events the joined units of work emitted
    turns: set[int] = field(default_factory=set)  # conversations whose turn this transaction holds
    locked: set[tuple[str, Any]] = field(default_factory=set)  # (table, key): rows loaded locked with the batch
    # The batch's conversation rows with ids up to this one are locked (event_batch.lock_in_order): a batch takes
    # them in ascending id order, as ingest does, so the two never wait for each other in a cycle.
    conversations_locked_to: int = 0
    loaded: list[Any] = field(default_factory=list)  # rows loaded for the batch (the identity map holds them weakly)
    # Writes to the batch's conversation rows, held back until just before the commit (event_batch.py):
    # ingest updates those rows too and must not wait for the whole batch.
    # conversation id -> its writes in order: ("clocks", answers, parameters) or ("set", {column: value})
    held_back: dict[int, list[tuple[Any, ...]]] = field(default_factory=dict)
    # The same for the desk's stats rows the batch holds locked: conversation id -> {column: value}.
    held_back_stats: dict[int, dict[str, Any]] = field(default_factory=dict)
    # What the batch's listeners would otherwise read once per event, read once for the batch
    # (event_batch.py); a fact is dropped as soon as the batch writes the table it comes from.
    facts: dict[str, Any] = field(default_factory=dict)
    # Work a listener leaves to the end of the batch, still in its transaction (the consumer runs it after
    # every listener): a row lock it takes is held only until the commit, not for the whole batch.
    at_end: list[Callable[[], Awaitable[object]]] = field(default_factory=list)
    listeners: list[tuple[str, Callable[..., Any]]] = field(default_factory=list)  # on the session, for the batch

    def listen(self, name: str, listener: Callable[..., Any]) -> None:
        """A session event listener for this transaction only (removed by release())."""
        event.listen(self.session.sync_session, name, listener)
        self.listeners.append((name, listener))

    def release(self) -> None:
        """Untie the finished transaction from its session. The listeners close over this object, which holds
        the session: the batch's whole graph (session, identity map, every row it loaded, ~90 objects per
        message) was one reference cycle that only the cyclic garbage collector freed, about 6% of the
        worker's CPU at 400 msg/s. Untied, reference counting frees it when the batch ends. `events` stay:
        the consumer publishes them after the commit."""
        for name, listener in self.listeners:
            event.remove(self.session.sync_session, name, listener)
        self.listeners.clear()
        self.loaded.clear()
        self.facts.clear()
        self.held_back.clear()
        self.held_back_stats.clear()
        self.at_end.clear()
        self.owner = None


# An execution option: the statement never reads the stats rows a batch holds back (event_batch.py), so they
# need not be written before it (sla.py's insert of new conversations' rows).
SKIPS_HELD_BACK_STATS = "scrm_skips_held_back_stats"


def shared_for(session: AsyncSession) -> SharedTransaction | None:
    """The shared transaction `session` belongs to, if any (for services that can skip a lock it holds)."""
    shared = _SHARED.get()
    return shared if shared is not None and shared.session is session else None


def batch_fact(session: AsyncSession, name: str) -> Any:
    """A fact the consumer's batch read for all its events (event_batch.py), or None outside a batch
    or once the batch wrote its table: then the caller reads for itself."""
    shared = shared_for(session)
    return None if shared is None else shared.facts.get(name)


_SHARED: ContextVar[SharedTransaction | None] = ContextVar("scrm_shared_transaction", default=None)


class Database:
    """Owns the engine(s); hands out read sessions and write transactions."""

    def __init__(self, url: str, *, pool_size: int = 10, echo: bool = False) -> None:
        self.url = url
        parsed = make_url(url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        if self.is_sqlite:
            sqlite_close.install()
            db_path = parsed.database
            if db_path and db_path != ":memory:":
                Path(db_path).parent.mkdir(parents=True, exist_ok=True)
            self.engine = self._sqlite_engine(url, "BEGIN IMMEDIATE", echo)
            self.read_engine = self._sqlite_engine(url, "BEGIN", echo)
        else:
            # LIFO: the few connections a steady load needs stay in use (their prepared statements
            # warm, e.g. a batch insert's text per row count); the rest rest and are pinged or recycled.
            self.engine = create_async_engine(url, pool_size=pool_size, max_overflow=pool_size, echo=echo,
                                              pool_use_lifo=True, json_serializer=json_codec.dumps,
                                              json_deserializer=json_codec.loads)
            _ping_when_idle(self.engine)
            self.read_engine = self.engine
        # Session: a get of an object the session holds already costs no greenlet switch (db/sessions.py).
        self._write_sessions = async_sessionmaker(self.engine, expire_on_commit=False, class_=Session)
        self._read_sessions = async_sessionmaker(self.read_engine, expire_on_commit=False, class_=Session)
        self._write_lock = asyncio.Lock() if self.is_sqlite else None
        self._fast: FastReads | None = None  # hot_read()'s asyncpg pool, opened on first use
        self._calls: FastReads | None = None  # hot_call()'s, opened on first use

    @staticmethod
    def _sqlite_engine(url: str, begin: str, echo: bool) -> AsyncEngine:
        # A small pool: opening a connection (and its PRAGMAs) per transaction costs more than the write.
        engine = create_async_engine(url, pool_size=4, max_overflow=8, echo=echo, json_serializer=json_codec.dumps,
                                     json_deserializer=json_codec.loads)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)

        @event.listens_for(engine.sync_engine, "begin")
        def _begin(conn: Any) -> None:
            conn.exec_driver_sql(begin)

        return engine

    @property
    def dialect(self) -> str:
        return "sqlite" if self.is_sqlite else "postgresql"

    def joined(self) -> SharedTransaction | None:
        """The shared transaction this task works in, if any (only its own task: tasks it starts
        inherit the context variable but must not use its session)."""
        shared = _SHARED.get()
        if shared is not None and shared.db is self and shared.owner is asyncio.current_task():
            return shared
        return None

    @contextlib.asynccontextmanager
    async def shared_transaction(self) -> AsyncIterator[SharedTransaction]:
        """A write transaction that every transaction() and session() of this task joins until it ends."""
        shared: SharedTransaction | None = None
        try:
            async with self.transaction() as session:
                shared = SharedTransaction(self, session, asyncio.current_task())
                token = _SHARED.set(shared)
                try:
                    yield shared
                    while shared.at_end:  # left by a listener and not run by the consumer: before the commit
                        await shared.at_end.pop(0)()
                finally:
                    _SHARED.reset(token)
        finally:
            if shared is not None:  # after the commit: its flush still runs the session's listeners
                shared.release()

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A read-mostly session (no write lock on SQLite)."""
        shared = self.joined()
        if shared is not None:  # a listener reads what the consumer's transaction wrote so far
            yield shared.session
            return
        async with self._read_sessions() as session:
            yield session

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A write transaction: committed on normal exit, rolled back on error."""
        shared = self.joined()
        if shared is not None:
            if shared.savepoints:
                async with shared.session.begin_nested():
                    yield shared.session
            else:
                yield shared.session
            return
        lock = self._write_lock
        if lock is not None:
            await lock.acquire()
        try:
            async with self._write_sessions() as session, session.begin():
                yield session
        finally:
            if lock is not None:
                lock.release()

    async def autocommit(self, statement: Any, params: dict[str, Any]) -> list[Any]:
        """Run one statement that is atomic on its own (a function call) as its own transaction: no
        BEGIN and no COMMIT, one round trip. Returns its rows. PostgreSQL only."""
        assert not self.is_sqlite, "SQLite writes go through transaction() (its write lock)"
        async with self.engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            return list((await conn.execute(statement, params)).all())

    async def one_statement(self, statement: Any, params: dict[str, Any] | None = None, *,
                            write: bool = False) -> list[Any]:
        """One statement that is atomic on its own, as its own transaction; returns its rows. On PostgreSQL
        one round trip (autocommit: no BEGIN and no COMMIT/ROLLBACK, so a write's row locks last only as
        long as the statement). On SQLite a write takes transaction() (its write lock) and a read a plain
        session; a read inside a consumer's shared transaction reads through it (what it wrote so far).
        `params`: values of the statement's bind parameters (a statement built once and reused)."""
        if self.is_sqlite or (not write and self.joined() is not None):
            async with self.transaction() if write else self.session() as s:
                return list((await s.execute(statement, params)).all())
        return await self.autocommit(statement, params or {})

    async def hot_read(self, statement: Any, params: dict[str, Any]) -> list[Any]:
        """A read-only statement on a hot path (built once by the caller, its bind parameters named; none
        of them an expanding IN list): on PostgreSQL straight through asyncpg (fast_reads.py), else as
        one_statement(). Rows read as `row.column`."""
        if self.is_sqlite or self.joined() is not None:
            return await self.one_statement(statement, params)
        if self._fast is None:
            from scrm.db.fast_reads import FastReads

            self._fast = FastReads(self.engine.url, self.engine.dialect)
        return await self._fast.fetch(statement, params)

    async def hot_call(self, statement: Any, params: dict[str, Any]) -> list[Any]:
        """autocommit() on a hot path (ingest's database function, once per group commit): straight through
        asyncpg on a small pool of its own (fast_reads.py), past SQLAlchemy's ~0.4 ms per statement of pool
        checkout, execution options and result wrapping. Errors are raised as through the engine
        (IntegrityError, DBAPIError). PostgreSQL only; the statement is built once by the caller."""
        assert not self.is_sqlite, "SQLite writes go through transaction() (its write lock)"
        if self._calls is None:
            from scrm.db.fast_reads import FastReads

            self._calls = FastReads(self.engine.url, self.engine.dialect, pool_size=HOT_CALL_POOL)
        return await self._calls.call(statement, params)

    async def ping(self) -> None:
        """Raise DatabaseUnavailable unless a trivial query succeeds."""
        try:
            async with self.read_engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception as exc:  # noqa: BLE001 - any driver error means "not ready"
            raise DatabaseUnavailable(str(exc)) from exc

    async def dispose(self) -> None:
        for fast in (self._fast, self._calls):
            if fast is not None:
                await fast.close()
        self._fast = self._calls = None
        await self.engine.dispose()
        if self.read_engine is not self.engine:
            await self.read_engine.dispose()
