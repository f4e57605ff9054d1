"""CSAT: asked on resolve (buttons or numbered text), answers recorded per agent, never to unreachable contacts."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update

from scrm.context import AppContext
from scrm.db.models import ContactIdentity, Message
from scrm.db.models_desk import CsatSurvey
from scrm.domain import InboundMessage
from scrm.services.conversations import actions as conv_svc
from scrm.services.conversations.ingest import ingest
from scrm.services.desk.csat import parse_answer
from scrm.services.uow import unit_of_work
from tests.conftest import make_agent, make_inbox
from tests.desk.conftest import conv, say, settle


async def _resolve_by_agent(ctx: AppContext, cid: int, agent: int) -> None:
    async with unit_of_work(ctx) as tx:
        await conv_svc.do_reply(tx, cid, agent, "已为您处理好了")
    async with unit_of_work(ctx) as tx:
        await conv_svc.do_set_status(tx, cid, agent, "resolved")
    await settle(ctx)


async def _surveys(ctx: AppContext) -> list[CsatSurvey]:
    async with ctx.db.session() as s:
        return list((await s.scalars(select(CsatSurvey).order_by(CsatSurvey.id))).all())


async def _last_out(ctx: AppContext, cid: int) -> Message:
    async with ctx.db.session() as s:
        msg = (await s.scalars(select(Message).where(Message.conversation_id == cid, Message.direction == "out",
                                                     Message.private.is_(False)).order_by(Message.id.desc()))).first()
        assert msg is not None
        return msg


async def test_api_channel_gets_buttons_and_a_click_records_the_rating(desk: AppContext) -> None:
    agent = await make_agent(desk, "amy", "agent")
    inbox = await make_inbox(desk)
    cid = await say(desk, inbox, "发票开错了")
    await _resolve_by_agent(desk, cid, agent)
    (survey,) = await _surveys(desk)
    assert survey.agent_id == agent and survey.status == "asked"
    ask = await _last_out(desk, cid)
    choices = ask.payload["choices"]
    assert [c["payload"] for c in choices] == [f"csat:{survey.id}:{n}" for n in (5, 4, 3, 2, 1)]
    await say(desk, inbox, "5 😄 非常满意 / Excellent", choice=f"csat:{survey.id}:5")
    (survey,) = await _surveys(desk)
    assert survey.status == "answered" and survey.rating == 5
    c = await conv(desk, cid)
    assert c.status == "resolved"  # the rating did not reopen the conversation
    assert "感谢" in ((await _last_out(desk, cid)).text or "")
    assert len(await _surveys(desk)) == 1  # closing it again did not ask again


async def test_a_message_right_after_the_rating_keeps_the_conversation_open(desk: AppContext) -> None:
    """The rating and a new question arrive together: the rating is recorded, and the question is not
    hidden in a conversation closed again."""
    agent = await make_agent(desk, "amy", "agent")
    inbox = await make_inbox(desk)
    cid = await say(desk, inbox, "发票开错了")
    await _resolve_by_agent(desk, cid, agent)
    (survey,) = await _surveys(desk)
    rating = InboundMessage(external_id="rate-1", sender_id="u1", text="5 😄 非常满意 / Excellent",
                            payload={"choice": f"csat:{survey.id}:5"})
    question = InboundMessage(external_id="ask-2", sender_id="u1", text="还有，发票什么时候能重开？")
    outcomes = await ingest(desk, inbox, [rating, question])  # stored before the desk reads the rating
    await settle(desk)
    assert {o.conversation_id for o in outcomes} == {cid}
    (survey,) = await _surveys(desk)
    assert survey.status == "answered" and survey.rating == 5
    c = await conv(desk, cid)
    assert c.status == "open" and c.waiting_since is not None


async def test_channel_without_buttons_gets_numbered_text(desk: AppContext) -> None:
    agent = await make_agent(desk, "amy", "agent")
    inbox = await make_inbox(desk, "memory", name="sim", settings={"buttons": False}, secrets={})
    cid = await say(desk, inbox, "快递丢了")
    await _resolve_by_agent(desk, cid, agent)
    ask = await _last_out(desk, cid)
    assert not ask.payload.get("choices")
    assert "1 😞" in (ask.text or "") and "5 😄" in (ask.text or "") and "1-5" in (ask.text or "")
    await say(desk, inbox, "４ 服务不错，就是慢了点")  # full-width digit from a Chinese keyboard
    (survey,) = await _surveys(desk)
    assert (survey.rating, survey.comment) == (4, "服务不错，就是慢了点")
    assert (await conv(desk, cid)).status == "resolved"


async def test_not_asked_when_the_contact_is_unreachable_or_disabled(desk: AppContext, client: Any,
                                                                      admin_headers: dict[str, str]) -> None:
    agent = await make_agent(desk, "amy", "agent")
    inbox = await make_inbox(desk)
    cid = await say(desk, inbox, "在吗")
    async with unit_of_work(desk) as tx:
        await conv_svc.do_reply(tx, cid, agent, "在的")
    async with desk.db.transaction() as s:
        await s.execute(update(ContactIdentity).values(reachable=False, unreachable_reason="blocked the bot"))
    async with unit_of_work(desk) as tx:
        await conv_svc.do_set_status(tx, cid, agent, "resolved")
    await settle(desk)
    assert await _surveys(desk) == []
    # Turned off by the admin: not asked either.
    resp = await client.put("/api/v1/desk/settings/csat", json={"enabled": False}, headers=admin_headers)
    assert resp.status == 200
    cid2 = await say(desk, inbox, "你好", sender="u2")
    await _resolve_by_agent(desk, cid2, agent)
    assert await _surveys(desk) == []
    resp = await client.put("/api/v1/desk/settings/csat", json={"enable": True}, headers=admin_headers)
    assert resp.status == 400 and "enable" in (await resp.json())["error"]["message"]


def test_answers_are_parsed_strictly() -> None:
    assert parse_answer("5", {}) == (5, None, None)
    assert parse_answer("3分 一般般", {}) == (3, "一般般", None)
    assert parse_answer("2, too slow", {}) == (2, "too slow", None)
    assert parse_answer("", {"choice": "csat:7:1"}) == (1, None, 7)
    for text in ("6", "10", "我的订单号 12345", "1234", "0"):
        assert parse_answer(text, {}) is None, text
