"""Pooled PostgreSQL connections: checked before use only after resting, replaced when the server dropped them."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_connection

import scrm.db.database as database
from tests.conftest import PG_URL

pytestmark = pytest.mark.skipif(not PG_URL, reason="PostgreSQL only (SCRM_TEST_DATABASE_URL)")


async def _backend_pid(db: database.Database) -> int:
    async with db.session() as s:
        return int(await s.scalar(text("SELECT pg_backend_pid()")))


async def _terminate(pid: int) -> None:
    # From a connection of its own, as a database restart or an idle timeout would.
    assert PG_URL
    other = database.Database(PG_URL, pool_size=1)
    try:
        async with other.engine.connect() as conn:
            await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    finally:
        await other.dispose()


@pytest.fixture
async def db() -> AsyncIterator[database.Database]:
    assert PG_URL
    db = database.Database(PG_URL, pool_size=2)
    yield db
    await db.dispose()


async def test_a_rested_connection_the_server_dropped_is_replaced_before_use(db, monkeypatch) -> None:
    monkeypatch.setattr(database, "PING_AFTER_IDLE", 0.0)
    first = await _backend_pid(db)
    await _terminate(first)
    # The next request gets a working connection, not "connection is closed".
    second = await _backend_pid(db)
    assert second != first
    async with db.transaction() as s:
        assert await s.scalar(text("SELECT 1")) == 1


async def test_a_connection_in_steady_use_is_not_pinged(db, monkeypatch) -> None:
    monkeypatch.setattr(database, "PING_AFTER_IDLE", 3600.0)
    pings = 0
    original = AsyncAdapt_asyncpg_connection.ping

    def counting_ping(self: AsyncAdapt_asyncpg_connection) -> None:
        nonlocal pings
        pings += 1
        original(self)

    monkeypatch.setattr(AsyncAdapt_asyncpg_connection, "ping", counting_ping)
    for _ in range(5):
        await _backend_pid(db)
    assert pings == 0  # no extra round trip per transaction on a busy server
    monkeypatch.setattr(database, "PING_AFTER_IDLE", 0.0)
    await _backend_pid(db)
    assert pings == 1  # ... but one after a rest
