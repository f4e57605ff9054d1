"""The bot never talks over a human: takeover, hand-back, the takeover race, auto-replies, duplicates,
restarts in the middle of a flow and flow timeouts."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import select

from scrm.bootstrap import build_context
from scrm.db.models import Inbox, Message
from scrm.domain import InboundMessage
from scrm.services.bot import faq as faq_svc
from scrm.services.bot import rounds as bot_svc
from scrm.services.conversations.ingest import ingest
from scrm.web.app import create_app
from tests.bot.helpers_bot import (
    TUESDAY_MORNING,
    bot_replies,
    conversation,
    say,
    set_clock,
    settle,
    system_notes,
)
from tests.conftest import api_message, make_inbox, post_signed


async def _start(client, ctx):
    set_clock(ctx, TUESDAY_MORNING)
    inbox = (await make_inbox(ctx)).id
    cid = await say(client, ctx, inbox, "你好")
    return inbox, cid


async def _handler(client, headers, cid, handler):
    r = await client.post(f"/api/v1/conversations/{cid}/handler", json={"handler": handler}, headers=headers)
    assert r.status == 200, await r.text()


async def test_agent_takeover_silences_the_bot_and_hand_back_revives_it(client, ctx, admin_headers):
    inbox, cid = await _start(client, ctx)
    await _handler(client, admin_headers, cid, "human")
    before = await bot_replies(ctx, cid)
    await say(client, ctx, inbox, "运费怎么收？")
    await say(client, ctx, inbox, "转人工")
    assert await bot_replies(ctx, cid) == before
    assert (await conversation(ctx, cid)).handler == "human"
    await _handler(client, admin_headers, cid, "bot")
    notes = await system_notes(ctx, cid)
    assert any("接管" in n for n in notes) and any("交还机器人" in n for n in notes)
    await say(client, ctx, inbox, "运费怎么收？")
    after = await bot_replies(ctx, cid)
    assert len(after) == len(before) + 1 and "满 99 元包邮" in after[-1]["text"]


async def test_agent_reply_takes_over_and_the_bot_stays_silent(client, ctx, admin_headers):
    inbox, cid = await _start(client, ctx)
    r = await client.post(f"/api/v1/conversations/{cid}/messages", json={"text": "您好，我是小王"}, headers=admin_headers)
    assert r.status == 201
    before = await bot_replies(ctx, cid)
    await say(client, ctx, inbox, "运费怎么收？")
    assert await bot_replies(ctx, cid) == before


async def test_a_takeover_between_the_message_and_the_bot_wins(client, ctx, admin_headers, monkeypatch):
    """The customer writes while the bot handles the conversation; an agent takes over before the bot's
    round runs: the bot must not answer."""
    inbox, cid = await _start(client, ctx)
    at_gate, gate = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        at_gate.set()
        await gate.wait()

    # The consumer is held before its next batch (a round in progress holds the conversation's turn:
    # the agent's action would wait for it, so the race is between the commit and the round).
    ctx.bus.before_work.append(hold)
    before = await bot_replies(ctx, cid)
    r = await post_signed(client, inbox, api_message("race-1", sender="cust-1", text="运费怎么收？"))
    assert r.status == 200  # stored while the bot handles the conversation; the bot's round is held
    await asyncio.wait_for(at_gate.wait(), 10)
    await _handler(client, admin_headers, cid, "human")
    gate.set()
    await settle(ctx)
    assert await bot_replies(ctx, cid) == before
    assert (await conversation(ctx, cid)).handler == "human"


async def test_queue_is_silent_until_an_agent_hands_back(client, ctx, admin_headers):
    inbox, cid = await _start(client, ctx)
    await say(client, ctx, inbox, "人工")
    replies = await bot_replies(ctx, cid)
    await say(client, ctx, inbox, "你好？")
    await say(client, ctx, inbox, "", choice="open_ticket")
    assert await bot_replies(ctx, cid) == replies
    await _handler(client, admin_headers, cid, "human")
    await _handler(client, admin_headers, cid, "bot")
    await say(client, ctx, inbox, "怎么退货")
    assert len(await bot_replies(ctx, cid)) == len(replies) + 1


async def test_no_reply_to_auto_submitted_messages(client, ctx):
    set_clock(ctx, TUESDAY_MORNING)
    inbox = await make_inbox(ctx)
    async with ctx.db.session() as s:
        row = await s.get(Inbox, inbox.id)
    [out] = await ingest(ctx, row, [InboundMessage(external_id="ooo-1", sender_id="mailer", text="我正在休假，自动回复",
                                                   auto_submitted=True)])
    await settle(ctx)
    assert await bot_replies(ctx, out.conversation_id) == []


async def test_the_same_message_is_answered_once(client, ctx):
    """With Redis every process receives the event; only one answers."""
    inbox, cid = await _start(client, ctx)
    await say(client, ctx, inbox, "运费怎么收？")
    async with ctx.db.session() as s:
        last_in = await s.scalar(select(Message.id).where(Message.conversation_id == cid, Message.direction == "in")
                                 .order_by(Message.id.desc()).limit(1))
    before = await bot_replies(ctx, cid)
    await asyncio.gather(*(bot_svc.handle_inbound(ctx, last_in) for _ in range(3)))
    assert await bot_replies(ctx, cid) == before


async def test_restart_in_the_middle_of_a_flow_continues_where_it_was(client, ctx, settings, aiohttp_client):
    inbox, cid = await _start(client, ctx)
    await say(client, ctx, inbox, "我要提交工单")
    assert "请描述您遇到的问题" in (await bot_replies(ctx, cid))[-1]["text"]
    await client.close()  # the process stops: listeners and in-memory state are gone

    ctx2 = await build_context(settings)
    try:
        client2 = await aiohttp_client(create_app(settings, ctx=ctx2, run_background=False))
        set_clock(ctx2, TUESDAY_MORNING)
        await say(client2, ctx2, inbox, "收到的杯子是碎的")
        assert "手机号或邮箱" in (await bot_replies(ctx2, cid))[-1]["text"]
        await say(client2, ctx2, inbox, "someone@example.com")
        assert "工单已创建" in (await bot_replies(ctx2, cid))[-1]["text"]
        await client2.close()
    finally:
        await ctx2.bus.drain(2)
        await ctx2.close()


async def test_a_flow_timeout_fires_from_the_periodic_check(client, ctx):
    inbox, cid = await _start(client, ctx)
    await say(client, ctx, inbox, "ticket")
    state = (await conversation(ctx, cid)).bot_state
    assert state["at"] == "ticket:describe" and state["timeout"]
    assert await bot_svc.check_timeouts(ctx, TUESDAY_MORNING + timedelta(seconds=600)) == 0
    assert await bot_svc.check_timeouts(ctx, TUESDAY_MORNING + timedelta(seconds=901)) == 1
    assert "长时间没有收到回复" in (await bot_replies(ctx, cid))[-1]["text"]
    assert (await conversation(ctx, cid)).bot_state["timeout"] is None
    assert await bot_svc.check_timeouts(ctx, TUESDAY_MORNING + timedelta(seconds=2000)) == 0


async def test_the_example_knowledge_base_is_seeded_once(client, ctx):
    index = await faq_svc.get_index(ctx)
    assert len(index.matcher) >= 40
    assert await faq_svc.seed_if_empty(ctx, faq_svc.ROOT / "config/faq/shop_faq.yaml") == 0
