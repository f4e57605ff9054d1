"""The 微信客服 pull notes' own PostgreSQL connections (kf_sync._NoteWriter): their commit does not wait for
the WAL flush, what they write is at once visible to other sessions, and a connection broken while it
rested (a database restart) costs no callback."""

from __future__ import annotations

import asyncpg
import pytest

from scrm.db.models_wecom import WeComKfCursor
from scrm.services.wecom import kf_sync
from tests.channels.wecom.fake_wecom_api import serving
from tests.integration.wecom_helpers import kf_inbox


@pytest.fixture(autouse=True)
def _postgresql_only(ctx) -> None:
    if ctx.db.is_sqlite:
        pytest.skip("the notes' own connections are PostgreSQL's (SQLite writes under its write lock)")


async def _seq(ctx, inbox_id: int, open_kfid: str) -> int:
    async with ctx.db.session() as s:
        row = await s.get(WeComKfCursor, (inbox_id, open_kfid), populate_existing=True)
    return 0 if row is None else row.requested_seq


async def test_notes_commit_without_waiting_for_the_flush_and_are_visible_at_once(ctx) -> None:
    async with serving() as fake:
        inbox = await kf_inbox(ctx, fake)
        key = (inbox.id, "wkNoteWriter")
        await kf_sync._write_notes(ctx, {key: (3, "tok")})
        assert await _seq(ctx, *key) == 3  # another session (the pool's) sees it once the call returned
        writer = ctx.extras["wecom_kf_note_writer"]
        [conn] = writer.idle
        assert await conn.fetchval("SHOW synchronous_commit") == "off"
        async with ctx.db.session() as s:  # everything else still waits for the flush
            assert (await s.execute(kf_sync.select(kf_sync.func.current_setting("synchronous_commit")))).scalar() == "on"


async def test_a_connection_broken_while_resting_is_replaced_and_the_note_written(ctx) -> None:
    async with serving() as fake:
        inbox = await kf_inbox(ctx, fake)
        key = (inbox.id, "wkNoteWriter")
        await kf_sync._write_notes(ctx, {key: (1, None)})
        writer = ctx.extras["wecom_kf_note_writer"]
        [conn] = writer.idle
        pid = conn.get_server_pid()
        admin = await asyncpg.connect(**writer.connect_kwargs)
        try:
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        finally:
            await admin.close()
        await kf_sync._write_notes(ctx, {key: (1, "tok")})  # retried on a new connection
        assert await _seq(ctx, *key) == 2
        [fresh] = writer.idle
        assert fresh.get_server_pid() != pid
