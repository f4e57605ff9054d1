"""Desk test helpers: the desk listener installed on the test context, and quick ways to make traffic."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from scrm.context import AppContext
from scrm.db.models import Conversation, Inbox
from scrm.domain import ContactProfile, InboundMessage
from scrm.events import Event
from scrm.services.conversations.ingest import ingest
from scrm.services.desk import automation, webhooks_out
from scrm.services.desk import settings as desk_settings

_counter = {"n": 0}


@pytest.fixture
async def desk(ctx: AppContext) -> AsyncIterator[AppContext]:
    """The context with the desk listener installed (and per-process caches emptied)."""
    from scrm.listeners.desk import install

    desk_settings.clear_cache()
    automation.invalidate_cache()
    webhooks_out.invalidate_cache()
    unsubscribe = install(ctx)
    yield ctx
    for fn in unsubscribe:
        fn()
    await ctx.bus.drain(2)


@pytest.fixture
def recorded(ctx: AppContext) -> list[Event]:
    """Every event published on the bus during the test (live: the event log keeps only what a consumer acts on)."""
    seen: list[Event] = []

    async def keep(event: Event) -> None:
        seen.append(event)

    ctx.bus.subscribe(keep, everywhere=True)
    return seen


async def settle(ctx: AppContext) -> None:
    """Let listener cascades finish (a listener's transaction can publish further events)."""
    quiet = 0
    for _ in range(100):  # events may be in flight through Redis: wait for two quiet rounds
        busy = bool(ctx.bus._tasks)  # noqa: SLF001
        await ctx.bus.drain(5)
        await asyncio.sleep(0.02 if ctx.redis is not None else 0)
        quiet = 0 if busy or ctx.bus._tasks else quiet + 1  # noqa: SLF001
        if quiet >= 2:
            return


async def say(ctx: AppContext, inbox: Inbox, text: str = "你好", sender: str = "u1", **payload: Any) -> int:
    """A customer message through the real ingest; returns the conversation id."""
    _counter["n"] += 1
    item = InboundMessage(external_id=f"m{_counter['n']}", sender_id=sender, text=text,
                          profile=ContactProfile(name=f"客户{sender}"), payload=payload)
    outcome = (await ingest(ctx, inbox, [item]))[0]
    await settle(ctx)
    assert outcome.conversation_id is not None
    return outcome.conversation_id


async def conv(ctx: AppContext, cid: int) -> Conversation:
    async with ctx.db.session() as s:
        c = await s.get(Conversation, cid)
        assert c is not None
        return c
