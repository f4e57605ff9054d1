"""Helpers for the bot wiring tests: talk to the bot through the API channel and read its replies."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from scrm.context import AppContext
from scrm.db.models import Conversation, Delivery, Message
from scrm.services.bot import rounds as bot_svc
from tests.conftest import REDIS_URL, api_message, post_signed

# Tuesday 2025-03-04 10:00 in Shanghai: agents are working. Saturday 2025-03-08 10:00: they are not.
TUESDAY_MORNING = datetime(2025, 3, 4, 2, 0, tzinfo=UTC)
SATURDAY_MORNING = datetime(2025, 3, 8, 2, 0, tzinfo=UTC)
_ids = itertools.count(1)


def set_clock(ctx: AppContext, when: datetime) -> None:
    """The bot's clock (business hours, timers) for this context."""
    bot_svc.get_runtime(ctx).clock = lambda: when


async def settle(ctx: AppContext) -> None:
    """Wait until listeners have handled what was published (Redis delivers events asynchronously)."""
    await ctx.bus.drain()
    if REDIS_URL:
        for _ in range(3):
            await asyncio.sleep(0.08)
            await ctx.bus.drain()


async def say(client: Any, ctx: AppContext, inbox_id: int, text: str | None = None, *, sender: str = "cust-1",
              choice: str | None = None, **extra: Any) -> int:
    """A customer message (or button click) through the signed API webhook; returns the conversation id."""
    payload = api_message(f"m-{next(_ids)}", sender=sender, text=text, **extra)
    if choice is not None:
        payload.update(content_type="postback", choice=choice)
    r = await post_signed(client, inbox_id, payload)
    assert r.status == 200, await r.text()
    await settle(ctx)
    return int((await r.json())["results"][0]["conversation_id"])


async def bot_replies(ctx: AppContext, conversation_id: int) -> list[dict[str, Any]]:
    """The bot's messages as queued in the outbox: text and choices, oldest first."""
    async with ctx.db.session() as s:
        rows = (await s.execute(
            select(Message, Delivery).join(Delivery, Delivery.message_id == Message.id)
            .where(Message.conversation_id == conversation_id, Message.sender_kind == "bot").order_by(Message.id)
        )).all()
    return [{"text": d.payload["text"], "choices": d.payload["choices"], "status": d.status,
             "automatic": d.payload["automatic"]} for _m, d in rows]


async def conversation(ctx: AppContext, conversation_id: int) -> Conversation:
    async with ctx.db.session() as s:
        conv = await s.get(Conversation, conversation_id)
        assert conv is not None
        return conv


async def system_notes(ctx: AppContext, conversation_id: int) -> list[str]:
    async with ctx.db.session() as s:
        return list((await s.scalars(select(Message.text).where(
            Message.conversation_id == conversation_id, Message.sender_kind == "system").order_by(Message.id))).all())
