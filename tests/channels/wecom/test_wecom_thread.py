"""WeCom messages agents see in the thread: welcomes (微信客服 welcome_code, 客户联系 WelcomeCode) recorded as
the bot's messages linked to their delivery, and the one reply the move into 人工 (state 3) lets the API
send with its msg_code (PROTOCOL.md §4), against the local fake WeCom API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from scrm.db.models import Delivery
from scrm.services.wecom import contacts as wecom_contacts
from tests.channels.wecom.fake_wecom_api import FakeWeCom, serving
from tests.channels.wecom.wecom_samples import CORP_ID, event_item, text_item
from tests.conftest import login, make_agent
from tests.integration.helpers_integration import agent_reply, deliver_all, identity, inbound, messages
from tests.integration.wecom_helpers import contacts_inbox, kf_inbox, notify, post_xml

CUSTOMER = "wmThreadCustomer0000000000000001"
WO = "woThreadCustomer0000000000000001"


@pytest.fixture
async def fake() -> AsyncIterator[FakeWeCom]:
    async with serving() as served:
        served.contacts.add_person(WO, "孙女士", [{"userid": "lisi", "add_way": 1}])
        yield served


def bot_off(ctx: Any) -> None:
    from scrm.services.bot import rounds as bot

    bot.get_runtime(ctx).enabled = False


async def delivery(ctx: Any, delivery_id: int) -> Delivery:
    async with ctx.db.session() as s:
        found = await s.get(Delivery, delivery_id)
    assert found is not None
    return found


async def test_kf_welcome_is_the_bots_message_in_the_thread_sent_once(client, ctx, fake, admin_headers) -> None:
    bot_off(ctx)
    inbox = await kf_inbox(ctx, fake, welcome_text="欢迎光临，请问有什么可以帮您？")
    code = fake.issue_code("welcome")
    enter = event_item("enter-1", {"event_type": "enter_session", "open_kfid": inbox.settings["open_kfid"],
                                   "external_userid": CUSTOMER, "scene": "qr", "welcome_code": code})
    fake.add(enter)
    await notify(client, ctx, fake, inbox.id)
    fake.raw_pages.append({"errcode": 0, "errmsg": "ok", "next_cursor": "1", "has_more": 0, "msg_list": [enter]})
    await notify(client, ctx, fake, inbox.id)  # the same event pulled again: still one welcome
    (welcome,) = await messages(ctx, inbox_id=inbox.id, direction="out")
    assert (welcome.sender_kind, welcome.text, welcome.delivery_status) == ("bot", "欢迎光临，请问有什么可以帮您？", "queued")
    await deliver_all(ctx)
    assert [(e["code"], e["text"]["content"]) for e in fake.event_sends] == [(code, "欢迎光临，请问有什么可以帮您？")]
    (welcome,) = await messages(ctx, inbox_id=inbox.id, direction="out", sender_kind="bot")
    assert welcome.delivery_status == "sent"
    # The customer's first message joins the welcome's conversation: the thread reads welcome, then them.
    fake.add(text_item("hello-1", CUSTOMER, "我想问一下"))
    await notify(client, ctx, fake, inbox.id)
    (hello,) = await inbound(ctx, inbox.id)
    assert hello.conversation_id == welcome.conversation_id
    resp = await client.get(f"/api/v1/conversations/{welcome.conversation_id}/messages", headers=admin_headers)
    assert resp.status == 200
    assert [m["text"] for m in (await resp.json())["items"]] == ["欢迎光临，请问有什么可以帮您？", "我想问一下"]


async def test_kf_welcome_failure_shows_on_the_message(client, ctx, fake) -> None:
    bot_off(ctx)
    inbox = await kf_inbox(ctx, fake, welcome_text="欢迎")
    fake.add(event_item("enter-x", {"event_type": "enter_session", "external_userid": CUSTOMER, "scene": "qr",
                                    "welcome_code": "NOT-ISSUED"}))  # WeCom no longer accepts the code
    await notify(client, ctx, fake, inbox.id)
    await deliver_all(ctx)
    (welcome,) = await messages(ctx, inbox_id=inbox.id, direction="out")
    assert welcome.delivery_status == "failed" and "95016" in (welcome.delivery_error or "")


async def test_contacts_welcome_is_recorded_on_the_contact(client, ctx, fake) -> None:
    inbox = await contacts_inbox(ctx, fake, welcome_text="您好，我是您的专属顾问")
    fake.contacts.welcome_codes.add("WC-T")
    xml = (f"<xml><ToUserName><![CDATA[{CORP_ID}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName>"
           f"<CreateTime>{__import__('time').time():.0f}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
           "<Event><![CDATA[change_external_contact]]></Event>"
           "<ChangeType><![CDATA[add_external_contact]]></ChangeType><UserID><![CDATA[lisi]]></UserID>"
           f"<ExternalUserID><![CDATA[{WO}]]></ExternalUserID><WelcomeCode><![CDATA[WC-T]]></WelcomeCode></xml>")
    for _ in range(2):  # WeCom retries the callback: one welcome
        assert (await post_xml(client, inbox.id, xml, segment="wecom-contacts")).status == 200
    await wecom_contacts.wait_background(ctx)
    await deliver_all(ctx)
    assert [w["text"]["content"] for w in fake.contacts.welcomes] == ["您好，我是您的专属顾问"]
    (welcome,) = await messages(ctx, inbox_id=inbox.id, direction="out")
    assert (welcome.sender_kind, welcome.delivery_status) == ("bot", "sent")
    ident = await identity(ctx, inbox.id, WO)
    async with ctx.db.session() as s:
        from scrm.db.models import Conversation

        conv = await s.get(Conversation, welcome.conversation_id)
    assert conv.identity_id == ident.id and conv.status == "resolved"  # history on the contact, not a queue item


async def test_first_reply_in_state_3_goes_through_the_transfer_code(client, ctx, fake) -> None:
    bot_off(ctx)
    await make_agent(ctx, "mei", "agent")
    inbox = await kf_inbox(ctx, fake, servicers={"mei": "meimei"})
    fake.add(text_item("q-1", CUSTOMER, "有人吗"))
    await notify(client, ctx, fake, inbox.id)
    (msg,) = await inbound(ctx, inbox.id)
    await deliver_all(ctx)
    headers = await login(client, "mei", "password-123")
    resp = await client.post(f"/api/v1/conversations/{msg.conversation_id}/handler", json={"handler": "human"},
                             headers=headers)
    assert resp.status == 200
    await deliver_all(ctx)  # -> 3 with meimei; WeCom returns the msg_code of the move
    assert fake.state(CUSTOMER) == 3
    await ctx.bus.drain(5)
    await agent_reply(client, headers, msg.conversation_id, "您好，我是美美")
    await deliver_all(ctx)
    (first,) = fake.event_sends
    assert first["_kind"] == "taken" and first["text"]["content"] == "您好，我是美美"
    assert not [s for s in fake.send_attempts if s.get("touser") == CUSTOMER and s.get("msgtype") == "text"
                and s["text"]["content"] == "您好，我是美美"]  # not kf/send_msg (95018 in state 3)
    (sent,) = await messages(ctx, conversation_id=msg.conversation_id, sender_kind="agent")
    assert sent.delivery_status == "sent"
    await ctx.bus.drain(5)
    # The code carries one message: the next reply is refused before sending, with the reason.
    refused = await agent_reply(client, headers, msg.conversation_id, "还在吗", expect=409)
    assert "WeCom client" in refused["error"]["message"]


async def test_code_from_a_servicer_taking_the_customer_in_wecom(client, ctx, fake, admin_headers) -> None:
    bot_off(ctx)
    await make_agent(ctx, "lei", "agent")
    inbox = await kf_inbox(ctx, fake, servicers={"lei": "leilei"})
    fake.add(text_item("q-2", CUSTOMER, "在吗"))
    await notify(client, ctx, fake, inbox.id)
    (msg,) = await inbound(ctx, inbox.id)
    await deliver_all(ctx)
    code = fake.issue_code("taken")
    fake.states[(inbox.settings["open_kfid"], CUSTOMER)] = (3, "leilei")
    fake.add(event_item("take-1", {"event_type": "session_status_change", "open_kfid": inbox.settings["open_kfid"],
                                   "external_userid": CUSTOMER, "change_type": 1, "new_servicer_userid": "leilei",
                                   "msg_code": code}))
    await notify(client, ctx, fake, inbox.id)
    ident = await identity(ctx, inbox.id, CUSTOMER)
    assert ident.attributes["wecom_reply_code"]["code"] == code
    headers = await login(client, "lei", "password-123")
    await agent_reply(client, headers, msg.conversation_id, "我是磊磊，请讲")
    await deliver_all(ctx)
    assert [(e["code"], e["text"]["content"]) for e in fake.event_sends] == [(code, "我是磊磊，请讲")]
    # Ended in WeCom: a remembered code never outlives the state that produced it.
    fake.add(event_item("end-1", {"event_type": "session_status_change", "open_kfid": inbox.settings["open_kfid"],
                                  "external_userid": CUSTOMER, "change_type": 3, "old_servicer_userid": "leilei"}))
    await notify(client, ctx, fake, inbox.id)
    assert "wecom_reply_code" not in (await identity(ctx, inbox.id, CUSTOMER)).attributes


async def test_bot_answers_cost_the_reply_code_listener_nothing(client, ctx, fake, monkeypatch) -> None:
    """The bot's answers (most messages of a 微信客服 inbox) carry no reply code: the listener that marks
    the code taken does not read or lock rows for them (it did three reads and a row lock per answer)."""
    from scrm.services.wecom import session as wecom_session

    calls: list[int] = []
    real = wecom_session.reply_code_taken

    async def counted(ctx_: Any, conversation_id: int, message_id: int) -> None:
        calls.append(message_id)
        await real(ctx_, conversation_id, message_id)

    monkeypatch.setattr(wecom_session, "reply_code_taken", counted)
    inbox = await kf_inbox(ctx, fake)
    fake.add(text_item("bot-q-1", CUSTOMER, "什么时候发货"))
    await notify(client, ctx, fake, inbox.id)
    (msg,) = await inbound(ctx, inbox.id)
    await deliver_all(ctx)
    await ctx.bus.drain(5)
    answers = await messages(ctx, conversation_id=msg.conversation_id, sender_kind="bot")
    assert answers and all(a.delivery_status == "sent" for a in answers)
    assert calls == []
