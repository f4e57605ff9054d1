"""微信客服 conversations in scrm and the WeCom session: states in step with the handoff, the 48 h /
5-message rule, welcome codes, servicer replies, 95018 and msg_send_fail, recalls."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import update

from scrm.db.models import ContactIdentity, Delivery, utcnow
from tests.channels.wecom.fake_wecom_api import FakeWeCom, serving
from tests.channels.wecom.wecom_samples import event_item, text_item
from tests.conftest import login, make_agent
from tests.integration.helpers_integration import (
    agent_reply,
    deliver_all,
    deliveries,
    identity,
    inbound,
    messages,
)
from tests.integration.wecom_helpers import kf_inbox, notify

CUSTOMER = "wmSessionCustomer00000000000001"


@pytest.fixture
async def fake() -> AsyncIterator[FakeWeCom]:
    async with serving() as fake:
        yield fake


async def first_message(client: Any, ctx: Any, fake: FakeWeCom, inbox_id: int, text: str = "你好",
                        msgid: str = "s1") -> Any:
    fake.add(text_item(msgid, CUSTOMER, text))
    await notify(client, ctx, fake, inbox_id)
    return (await inbound(ctx, inbox_id))[-1]


def agents_always_in(ctx: Any) -> None:
    """The bot hands over instead of saying when agents are back (the test may run on a Sunday)."""
    from bot_flows.conditions import BusinessHours
    from scrm.services.bot import rounds as bot

    days = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
    bot.get_runtime(ctx).hours_override = BusinessHours.from_config({"weekly": {d: "00:00-23:59" for d in days}})


async def test_states_follow_bot_queue_human_resolved(client, ctx, fake, admin_headers) -> None:
    agents_always_in(ctx)
    agent_id = await make_agent(ctx, "mei", "agent")
    inbox = await kf_inbox(ctx, fake, servicers={"mei": "meimei"}, queue_message="已为您转接人工客服，请稍候",
                           closing_message="感谢您的咨询，再见")
    msg = await first_message(client, ctx, fake, inbox.id, "转人工")  # the handoff keyword
    cid = msg.conversation_id
    await deliver_all(ctx)
    # bot -> 1 on the new conversation, the bot's handoff message (sent while the API may: states 0 and 1),
    # then -> 2. The move to 1 is queued at the end of the batch that worked conversation.created (the
    # identity's lock held until the commit only), so it may follow the bot's first message.
    assert [t["service_state"] for t in fake.trans_requests] == [1, 2]
    assert fake.state(CUSTOMER) == 2
    assert fake.ops[-1] == ("trans", 2) and ("send", "text") in fake.ops  # the handoff message left before the pool
    assert [e["text"]["content"] for e in fake.event_sends] == ["已为您转接人工客服，请稍候"]  # the pool code
    # In the pool WeCom refuses API messages: the reply box says why instead of failing later.
    refused = await agent_reply(client, admin_headers, cid, "我来了", expect=409)
    assert "95018" in refused["error"]["message"]

    headers = await login(client, "mei", "password-123")
    resp = await client.post(f"/api/v1/conversations/{cid}/handler", json={"handler": "human"}, headers=headers)
    assert resp.status == 200
    await deliver_all(ctx)
    assert fake.trans_requests[-1] == {"open_kfid": inbox.settings["open_kfid"], "external_userid": CUSTOMER,
                                       "service_state": 3, "servicer_userid": "meimei"}
    refused = await agent_reply(client, headers, cid, "您好", expect=409)
    assert "WeCom client" in refused["error"]["message"]

    # Mei answers from the WeCom client: the reply comes back with origin 5 and is hers.
    fake.add(text_item("from-client", CUSTOMER, "您好，我是美美", origin=5, servicer="meimei"))
    await notify(client, ctx, fake, inbox.id)
    (reply,) = await messages(ctx, external_id="from-client")
    assert (reply.direction, reply.sender_kind, reply.sender_agent_id) == ("out", "agent", agent_id)

    resp = await client.post(f"/api/v1/conversations/{cid}/status", json={"status": "resolved"}, headers=headers)
    assert resp.status == 200
    await deliver_all(ctx)
    assert fake.state(CUSTOMER) == 4
    closing = fake.event_sends[-1]  # with the closing code: the closing message and the survey as one menu
    assert closing["_kind"] == "closing" and closing["msgmenu"]["head_content"].startswith("感谢您的咨询，再见")


async def test_api_only_keeps_the_session_with_the_api(client, ctx, fake, admin_headers) -> None:
    agents_always_in(ctx)
    inbox = await kf_inbox(ctx, fake, handoff="api_only")
    msg = await first_message(client, ctx, fake, inbox.id, "转人工")
    await deliver_all(ctx)
    await client.post(f"/api/v1/conversations/{msg.conversation_id}/handler", json={"handler": "human"},
                      headers=admin_headers)
    await agent_reply(client, admin_headers, msg.conversation_id, "人工客服为您服务")
    await deliver_all(ctx)
    assert {t["service_state"] for t in fake.trans_requests} == {1}
    assert fake.sends[-1]["text"]["content"] == "人工客服为您服务"


async def test_wecom_side_changes_move_the_conversation(client, ctx, fake) -> None:
    agent_id = await make_agent(ctx, "lei", "agent")
    inbox = await kf_inbox(ctx, fake, servicers={"lei": "leilei"})
    msg = await first_message(client, ctx, fake, inbox.id)
    fake.add(event_item("ev-take", {"event_type": "session_status_change", "open_kfid": inbox.settings["open_kfid"],
                                    "external_userid": CUSTOMER, "change_type": 1, "new_servicer_userid": "leilei",
                                    "msg_code": "CODE"}))
    await notify(client, ctx, fake, inbox.id)
    async with ctx.db.session() as s:
        from scrm.db.models import Conversation

        conv = await s.get(Conversation, msg.conversation_id)
    assert (conv.handler, conv.assignee_id) == ("human", agent_id)
    ident = await identity(ctx, inbox.id, CUSTOMER)
    assert ident.attributes["wecom_kf_state"] == 3 and ident.attributes["wecom_servicer"] == "leilei"
    await deliver_all(ctx)
    assert all(t["service_state"] != 3 for t in fake.trans_requests)  # not echoed back to WeCom
    fake.add(event_item("ev-end", {"event_type": "session_status_change", "open_kfid": inbox.settings["open_kfid"],
                                   "external_userid": CUSTOMER, "change_type": 3, "old_servicer_userid": "leilei"}))
    await notify(client, ctx, fake, inbox.id)
    async with ctx.db.session() as s:
        conv = await s.get(Conversation, msg.conversation_id)
    assert conv.status == "resolved"


async def test_session_ended_in_wecom_gets_the_closing_message_once(client, ctx, fake) -> None:
    inbox = await kf_inbox(ctx, fake, servicers={"lei": "leilei"}, closing_message="感谢您的咨询，再见")
    msg = await first_message(client, ctx, fake, inbox.id)
    await deliver_all(ctx)
    code = fake.issue_code("closing")
    end = event_item("ev-close", {"event_type": "session_status_change", "open_kfid": inbox.settings["open_kfid"],
                                  "external_userid": CUSTOMER, "change_type": 3, "old_servicer_userid": "leilei",
                                  "msg_code": code})
    fake.add(end)
    await notify(client, ctx, fake, inbox.id)
    fake.raw_pages.append({"errcode": 0, "errmsg": "ok", "next_cursor": "2", "has_more": 0, "msg_list": [end]})
    await notify(client, ctx, fake, inbox.id)  # the same event pulled again
    await deliver_all(ctx)
    [closing] = fake.event_sends
    assert closing["code"] == code and closing["msgmenu"]["head_content"].startswith("感谢您的咨询，再见")
    assert all(t["service_state"] != 4 for t in fake.trans_requests)  # WeCom ended it: nothing echoed back
    shown = [m for m in await messages(ctx, conversation_id=msg.conversation_id) if m.direction == "out"]
    assert [m.text.startswith("感谢您的咨询，再见") for m in shown].count(True) == 1  # shown in the thread

    # The customer writes again (a new conversation), the servicer ends it once more, but the event is
    # pulled after its code's 20 s: no closing message is attempted.
    await first_message(client, ctx, fake, inbox.id, "还有一个问题", msgid="s2")
    await deliver_all(ctx)
    late = event_item("ev-close-late", {"event_type": "session_status_change", "open_kfid": inbox.settings["open_kfid"],
                                        "external_userid": CUSTOMER, "change_type": 3, "old_servicer_userid": "leilei",
                                        "msg_code": fake.issue_code("closing")})
    fake.add(late | {"send_time": int(late["send_time"]) - 60})
    await notify(client, ctx, fake, inbox.id)
    await deliver_all(ctx)
    assert len(fake.event_sends) == 1


async def test_closing_code_not_sent_after_it_expired_in_the_outbox(client, ctx, fake) -> None:
    inbox = await kf_inbox(ctx, fake, closing_message="再见")
    await first_message(client, ctx, fake, inbox.id)
    await deliver_all(ctx)
    fake.add(event_item("ev-close", {"event_type": "session_status_change", "open_kfid": inbox.settings["open_kfid"],
                                     "external_userid": CUSTOMER, "change_type": 3,
                                     "msg_code": fake.issue_code("closing")}))
    await notify(client, ctx, fake, inbox.id)
    adapter = await ctx.adapters.get(inbox.id)
    adapter.clock = lambda: time.time() + 30  # the worker gets to it after the code's 20 s
    await deliver_all(ctx)
    assert fake.event_sends == []
    [failed] = [d for d in await deliveries(ctx) if d.kind == "wecom_code"]
    assert failed.status == "failed" and "expired" in (failed.last_error or "")


async def test_five_messages_per_customer_message_within_48_hours(client, ctx, fake, admin_headers) -> None:
    from scrm.services.bot import rounds as bot

    bot.get_runtime(ctx).enabled = False
    inbox = await kf_inbox(ctx, fake, handoff="api_only")
    msg = await first_message(client, ctx, fake, inbox.id)
    cid = msg.conversation_id
    for n in range(5):
        await agent_reply(client, admin_headers, cid, f"第{n + 1}条")
    refused = await agent_reply(client, admin_headers, cid, "第6条", expect=409)
    assert "at most 5 messages" in refused["error"]["message"]
    detail = await (await client.get(f"/api/v1/conversations/{cid}", headers=admin_headers)).json()
    assert detail["reply_window"]["open"] is False
    await deliver_all(ctx)
    assert len(fake.sends) == 5
    fake.add(text_item("s2", CUSTOMER, "还在吗"))  # a new customer message opens a new allowance
    await notify(client, ctx, fake, inbox.id)
    await agent_reply(client, admin_headers, cid, "在的")
    # 48 h after the customer's last message the window is closed whatever the count.
    async with ctx.db.transaction() as s:
        await s.execute(update(ContactIdentity).where(ContactIdentity.inbox_id == inbox.id)
                        .values(last_inbound_at=utcnow() - timedelta(hours=49)))
    refused = await agent_reply(client, admin_headers, cid, "迟到的回复", expect=409)
    assert "48 h" in refused["error"]["message"]


async def test_welcome_code_is_answered_once(client, ctx, fake) -> None:
    inbox = await kf_inbox(ctx, fake, welcome_text="欢迎光临，请问有什么可以帮您？", welcome_menu=["查订单", "转人工"])
    code = fake.issue_code("welcome")
    enter = event_item("ent-1", {"event_type": "enter_session", "open_kfid": inbox.settings["open_kfid"],
                                 "external_userid": CUSTOMER, "scene": "oamenu3", "scene_param": "%E5%9C%BA%E6%99%AF3",
                                 "welcome_code": code})
    fake.add(enter)
    await notify(client, ctx, fake, inbox.id)
    fake.raw_pages.append({"errcode": 0, "errmsg": "ok", "next_cursor": "1", "has_more": 0, "msg_list": [enter]})
    await notify(client, ctx, fake, inbox.id)  # the same event pulled again
    await deliver_all(ctx)
    [welcome] = fake.event_sends
    assert welcome["code"] == code and welcome["msgtype"] == "msgmenu"
    assert welcome["msgmenu"]["head_content"] == "欢迎光临，请问有什么可以帮您？"
    ident = await identity(ctx, inbox.id, CUSTOMER)
    assert ident.source == "oamenu3"
    stale = event_item("ent-old", {"event_type": "enter_session", "external_userid": CUSTOMER, "scene": "x",
                                   "welcome_code": "old-code"}) | {"send_time": 1_600_000_000}
    fake.add(stale)
    await notify(client, ctx, fake, inbox.id)
    await deliver_all(ctx)
    assert len(fake.event_sends) == 1  # a welcome_code older than 20 s is not used


async def test_95018_and_msg_send_fail_fail_the_delivery_with_the_reason(client, ctx, fake, admin_headers) -> None:
    from scrm.services.bot import rounds as bot

    bot.get_runtime(ctx).enabled = False
    inbox = await kf_inbox(ctx, fake, handoff="api_only")
    msg = await first_message(client, ctx, fake, inbox.id)
    await deliver_all(ctx)
    fake.states[(inbox.settings["open_kfid"], CUSTOMER)] = (3, "someone")  # taken in the WeCom client
    await agent_reply(client, admin_headers, msg.conversation_id, "您好")
    await deliver_all(ctx)
    (sent,) = await messages(ctx, conversation_id=msg.conversation_id, sender_kind="agent")
    assert sent.delivery_status == "failed" and "95018" in sent.delivery_error
    fake.states.clear()
    await agent_reply(client, admin_headers, msg.conversation_id, "第二次")
    await deliver_all(ctx)
    ok = [d for d in await deliveries(ctx, conversation_id=msg.conversation_id) if d.status == "sent"][-1]
    fake.add(event_item("fail-1", {"event_type": "msg_send_fail", "external_userid": CUSTOMER,
                                   "fail_msgid": ok.external_id, "fail_type": 10}))
    await notify(client, ctx, fake, inbox.id)
    async with ctx.db.session() as s:
        failed = await s.get(Delivery, ok.id)
    assert failed.status == "failed" and "拒收" in failed.last_error


async def test_recalled_message_keeps_its_text_for_the_audit(client, ctx, fake) -> None:
    inbox = await kf_inbox(ctx, fake)
    msg = await first_message(client, ctx, fake, inbox.id, "我的手机号是 13800000000")
    fake.add(event_item("rc-1", {"event_type": "user_recall_msg", "external_userid": CUSTOMER,
                                 "recall_msgid": msg.external_id}))
    await notify(client, ctx, fake, inbox.id)
    (again,) = await messages(ctx, external_id=msg.external_id)
    assert "撤回" in again.text and again.edit_history[0]["text"] == "我的手机号是 13800000000"


async def test_new_sessions_worked_in_one_batch_each_move_to_the_bot(client, ctx, fake) -> None:
    """Several customers' first messages in one pull: their conversation.created events are worked in one
    consumer batch, whose mirrors run together at its end (their identities locked in one statement)."""
    from channels.wecom.session import current_state

    inbox = await kf_inbox(ctx, fake)
    customers = [f"wmBatchCustomer{n:015d}" for n in range(3)]
    fake.add(*[text_item(f"b{n}", c, "你好") for n, c in enumerate(customers)])
    await notify(client, ctx, fake, inbox.id)
    await deliver_all(ctx)
    moved = sorted((t["external_userid"], t["service_state"]) for t in fake.trans_requests)
    assert moved == [(c, 1) for c in customers]  # each once, none forgotten
    for c in customers:
        assert fake.state(c) == 1
        assert current_state(dict((await identity(ctx, inbox.id, c)).attributes or {}))[0] == 1
