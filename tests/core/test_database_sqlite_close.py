"""An SQLite connection invalidated by a cancelled task is closed without a deadlock.

SQLAlchemy invalidates a connection whose user was cancelled: a graceful close in a shielded task, and a forced
close (aiosqlite's stop()) when the caller is cancelled meanwhile. With aiosqlite 0.22's own close() the graceful
task then waited forever for the stopped worker thread, and event-loop shutdown (serve stopping, a test's
teardown) hung on it (CI: test_customer_message_reaches_the_agent_socket_with_its_content, >120 s at teardown).
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text

from scrm.db.database import Database


@pytest.mark.parametrize("graceful_first", [True, False], ids=["graceful-close-first", "forced-close-first"])
async def test_a_cancelled_invalidation_closes_the_connection_without_waiting_forever(
        tmp_path: Path, graceful_first: bool) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'scrm.db'}")
    try:
        conn = await db.engine.connect()
        await conn.execute(text("SELECT 1"))
        adapted = (await conn.get_raw_connection()).dbapi_connection
        if graceful_first:  # the shielded close starts, then its caller is cancelled and force-closes
            closing = asyncio.ensure_future(adapted._terminate_graceful_close())
            await asyncio.sleep(0)
            adapted._terminate_force_close()
        else:  # cancelled before the shielded close got its first turn
            adapted._terminate_force_close()
            closing = asyncio.ensure_future(adapted._terminate_graceful_close())
        await asyncio.wait_for(closing, 5)  # hung forever before (the stopped thread never answers)
        await conn.invalidate()
        await conn.close()
    finally:
        await db.dispose()
    reopened = Database(f"sqlite+aiosqlite:///{tmp_path / 'scrm.db'}")
    try:
        async with reopened.transaction() as s:  # the file was closed cleanly, not left locked
            assert (await s.scalar(text("SELECT 1"))) == 1
    finally:
        await reopened.dispose()


def _write_lock_is_free(path: Path) -> bool:
    probe = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        probe.execute("BEGIN IMMEDIATE")
        probe.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:  # "database is locked"
        return False
    finally:
        probe.close()


@pytest.mark.parametrize("close", ["graceful", "forced"])
async def test_a_connection_closed_mid_transaction_gives_up_the_write_lock_while_its_cursor_lives(
        tmp_path: Path, close: str) -> None:
    """A task cancelled between a statement's execute and its fetch keeps the cursor, its rows unread (in the
    traceback the cancelled task holds); closing the connection under it left a zombie holding SQLite's write
    lock until that cursor was freed, and every other writer failed with "database is locked" after busy_timeout
    (CI, the outbox pacing crash test)."""
    path = tmp_path / "scrm.db"
    db = Database(f"sqlite+aiosqlite:///{path}")
    try:
        conn = await db.engine.connect()
        await conn.begin()  # BEGIN IMMEDIATE: the write lock
        adapted = (await conn.get_raw_connection()).dbapi_connection
        # Executed, not yet fetched: where SQLAlchemy's adapter stood when the task was cancelled.
        unread = await adapted._connection.execute("SELECT 1 UNION ALL SELECT 2")
        assert not _write_lock_is_free(path)
        if close == "graceful":
            await asyncio.wait_for(adapted._terminate_graceful_close(), 5)
        else:
            adapted._terminate_force_close()
            thread = adapted._connection._thread
            await asyncio.to_thread(thread.join, 5)
        assert _write_lock_is_free(path)  # at once, with the cursor still alive
        assert unread is not None
        await conn.invalidate()
        await conn.close()
    finally:
        await db.dispose()
