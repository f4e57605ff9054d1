"""The ingest sink: stored once, ordered, reopen rules, events only after commit."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import func, select

from scrm import events as ev
from scrm.db.models import Contact, ContactIdentity, Conversation, Message
from scrm.domain import ChannelEvent, ChannelEventKind, ContactProfile, InboundMessage
from scrm.services.conversations.ingest import ingest
from tests.conftest import api_message, make_inbox, post_signed


async def count(ctx: Any, model: Any) -> int:
    async with ctx.db.session() as s:
        return int(await s.scalar(select(func.count()).select_from(model)) or 0)


async def test_message_creates_contact_identity_conversation(ctx):
    inbox = await make_inbox(ctx)
    [out] = await ingest(ctx, inbox, [InboundMessage("m1", "u1", "你好，请问发货了吗？",
                                                     profile=ContactProfile(name="张三", phone="13800138000"))])
    assert not out.duplicate and out.message_id and out.conversation_id
    async with ctx.db.session() as s:
        contact = await s.get(Contact, out.contact_id)
        conv = await s.get(Conversation, out.conversation_id)
    assert contact.name == "张三" and contact.phone == "13800138000"
    assert conv.status == "open" and conv.handler == "bot" and conv.unread_count == 1
    assert conv.last_message_preview == "你好，请问发货了吗？" and conv.waiting_since is not None


async def test_duplicate_delivery_is_stored_once(ctx):
    inbox = await make_inbox(ctx)
    first = await ingest(ctx, inbox, [InboundMessage("dup-1", "u1", "hello")])
    again = await ingest(ctx, inbox, [InboundMessage("dup-1", "u1", "hello")])
    assert again[0].duplicate and again[0].message_id == first[0].message_id
    assert await count(ctx, Message) == 1


async def test_twenty_concurrent_identical_posts_store_one_message(client, ctx):
    inbox = await make_inbox(ctx)
    payload = api_message("same-id", sender="racer", text="并发重复")
    responses = await asyncio.gather(*[post_signed(client, inbox.id, payload) for _ in range(20)])
    assert [r.status for r in responses] == [200] * 20
    bodies = [await r.json() for r in responses]
    assert sum(1 for b in bodies if not b["results"][0]["duplicate"]) == 1
    assert len({b["results"][0]["message_id"] for b in bodies}) == 1
    assert await count(ctx, Message) == 1
    assert await count(ctx, Contact) == 1 and await count(ctx, ContactIdentity) == 1
    assert await count(ctx, Conversation) == 1


async def test_concurrent_first_messages_of_new_contact_share_one_conversation(client, ctx):
    inbox = await make_inbox(ctx)
    responses = await asyncio.gather(*[
        post_signed(client, inbox.id, api_message(f"burst-{i}", sender="newbie", text=f"msg {i}")) for i in range(10)
    ])
    assert all(r.status == 200 for r in responses)
    assert await count(ctx, Conversation) == 1 and await count(ctx, Contact) == 1
    assert await count(ctx, Message) == 10


async def test_messages_keep_arrival_order(ctx):
    inbox = await make_inbox(ctx)
    for i in range(5):
        await ingest(ctx, inbox, [InboundMessage(f"o{i}", "u1", f"第{i}条")])
    async with ctx.db.session() as s:
        texts = (await s.scalars(select(Message.text).order_by(Message.id))).all()
    assert texts == [f"第{i}条" for i in range(5)]


async def test_resolved_conversation_reopens_with_reopen_policy(ctx):
    inbox = await make_inbox(ctx, reopen_policy="reopen")
    [a] = await ingest(ctx, inbox, [InboundMessage("r1", "u1", "first")])
    async with ctx.db.transaction() as s:
        conv = await s.get(Conversation, a.conversation_id)
        conv.status, conv.handler = "resolved", "human"
    [b] = await ingest(ctx, inbox, [InboundMessage("r2", "u1", "again")])
    assert b.conversation_id == a.conversation_id
    async with ctx.db.session() as s:
        conv = await s.get(Conversation, a.conversation_id)
    assert conv.status == "open" and conv.handler == "bot"


async def test_resolved_conversation_starts_new_one_with_new_policy(ctx):
    inbox = await make_inbox(ctx, reopen_policy="new")
    [a] = await ingest(ctx, inbox, [InboundMessage("n1", "u1", "first")])
    [same] = await ingest(ctx, inbox, [InboundMessage("n2", "u1", "still open")])
    assert same.conversation_id == a.conversation_id
    async with ctx.db.transaction() as s:
        (await s.get(Conversation, a.conversation_id)).status = "resolved"
    [b] = await ingest(ctx, inbox, [InboundMessage("n3", "u1", "new problem")])
    assert b.conversation_id != a.conversation_id
    async with ctx.db.session() as s:
        assert (await s.get(Conversation, a.conversation_id)).status == "resolved"


async def test_pending_and_snoozed_conversations_reopen_on_customer_message(ctx):
    inbox = await make_inbox(ctx)
    [a] = await ingest(ctx, inbox, [InboundMessage("p1", "u1", "x")])
    async with ctx.db.transaction() as s:
        (await s.get(Conversation, a.conversation_id)).status = "snoozed"
    await ingest(ctx, inbox, [InboundMessage("p2", "u1", "y")])
    async with ctx.db.session() as s:
        assert (await s.get(Conversation, a.conversation_id)).status == "open"


async def test_events_are_published_after_commit_and_see_committed_rows(ctx):
    inbox = await make_inbox(ctx)
    seen: list[tuple[str, bool]] = []

    async def listener(event: ev.Event) -> None:
        if event.name == ev.MESSAGE_CREATED:
            async with ctx.db.session() as s:
                seen.append((event.name, await s.get(Message, event.data["message_id"]) is not None))

    ctx.bus.subscribe(listener)
    await ingest(ctx, inbox, [InboundMessage("e1", "u1", "hi")])
    await ctx.bus.drain()
    for _ in range(50):
        if seen:
            break
        await asyncio.sleep(0.05)
    assert seen == [(ev.MESSAGE_CREATED, True)]


async def test_channel_events_update_identity_flags_and_edits(ctx):
    inbox = await make_inbox(ctx)
    [a] = await ingest(ctx, inbox, [InboundMessage("x1", "u1", "原文")])
    await ingest(ctx, inbox, [
        ChannelEvent(ChannelEventKind.MESSAGE_EDITED, sender_id="u1", external_id="x1", data={"text": "修改后"}),
        ChannelEvent(ChannelEventKind.CONTACT_UNREACHABLE, sender_id="u1", data={"reason": "blocked the bot"}),
    ])
    async with ctx.db.session() as s:
        msg = await s.get(Message, a.message_id)
        ident = await s.scalar(select(ContactIdentity))
    assert msg.text == "修改后" and msg.edit_history[0]["text"] == "原文"
    assert ident.reachable is False and ident.unreachable_reason == "blocked the bot"


async def test_subscribe_event_records_source_attribution(ctx):
    inbox = await make_inbox(ctx)
    await ingest(ctx, inbox, [ChannelEvent(ChannelEventKind.CONTACT_SUBSCRIBED, sender_id="openid-1",
                                           data={"source": "spring_campaign"})])
    async with ctx.db.session() as s:
        ident = await s.scalar(select(ContactIdentity))
        contact = await s.get(Contact, ident.contact_id)
    assert ident.source == "spring_campaign" and contact.attributes["source"] == "spring_campaign"
    assert await count(ctx, Conversation) == 0
