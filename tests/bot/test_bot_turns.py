"""Turns on a conversation: the bot's rounds and agents' actions take turns on it; a customer's new
message is stored and acknowledged without waiting for a round in progress (PostgreSQL)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from scrm.db.models import Conversation, ContactIdentity, Inbox, Message, utcnow
from scrm.services import bot as bot_svc
from scrm.services.outbox import enqueue_message
from scrm.services.uow import unit_of_work
from tests.bot.helpers_bot import TUESDAY_MORNING, bot_replies, conversation, say, set_clock, settle
from tests.conftest import api_message, make_inbox, post_signed


async def _start(client, ctx):
    set_clock(ctx, TUESDAY_MORNING)
    inbox = (await make_inbox(ctx)).id
    cid = await say(client, ctx, inbox, "你好")
    return inbox, cid


def _hold_rounds(monkeypatch) -> tuple[asyncio.Event, asyncio.Event]:
    """Bot rounds stop halfway (after reading the conversation, before answering) until `gate` is set."""
    entered, gate = asyncio.Event(), asyncio.Event()
    real = bot_svc._business_hours

    async def held(*args, **kwargs):
        entered.set()
        await gate.wait()
        return await real(*args, **kwargs)

    monkeypatch.setattr(bot_svc, "_business_hours", held)
    return entered, gate


async def test_a_message_is_acknowledged_while_the_bot_answers_that_conversation(client, ctx, backend, monkeypatch):
    if backend == "sqlite":
        pytest.skip("SQLite has one writer: a bot round in progress holds it, so ingest waits there by design")
    inbox, cid = await _start(client, ctx)
    before = await bot_replies(ctx, cid)
    entered, gate = _hold_rounds(monkeypatch)
    r = await post_signed(client, inbox, api_message("turn-1", sender="cust-1", text="运费怎么收？"))
    assert r.status == 200
    await asyncio.wait_for(entered.wait(), 10)  # the bot is halfway through its answer to it
    try:
        r = await asyncio.wait_for(
            post_signed(client, inbox, api_message("turn-2", sender="cust-1", text="几天能到？")), 5)
    finally:
        gate.set()
    assert r.status == 200 and (await r.json())["results"][0]["conversation_id"] == cid
    await settle(ctx)
    # Each message got its one answer, and the conversation shows the latest answer and waits for nobody.
    replies = await bot_replies(ctx, cid)
    assert len(replies) == len(before) + 2 and "满 99 元包邮" in replies[len(before)]["text"]
    conv = await conversation(ctx, cid)
    assert conv.waiting_since is None and conv.last_message_preview == replies[-1]["text"][:len(conv.last_message_preview)]


async def test_an_agent_takeover_waits_for_the_bot_round_in_progress(client, ctx, admin_headers, monkeypatch):
    inbox, cid = await _start(client, ctx)
    entered, gate = _hold_rounds(monkeypatch)
    r = await post_signed(client, inbox, api_message("turn-3", sender="cust-1", text="运费怎么收？"))
    assert r.status == 200
    await asyncio.wait_for(entered.wait(), 10)
    takeover = asyncio.create_task(client.post(f"/api/v1/conversations/{cid}/handler", json={"handler": "human"},
                                               headers=admin_headers))
    await asyncio.sleep(0.3)
    held = not takeover.done()
    gate.set()
    assert (await takeover).status == 200
    assert held, "the takeover must wait for the bot's turn on the conversation"
    await settle(ctx)
    async with ctx.db.session() as s:
        thread = [(m.sender_kind, m.text) for m in (await s.scalars(
            select(Message).where(Message.conversation_id == cid).order_by(Message.id))).all()]
    answer = next(i for i, (kind, text) in enumerate(thread) if kind == "bot" and "满 99 元包邮" in (text or ""))
    note = next(i for i, (kind, text) in enumerate(thread) if kind == "system" and "接管" in (text or ""))
    assert answer < note  # the bot finished its answer, then the agent took over; nothing from the bot after
    assert all(kind != "bot" for kind, _ in thread[note:])


async def test_a_reply_does_not_hide_a_later_customer_message(client, ctx):
    """Ingest takes no turn: a message it stored while a reply was being written stays the latest
    and keeps the conversation waiting."""
    set_clock(ctx, TUESDAY_MORNING)
    inbox_id = (await make_inbox(ctx)).id
    cid = await say(client, ctx, inbox_id, "你好")
    async with unit_of_work(ctx) as tx:  # nothing later: the reply is the latest and answers
        conv = await tx.session.get(Conversation, cid)
        await enqueue_message(tx, inbox=await tx.session.get(Inbox, inbox_id), conversation=conv,
                              identity=await tx.session.get(ContactIdentity, conv.identity_id), sender_kind="bot",
                              text="请问有什么可以帮您？")
    conv = await conversation(ctx, cid)
    assert conv.last_message_preview == "请问有什么可以帮您？" and conv.waiting_since is None

    later = utcnow() + timedelta(seconds=30)
    async with unit_of_work(ctx) as tx:
        conv = await tx.session.get(Conversation, cid)
        inbox = await tx.session.get(Inbox, inbox_id)
        identity = await tx.session.get(ContactIdentity, conv.identity_id)
        # What ingest writes for a message stored meanwhile (the object above does not see it).
        await tx.session.execute(update(Conversation).where(Conversation.id == cid).values(
            last_activity_at=later, last_message_preview="还在吗？", waiting_since=later)
            .execution_options(synchronize_session=False))
        await enqueue_message(tx, inbox=inbox, conversation=conv, identity=identity, sender_kind="bot", text="您好！")
    conv = await conversation(ctx, cid)
    assert (conv.last_message_preview, conv.last_activity_at, conv.waiting_since) == ("还在吗？", later, later)
