"""The end of a 微信客服 session and what may still reach the customer: after 已结束 (4) WeCom refuses
kf/send_msg (95018) until the customer writes again, so the satisfaction survey rides in the closing
message sent with the session's closing code (a menu), or is not asked and the thread says why."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select

from scrm.db.models_desk import CsatSurvey
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

CUSTOMER = "wmClosingCustomer0000000000001"


@pytest.fixture
async def fake() -> AsyncIterator[FakeWeCom]:
    async with serving() as fake:
        yield fake


async def surveys(ctx: Any) -> list[CsatSurvey]:
    async with ctx.db.session() as s:
        return list((await s.scalars(select(CsatSurvey).order_by(CsatSurvey.id))).all())


async def with_mei(client: Any, ctx: Any, fake: FakeWeCom, **settings: Any) -> tuple[Any, int, dict[str, str]]:
    """A customer's conversation taken over by Mei (mapped to a servicer: the session is in 人工)."""
    await make_agent(ctx, "mei", "agent")
    inbox = await kf_inbox(ctx, fake, servicers={"mei": "meimei"}, **settings)
    fake.add(text_item("c1", CUSTOMER, "你好"))
    await notify(client, ctx, fake, inbox.id)
    cid = (await inbound(ctx, inbox.id))[-1].conversation_id
    await deliver_all(ctx)
    headers = await login(client, "mei", "password-123")
    resp = await client.post(f"/api/v1/conversations/{cid}/handler", json={"handler": "human"}, headers=headers)
    assert resp.status == 200
    await deliver_all(ctx)
    assert fake.state(CUSTOMER) == 3
    return inbox, cid, headers


def nothing_bound_to_fail(fake: FakeWeCom, before: int) -> None:
    """No kf/send_msg was tried since `before` attempts: after the end WeCom would answer 95018."""
    assert fake.send_attempts[before:] == []


async def test_resolve_sends_the_survey_with_the_closing_code_and_the_click_rates(client, ctx, fake) -> None:
    inbox, cid, headers = await with_mei(client, ctx, fake, closing_message="感谢您的咨询，再见")
    tried = len(fake.send_attempts)
    resp = await client.post(f"/api/v1/conversations/{cid}/status", json={"status": "resolved"}, headers=headers)
    assert resp.status == 200
    await deliver_all(ctx)
    nothing_bound_to_fail(fake, tried)
    assert fake.state(CUSTOMER) == 4
    [closing] = fake.event_sends
    assert closing["_kind"] == "closing" and closing["msgtype"] == "msgmenu"
    menu = closing["msgmenu"]
    assert menu["head_content"].startswith("感谢您的咨询，再见\n\n请为本次服务打分")
    [survey] = await surveys(ctx)
    assert [i["click"]["id"] for i in menu["list"]] == [f"csat:{survey.id}:{n}" for n in (5, 4, 3, 2, 1)]
    assert all(d.status == "sent" for d in await deliveries(ctx))
    shown = [m for m in await messages(ctx, conversation_id=cid) if m.direction == "out" and not m.private]
    assert shown[-1].text.startswith("感谢您的咨询") and shown[-1].delivery_status == "sent"  # in the thread

    # After the end the reply box says why instead of queuing a message WeCom would refuse.
    refused = await agent_reply(client, headers, cid, "还有什么可以帮您？", expect=409)
    assert "ended" in refused["error"]["message"] and "95018" in refused["error"]["message"]

    # The customer taps "4": a new WeCom session (0) with the rating; the thanks may go by kf/send_msg.
    fake.add(text_item("c2", CUSTOMER, "4 🙂 满意 / Good", menu_id=f"csat:{survey.id}:4"))
    await notify(client, ctx, fake, inbox.id)
    await deliver_all(ctx)
    [survey] = await surveys(ctx)
    assert (survey.status, survey.rating) == ("answered", 4)
    assert [d.status for d in await deliveries(ctx) if d.status != "sent"] == []
    assert len(fake.event_sends) == 1  # the rating closed the conversation again: no second closing message


async def test_session_ended_in_wecom_carries_the_survey_in_its_closing_message(client, ctx, fake) -> None:
    inbox, cid, _ = await with_mei(client, ctx, fake, closing_message="再见")
    tried = len(fake.send_attempts)
    fake.states[(inbox.settings["open_kfid"], CUSTOMER)] = (4, None)  # the servicer ended it in WeCom
    code = fake.issue_code("closing")
    fake.add(event_item("ev-end", {"event_type": "session_status_change", "open_kfid": inbox.settings["open_kfid"],
                                   "external_userid": CUSTOMER, "change_type": 3, "old_servicer_userid": "meimei",
                                   "msg_code": code}))
    await notify(client, ctx, fake, inbox.id)
    await deliver_all(ctx)
    nothing_bound_to_fail(fake, tried)
    [closing] = fake.event_sends
    [survey] = await surveys(ctx)
    assert closing["code"] == code and closing["msgmenu"]["head_content"].startswith("再见\n\n")
    assert closing["msgmenu"]["list"][0]["click"]["id"] == f"csat:{survey.id}:5"
    assert all(d.status == "sent" for d in await deliveries(ctx))


async def test_session_ended_in_wecom_without_a_code_says_why_there_is_no_survey(client, ctx, fake) -> None:
    inbox, cid, headers = await with_mei(client, ctx, fake, closing_message="再见")
    tried = len(fake.send_attempts)
    fake.states[(inbox.settings["open_kfid"], CUSTOMER)] = (4, None)
    fake.add(event_item("ev-end", {"event_type": "session_status_change", "open_kfid": inbox.settings["open_kfid"],
                                   "external_userid": CUSTOMER, "change_type": 3, "old_servicer_userid": "meimei"}))
    await notify(client, ctx, fake, inbox.id)
    await deliver_all(ctx)
    nothing_bound_to_fail(fake, tried)
    assert fake.event_sends == [] and await surveys(ctx) == []
    notes = [m.text for m in await messages(ctx, conversation_id=cid, private=True)]
    assert any("survey not sent" in n and "95018" in n for n in notes)
    refused = await agent_reply(client, headers, cid, "您好", expect=409)
    assert "ended" in refused["error"]["message"]
    # The customer writes again: WeCom starts a new session (0) and replies may go out again.
    fake.add(text_item("c2", CUSTOMER, "在吗"))
    await notify(client, ctx, fake, inbox.id)
    ident = await identity(ctx, inbox.id, CUSTOMER)
    assert ident.last_inbound_at is not None


async def test_closing_message_that_finds_the_session_ended_fails_with_the_reason(client, ctx, fake) -> None:
    inbox, cid, headers = await with_mei(client, ctx, fake, closing_message="再见")
    # WeCom ended the session on its own and no event said so: the move to 4 returns no closing code.
    fake.states[(inbox.settings["open_kfid"], CUSTOMER)] = (4, None)
    resp = await client.post(f"/api/v1/conversations/{cid}/status", json={"status": "resolved"}, headers=headers)
    assert resp.status == 200
    await deliver_all(ctx)
    await ctx.bus.drain(5)  # the listener that notes the failure
    assert fake.event_sends == [] and await surveys(ctx) == []  # the survey that never left is no survey
    [state] = [d for d in await deliveries(ctx) if d.kind == "wecom_state" and d.status == "failed"]
    assert "95018" in state.last_error
    out = [m for m in await messages(ctx, conversation_id=cid) if m.direction == "out"]
    closing = [m for m in out if not m.private][-1]
    assert closing.delivery_status == "failed" and "already" in closing.delivery_error
    assert any("did not go out" in (m.text or "") for m in out if m.private)
    ident = await identity(ctx, inbox.id, CUSTOMER)
    assert ident.attributes["wecom_kf_state"] == 4  # WeCom is there: not put back to 人工


async def test_a_message_sent_with_an_expired_event_code_cannot_be_retried(client, ctx, fake, admin_headers) -> None:
    import time

    inbox = await kf_inbox(ctx, fake, closing_message="再见")
    fake.add(text_item("c1", CUSTOMER, "你好"))
    await notify(client, ctx, fake, inbox.id)
    await deliver_all(ctx)
    fake.add(event_item("ev-close", {"event_type": "session_status_change", "open_kfid": inbox.settings["open_kfid"],
                                     "external_userid": CUSTOMER, "change_type": 3,
                                     "msg_code": fake.issue_code("closing")}))
    await notify(client, ctx, fake, inbox.id)
    adapter = await ctx.adapters.get(inbox.id)
    adapter.clock = lambda: time.time() + 30  # the worker gets to it after the code's 20 s
    await deliver_all(ctx)
    await ctx.bus.drain(5)
    [failed] = [d for d in await deliveries(ctx) if d.kind == "wecom_code"]
    assert failed.status == "failed" and await surveys(ctx) == []  # the survey it carried was never asked
    resp = await client.post(f"/api/v1/messages/{failed.message_id}/retry", headers=admin_headers)
    body = await resp.json()
    assert resp.status == 409 and body["error"]["code"] == "code_single_use", body


async def test_msg_send_fail_for_the_closing_message_drops_the_survey_it_carried(client, ctx, fake) -> None:
    inbox, cid, headers = await with_mei(client, ctx, fake, closing_message="感谢您的咨询，再见")
    resp = await client.post(f"/api/v1/conversations/{cid}/status", json={"status": "resolved"}, headers=headers)
    assert resp.status == 200
    await deliver_all(ctx)
    [closing] = fake.event_sends
    [survey] = await surveys(ctx)
    assert closing["msgmenu"]["list"][0]["click"]["id"] == f"csat:{survey.id}:5"
    # WeCom accepted the closing message, then reports it never reached the customer (msg_send_fail).
    fake.add(event_item("fail-close", {"event_type": "msg_send_fail", "open_kfid": inbox.settings["open_kfid"],
                                       "external_userid": CUSTOMER, "fail_msgid": closing["msgid"], "fail_type": 10}))
    await notify(client, ctx, fake, inbox.id)
    await deliver_all(ctx)
    assert await surveys(ctx) == []  # a survey the customer never saw is not counted as asked
    shown = [m for m in await messages(ctx, conversation_id=cid) if m.direction == "out" and not m.private]
    assert shown[-1].text.startswith("感谢您的咨询") and shown[-1].delivery_status == "failed"
    assert "拒收" in shown[-1].delivery_error  # the thread says why
    ident = await identity(ctx, inbox.id, CUSTOMER)
    assert ident.attributes["wecom_kf_state"] == 4  # the move itself happened: not put back to 人工


async def test_msg_send_fail_for_a_closing_message_of_a_session_ended_in_wecom_drops_its_survey(client, ctx, fake) -> None:
    inbox, cid, _ = await with_mei(client, ctx, fake, closing_message="再见")
    fake.states[(inbox.settings["open_kfid"], CUSTOMER)] = (4, None)
    fake.add(event_item("ev-end", {"event_type": "session_status_change", "open_kfid": inbox.settings["open_kfid"],
                                   "external_userid": CUSTOMER, "change_type": 3, "old_servicer_userid": "meimei",
                                   "msg_code": fake.issue_code("closing")}))
    await notify(client, ctx, fake, inbox.id)
    await deliver_all(ctx)
    [closing] = fake.event_sends
    assert len(await surveys(ctx)) == 1
    fake.add(event_item("fail-end", {"event_type": "msg_send_fail", "open_kfid": inbox.settings["open_kfid"],
                                     "external_userid": CUSTOMER, "fail_msgid": closing["msgid"], "fail_type": 10}))
    await notify(client, ctx, fake, inbox.id)
    await deliver_all(ctx)
    assert await surveys(ctx) == []
    [failed] = [d for d in await deliveries(ctx) if d.kind == "wecom_code"]
    assert failed.status == "failed" and "拒收" in failed.last_error
