"""The inbox cache of serve's adapter pool: an admin's edit applies at once in the process that made it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from scrm.context import AppContext
from scrm.db.models import Inbox
from tests.conftest import make_inbox


async def _set_greeting(ctx: AppContext, inbox_id: int, greeting: str) -> None:
    async with ctx.db.transaction() as s:
        row = await s.get(Inbox, inbox_id)
        assert row is not None
        row.settings = {**row.settings, "greeting": greeting}


async def test_an_edit_through_the_admin_api_is_used_by_the_next_request(
        ctx: AppContext, client: Any, admin_headers: dict[str, str]) -> None:
    inbox_id = (await make_inbox(ctx, "api", name="官网 API")).id
    assert (await ctx.adapters.inbox(inbox_id)).name == "官网 API"  # type: ignore[union-attr]
    resp = await client.patch(f"/api/v1/inboxes/{inbox_id}", json={"name": "售后 API"}, headers=admin_headers)
    assert resp.status == 200, await resp.text()
    # Not 2 s later (the cache's lifetime): the very next webhook or widget request reads the change.
    assert (await ctx.adapters.inbox(inbox_id)).name == "售后 API"  # type: ignore[union-attr]
    resp = await client.delete(f"/api/v1/inboxes/{inbox_id}", headers=admin_headers)
    assert resp.status == 200
    assert await ctx.adapters.get(inbox_id) is None  # a disabled inbox takes no more webhooks


async def test_a_load_that_read_before_the_edit_does_not_cache_the_old_row(ctx: AppContext) -> None:
    inbox_id = (await make_inbox(ctx, "api", settings={"greeting": "old"})).id
    pool = ctx.adapters
    read = asyncio.Event()
    finish = asyncio.Event()
    plain = ctx.db.session

    @contextlib.asynccontextmanager
    async def slow_session() -> AsyncIterator[Any]:
        async with plain() as s:
            yield s
        read.set()  # the row is read; the load ends only when the test lets it
        await finish.wait()

    ctx.db.session = slow_session  # type: ignore[method-assign]
    try:
        early = asyncio.create_task(pool.inbox(inbox_id))
        await asyncio.wait_for(read.wait(), 10)
    finally:
        ctx.db.session = plain  # type: ignore[method-assign]
    await _set_greeting(ctx, inbox_id, "new")
    pool.forget(inbox_id)
    finish.set()
    assert (await early).settings["greeting"] == "old"  # type: ignore[union-attr] # read before the edit
    assert (await pool.inbox(inbox_id)).settings["greeting"] == "new"  # type: ignore[union-attr]
    assert (await pool.inbox(inbox_id)).settings["greeting"] == "new"  # type: ignore[union-attr] # and cached
