"""WeChat end to end: encrypted callback -> stored -> bot / agent reply -> worker -> custom/send."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import update

from scrm.bootstrap import build_context
from scrm.context import AppContext
from scrm.db.models import ContactIdentity, Conversation, Inbox, utcnow
from scrm.services.outbox import enqueue_message
from scrm.services.uow import unit_of_work
from scrm.settings import Settings
from tests.channels.wechat.fake_wechat_api import APP_ID, APP_SECRET, FakeWeChat, serving
from tests.channels.wechat.wechat_callbacks import AES_KEY, TOKEN, decrypt_reply, encrypted_request, text_xml
from tests.conftest import REDIS_URL, make_inbox
from tests.integration.helpers_integration import (
    agent_reply,
    deliver_all,
    deliveries,
    drop_bot_answers,
    identity,
    inbound,
    messages,
    take_over,
)

OPENID = "oUser1"


@pytest.fixture
async def fake_wechat() -> AsyncIterator[FakeWeChat]:
    async with serving() as fake:
        yield fake


async def wechat_inbox(ctx: AppContext, fake: FakeWeChat, **settings: Any) -> Inbox:
    return await make_inbox(
        ctx, "wechat_oa", name="公众号",
        settings={"app_id": APP_ID, "api_base_url": fake.base_url,  # type: ignore[attr-defined]
                  "template": {"template_id": "TPL-ORDER", "fields": {"first": "text", "keyword1": "order"}},
                  **settings},
        secrets={"app_secret": APP_SECRET, "token": TOKEN, "encoding_aes_key": AES_KEY},
    )


@pytest.fixture
async def inbox(ctx: AppContext, fake_wechat: FakeWeChat) -> Inbox:
    # No time for a passive reply: every answer goes through the customer-service API.
    return await wechat_inbox(ctx, fake_wechat, passive_reply_timeout=0)


async def post_callback(client: Any, inbox_id: int, xml: str) -> Any:
    req = encrypted_request(xml, app_id=APP_ID)
    return await client.post(f"/webhooks/wechat/{inbox_id}", params=dict(req.query), data=req.body,
                             headers={"Content-Type": "text/xml"})


async def test_encrypted_text_is_stored_and_acknowledged(client, ctx, inbox, fake_wechat) -> None:
    resp = await post_callback(client, inbox.id, text_xml("你好，我想咨询订单", msg_id="6200000000000000001"))
    assert resp.status == 200 and await resp.read() == b"success"
    (msg,) = await inbound(ctx, inbox.id)
    assert msg.text == "你好，我想咨询订单" and msg.external_id == "6200000000000000001"

    # WeChat retries after 5 s without an answer: same MsgId, stored once, answered again.
    again = await post_callback(client, inbox.id, text_xml("你好，我想咨询订单", msg_id="6200000000000000001"))
    assert again.status == 200 and await again.read() == b"success"
    assert len(await inbound(ctx, inbox.id)) == 1


async def test_bad_signature_is_refused(client, ctx, inbox) -> None:
    req = encrypted_request(text_xml(), app_id=APP_ID, msg_signature="0" * 40)
    resp = await client.post(f"/webhooks/wechat/{inbox.id}", params=dict(req.query), data=req.body)
    assert resp.status == 403
    assert await inbound(ctx, inbox.id) == []


async def test_bot_and_agent_replies_reach_custom_send(client, ctx, inbox, fake_wechat, admin_headers) -> None:
    await post_callback(client, inbox.id, text_xml("怎么查看我的订单状态？"))  # answered outright, no choices
    (msg,) = await inbound(ctx, inbox.id)
    await deliver_all(ctx)  # the FAQ bot's answer, through the customer-service API
    bot_texts = [m.text for m in await messages(ctx, conversation_id=msg.conversation_id, sender_kind="bot")]
    assert bot_texts and all(t for t in bot_texts)
    sent = [s["text"]["content"] for s in fake_wechat.custom_sends if s["touser"] == OPENID]
    assert sent == bot_texts

    await take_over(client, admin_headers, msg.conversation_id)
    await agent_reply(client, admin_headers, msg.conversation_id, "您好，订单 #1024 已发货")
    await deliver_all(ctx)
    last = fake_wechat.custom_sends[-1]
    assert last == {"touser": OPENID, "msgtype": "text", "text": {"content": "您好，订单 #1024 已发货"}}
    assert fake_wechat.token_fetches == 1


async def test_passive_reply_answers_in_the_http_response(client, ctx, fake_wechat) -> None:
    box = await wechat_inbox(ctx, fake_wechat)  # default: up to 4 s for the bot's answer
    resp = await post_callback(client, box.id, text_xml("怎么查订单", msg_id="6200000000000000077"))
    assert resp.status == 200
    reply = decrypt_reply(await resp.read(), app_id=APP_ID)
    assert "<MsgType><![CDATA[text]]></MsgType>" in reply and f"<ToUserName><![CDATA[{OPENID}]]>" in reply
    await deliver_all(ctx)
    (msg,) = await inbound(ctx, box.id)
    answered = [d for d in await deliveries(ctx, conversation_id=msg.conversation_id) if d.claimed_by == "passive-reply"]
    assert len(answered) == 1 and answered[0].status == "sent"
    assert answered[0].payload["text"] not in [s["text"]["content"] for s in fake_wechat.custom_sends]


async def test_late_bot_means_success_at_once_and_the_answer_via_custom_send(client, ctx, fake_wechat) -> None:
    from scrm import channels_runtime

    box = await wechat_inbox(ctx, fake_wechat)  # would wait up to 4 s for the bot
    record = channels_runtime._passive_record(ctx)
    for _ in range(channels_runtime.PASSIVE_SAMPLE):
        record.add(late=True)  # the last callbacks of this process all waited in vain: the bot is behind
    record.probe_at = asyncio.get_running_loop().time() + 60  # and this one is not the probe
    loop = asyncio.get_running_loop()
    started = loop.time()
    resp = await post_callback(client, box.id, text_xml("怎么查看我的订单状态？", msg_id="6200000000000000078"))
    assert resp.status == 200 and await resp.read() == b"success"
    assert loop.time() - started < 2.0  # did not sit out the passive-reply wait
    await deliver_all(ctx)  # the bot's answer still reaches the customer, through the customer-service API
    (msg,) = await inbound(ctx, box.id)
    bot_texts = [m.text for m in await messages(ctx, conversation_id=msg.conversation_id, sender_kind="bot")]
    assert bot_texts and [s["text"]["content"] for s in fake_wechat.custom_sends] == bot_texts


async def test_45015_fails_the_delivery_with_the_reason(client, ctx, inbox, fake_wechat, admin_headers) -> None:
    await post_callback(client, inbox.id, text_xml("在吗"))
    (msg,) = await inbound(ctx, inbox.id)
    await drop_bot_answers(ctx, msg.conversation_id)
    await take_over(client, admin_headers, msg.conversation_id)
    await agent_reply(client, admin_headers, msg.conversation_id, "在的")
    fake_wechat.fail_next("/cgi-bin/message/custom/send", 45015)
    await deliver_all(ctx)

    (failed,) = [d for d in await deliveries(ctx, conversation_id=msg.conversation_id) if d.payload["text"] == "在的"]
    assert failed.status == "failed" and failed.error_code == "45015" and failed.attempts == 1
    detail = await (await client.get(f"/api/v1/conversations/{msg.conversation_id}", headers=admin_headers)).json()
    assert "48-hour" in detail["messages"][-1]["delivery_error"]


async def test_reply_outside_the_48h_window_is_refused(client, ctx, inbox, fake_wechat, admin_headers) -> None:
    await post_callback(client, inbox.id, text_xml("上周的问题"))
    (msg,) = await inbound(ctx, inbox.id)
    await drop_bot_answers(ctx, msg.conversation_id)
    async with ctx.db.transaction() as s:
        await s.execute(update(ContactIdentity).where(ContactIdentity.inbox_id == inbox.id)
                        .values(last_inbound_at=utcnow() - timedelta(hours=49)))

    detail = await (await client.get(f"/api/v1/conversations/{msg.conversation_id}", headers=admin_headers)).json()
    assert detail["reply_window"]["open"] is False
    body = await agent_reply(client, admin_headers, msg.conversation_id, "抱歉回复晚了", expect=409)
    assert "48 h" in str(body) and "reply window closed" in str(body)
    assert await deliver_all(ctx) == 0 and fake_wechat.custom_sends == []


async def test_template_message_is_sent_with_template_send(client, ctx, inbox, fake_wechat) -> None:
    await post_callback(client, inbox.id, text_xml("下单了"))
    (msg,) = await inbound(ctx, inbox.id)
    await drop_bot_answers(ctx, msg.conversation_id)
    async with unit_of_work(ctx) as tx:
        conv = await tx.session.get(Conversation, msg.conversation_id)
        ident = await tx.session.get(ContactIdentity, conv.identity_id)
        box = await tx.session.get(Inbox, inbox.id)
        await enqueue_message(tx, inbox=box, conversation=conv, identity=ident, sender_kind="system",
                              text="您的订单已发货", content_type="template", metadata={"order": "#1024"})
    await deliver_all(ctx)

    (sent,) = fake_wechat.template_sends
    assert sent["touser"] == OPENID and sent["template_id"] == "TPL-ORDER"
    assert sent["data"]["first"]["value"] == "您的订单已发货" and sent["data"]["keyword1"]["value"] == "#1024"
    (delivery,) = [d for d in await deliveries(ctx, conversation_id=msg.conversation_id) if d.status == "sent"]
    assert delivery.external_id == "200228333"


@pytest.mark.skipif(not REDIS_URL, reason="the token is shared across processes through Redis")
async def test_access_token_fetched_once_by_two_processes(ctx, settings: Settings, inbox, fake_wechat) -> None:
    other = await build_context(settings)  # a second process: its own pool, the same Redis
    try:
        first = await ctx.adapters.get(inbox.id)
        second = await other.adapters.get(inbox.id)
        assert first is not second
        tokens = await asyncio.gather(*(a.tokens.get() for a in (first, second) for _ in range(5)))
        assert len(set(tokens)) == 1
        assert fake_wechat.token_fetches == 1
    finally:
        await other.close()


async def test_identity_window_opens_again_when_the_customer_writes(client, ctx, inbox, admin_headers) -> None:
    await post_callback(client, inbox.id, text_xml("第一次", msg_id="1"))
    ident = await identity(ctx, inbox.id, OPENID)
    assert ident.last_inbound_at is not None and ident.reachable
