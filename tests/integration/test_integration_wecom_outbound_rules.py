"""Every way a message leaves for a 微信客服 customer checks WeCom's rules before it is queued: the
session state (kf/send_msg only in 0 / 1, 95018 otherwise) and at most 5 messages within 48 h of the
customer's last message (95001). Agent replies are covered in test_integration_wecom_session."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select

from scrm.db.models import Conversation, Ticket
from tests.channels.wecom.fake_wecom_api import FakeWeCom, serving
from tests.channels.wecom.wecom_samples import event_item, text_item
from tests.integration.helpers_integration import agent_reply, deliver_all, inbound, messages
from tests.integration.wecom_helpers import kf_inbox, notify

FIRST, SECOND = "wmRulesCustomer000000000000001", "wmRulesCustomer000000000000002"


@pytest.fixture
async def fake() -> AsyncIterator[FakeWeCom]:
    async with serving() as fake:
        yield fake


def quiet_bot(ctx: Any) -> None:
    from scrm.services.bot import rounds as bot

    bot.get_runtime(ctx).enabled = False


async def broadcast_to_inbox(client, ctx, admin_headers, inbox_id: int) -> dict:
    """Start a broadcast to everyone in the inbox, deliver it, and return its report."""
    resp = await client.post("/api/v1/broadcasts", headers=admin_headers, json={
        "name": "上新", "inbox_ids": [inbox_id], "template": "新品上架", "rules": {}})
    assert resp.status == 201, await resp.text()
    bid = (await resp.json())["id"]
    assert (await client.post(f"/api/v1/broadcasts/{bid}/start", headers=admin_headers)).status == 202
    await deliver_all(ctx)
    return await (await client.get(f"/api/v1/broadcasts/{bid}/report", headers=admin_headers)).json()


async def test_broadcast_skips_a_customer_whose_session_refuses_api_messages(client, ctx, fake, admin_headers) -> None:
    quiet_bot(ctx)
    inbox = await kf_inbox(ctx, fake, servicers={"lei": "leilei"})
    fake.add(text_item("r1", FIRST, "你好"), text_item("r2", SECOND, "你好"))
    await notify(client, ctx, fake, inbox.id)
    await deliver_all(ctx)
    # SECOND is taken by a servicer in the WeCom client (人工): kf/send_msg would answer 95018.
    fake.states[(inbox.settings["open_kfid"], SECOND)] = (3, "leilei")
    fake.add(event_item("ev-take", {"event_type": "session_status_change", "open_kfid": inbox.settings["open_kfid"],
                                    "external_userid": SECOND, "change_type": 1, "new_servicer_userid": "leilei"}))
    await notify(client, ctx, fake, inbox.id)
    report = await broadcast_to_inbox(client, ctx, admin_headers, inbox.id)
    assert report["skipped_by_reason"] == {"session_state": 1} and report["sent"] == 1
    assert [a["touser"] for a in fake.send_attempts] == [FIRST]  # nothing bound to fail was tried


async def test_ticket_notice_counts_the_five_message_allowance(client, ctx, fake, admin_headers) -> None:
    quiet_bot(ctx)
    inbox = await kf_inbox(ctx, fake, handoff="api_only")
    fake.add(text_item("t1", FIRST, "发票开错了"))
    await notify(client, ctx, fake, inbox.id)
    cid = (await inbound(ctx, inbox.id))[-1].conversation_id
    for n in range(5):
        await agent_reply(client, admin_headers, cid, f"第{n + 1}条")
    async with ctx.db.transaction() as s:
        conv = await s.get(Conversation, cid)
        ticket = Ticket(number=2001, subject="发票", status="new", priority="normal", conversation_id=cid,
                        contact_id=conv.contact_id, fields={})
        s.add(ticket)
        await s.flush()
        tid = ticket.id
    resp = await client.post(f"/api/v1/desk/tickets/{tid}/status", json={"status": "solved"}, headers=admin_headers)
    assert resp.status == 200
    await deliver_all(ctx)
    assert len(fake.send_attempts) == 5  # the notice was not queued to fail with 95001
    notes = [m.text or "" for m in await messages(ctx, conversation_id=cid, private=True)]
    assert any("#2001" in n and "at most 5 messages" in n for n in notes)
    async with ctx.db.session() as s:
        assert (await s.scalars(select(Ticket.status).where(Ticket.id == tid))).one() == "solved"


async def test_bot_answer_beyond_the_five_message_allowance_is_not_sent_and_the_thread_says_why(
        client, ctx, fake, admin_headers) -> None:
    from bot_flows.actions import BotResult, SendReply
    from scrm.db.models import Contact
    from scrm.services.bot import rounds as bot
    from scrm.services.conversations import actions as conv_svc
    from scrm.services.uow import unit_of_work

    quiet_bot(ctx)
    inbox = await kf_inbox(ctx, fake, handoff="api_only")
    fake.add(text_item("b1", FIRST, "还在吗"))
    await notify(client, ctx, fake, inbox.id)
    cid = (await inbound(ctx, inbox.id))[-1].conversation_id
    for n in range(4):  # four of the five messages WeCom lets through after the customer's last one
        await agent_reply(client, admin_headers, cid, f"第{n + 1}条")
    # The bot's answer comes in two messages: only the first fits in the allowance.
    async with unit_of_work(ctx) as tx:
        conv, box, ident = await conv_svc.load(tx, cid)
        contact = await tx.session.get(Contact, ident.contact_id)
        await bot.apply_actions(tx, conv, box, ident, contact, BotResult(state={}, actions=[
            SendReply("您的订单已发货"), SendReply("还有其他问题吗？")]))
    await deliver_all(ctx)
    assert [a["text"]["content"] for a in fake.send_attempts][-2:] == ["第4条", "您的订单已发货"]
    assert len(fake.send_attempts) == 5  # nothing was tried that WeCom refuses with 95001
    notes = [m.text or "" for m in await messages(ctx, conversation_id=cid, private=True)]
    assert any("bot answer not sent" in n and "at most 5 messages" in n for n in notes)
    # The customer writes again: a new allowance, and the bot's answers go out again.
    fake.add(text_item("b2", FIRST, "好的"))
    await notify(client, ctx, fake, inbox.id)
    async with unit_of_work(ctx) as tx:
        conv, box, ident = await conv_svc.load(tx, cid)
        contact = await tx.session.get(Contact, ident.contact_id)
        await bot.apply_actions(tx, conv, box, ident, contact, BotResult(state={}, actions=[SendReply("好的，再见")]))
    await deliver_all(ctx)
    assert fake.send_attempts[-1]["text"]["content"] == "好的，再见"


async def test_broadcast_counts_the_five_message_allowance(client, ctx, fake, admin_headers) -> None:
    quiet_bot(ctx)
    inbox = await kf_inbox(ctx, fake, handoff="api_only")
    fake.add(text_item("m1", FIRST, "你好"), text_item("m2", SECOND, "你好"))
    await notify(client, ctx, fake, inbox.id)
    convs = {m.external_id: m.conversation_id for m in await inbound(ctx, inbox.id)}
    for n in range(5):  # FIRST has had the five messages WeCom lets through since writing
        await agent_reply(client, admin_headers, convs["m1"], f"第{n + 1}条")
    for n in range(4):  # SECOND has one left
        await agent_reply(client, admin_headers, convs["m2"], f"第{n + 1}条")
    await deliver_all(ctx)
    tried = len(fake.send_attempts)
    report = await broadcast_to_inbox(client, ctx, admin_headers, inbox.id)
    assert report["skipped_by_reason"] == {"reply_limit": 1} and report["sent"] == 1
    assert [a["touser"] for a in fake.send_attempts[tried:]] == [SECOND]  # nothing WeCom refuses with 95001
    # The broadcast was SECOND's fifth message: the reply box now says the allowance is used up.
    refused = await agent_reply(client, admin_headers, convs["m2"], "还有一条", expect=409)
    assert "at most 5 messages" in refused["error"]["message"]
