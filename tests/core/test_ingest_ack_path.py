"""The ingest acknowledgement path: the batch function's call through asyncpg, and ingest's publisher."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import func, select, text

from scrm import events as ev
from scrm.bootstrap import build_context
from scrm.db.models import Message
from scrm.domain import InboundMessage
from scrm.services.conversations.ingest import group_commit, ingest
from scrm.services.conversations.ingest_batch import Publisher
from tests.conftest import make_inbox


class _Recording(ev.RedisEventBus):
    def __init__(self) -> None:
        super().__init__(redis=None)
        self.published: list[list[str]] = []

    async def publish(self, events: Iterable[ev.Event], *, wake: bool = True) -> None:
        self.published.append([e.name for e in events])


async def test_publisher_sends_at_once_after_a_quiet_spell_and_coalesces_in_order_within_the_window() -> None:
    bus = _Recording()
    publisher = Publisher(SimpleNamespace(bus=bus), window=0.05)  # type: ignore[arg-type]
    await publisher.publish([ev.Event("a", {})])
    assert bus.published == [["a"]]  # nothing waits after a quiet spell
    await publisher.publish([ev.Event("b", {})])
    await publisher.publish([ev.Event("c", {}), ev.Event("d", {})])
    assert bus.published == [["a"]]
    await asyncio.sleep(0.08)
    assert bus.published == [["a"], ["b", "c", "d"]]  # one publish at the window's end, in commit order
    await publisher.publish([ev.Event("e", {})])
    await publisher.close()  # shutdown: what is queued still goes out
    assert bus.published == [["a"], ["b", "c", "d"], ["e"]]


async def test_an_in_process_bus_is_published_at_once() -> None:
    publisher = Publisher(SimpleNamespace(bus=ev.EventBus()), window=0.05)  # type: ignore[arg-type]
    assert publisher.window == 0.0


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
