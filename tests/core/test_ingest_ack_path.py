"""The ingest acknowledgement path: the batch function's call through asyncpg."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import func, select, text

from scrm.bootstrap import build_context
from scrm.db.models import Message
from scrm.domain import InboundMessage
from scrm.services.conversations.ingest import group_commit, ingest
from tests.conftest import make_inbox


@pytest.mark.usefixtures("backend")
async def test_the_calls_survive_their_connections_being_terminated(settings: Any, backend: str) -> None:
    """Every connection of the function's asyncpg pool terminated (as by a database restart): the next
    batches are stored (on new connections, or by the Python path), each message once, and a retry is a
    duplicate."""
    if backend != "postgresql":
        pytest.skip("the batch function is PostgreSQL's")
    ctx = await build_context(settings)
    try:
        inbox = await make_inbox(ctx)
        await ingest(ctx, inbox, [InboundMessage("m0", "u0", "hello")])
        held = text("SELECT pg_backend_pid() AS pid FROM pg_sleep(0.05)")  # concurrent: each on its own connection
        pids = {r.pid for rows in await asyncio.gather(*[ctx.db.hot_call(held, {}) for _ in range(4)]) for r in rows}
        assert len(pids) == 4
        async with ctx.db.transaction() as s:
            await s.execute(text("SELECT pg_terminate_backend(pid) FROM unnest(CAST(:pids AS int[])) AS pid"),
                            {"pids": sorted(pids)})
        await asyncio.sleep(0.1)
        first = await ingest(ctx, inbox, [InboundMessage("m1", "u1", "after the restart")])
        second = await ingest(ctx, inbox, [InboundMessage("m2", "u1", "and again")])
        again = await ingest(ctx, inbox, [InboundMessage("m1", "u1", "after the restart")])
        assert not first[0].duplicate and not second[0].duplicate and again[0].duplicate
        assert again[0].message_id == first[0].message_id
        assert group_commit(ctx).fast is True
        async with ctx.db.session() as s:
            assert await s.scalar(select(func.count()).select_from(Message).where(Message.inbox_id == inbox.id)) == 3
    finally:
        await ctx.close()
