"""An SQLite connection invalidated by a cancelled task is closed without a deadlock.

SQLAlchemy invalidates a connection whose user was cancelled: a graceful close in a shielded task, and a forced
close (aiosqlite's stop()) when the caller is cancelled meanwhile. With aiosqlite 0.22's own close() the graceful
task then waited forever for the stopped worker thread, and event-loop shutdown (serve stopping, a test's
teardown) hung on it (CI: test_customer_message_reaches_the_agent_socket_with_its_content, >120 s at teardown).
"""

from __future__ import annotations

import asyncio
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
