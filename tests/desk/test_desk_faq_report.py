"""FAQ answer rate: the bot records which FAQ entry produced each reply, and reports count it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select

from scrm.context import AppContext
from scrm.db.models import Message, utcnow
from scrm.db.models_desk import FaqOutcome
from scrm.services.desk import reports
from tests.bot.helpers_bot import TUESDAY_MORNING, say, set_clock
from tests.conftest import make_inbox


async def _outcomes(ctx: AppContext) -> list[FaqOutcome]:
    async with ctx.db.session() as s:
        return list((await s.scalars(select(FaqOutcome).order_by(FaqOutcome.id))).all())


async def _bot_messages(ctx: AppContext, cid: int) -> list[Message]:
    async with ctx.db.session() as s:
        return list((await s.scalars(select(Message).where(Message.conversation_id == cid, Message.sender_kind == "bot")
                                     .order_by(Message.id))).all())


async def test_answers_clarify_picks_and_misses_are_recorded_and_reported(client: Any, ctx: AppContext,
                                                                          admin_headers: dict[str, str]) -> None:
    set_clock(ctx, TUESDAY_MORNING)
    inbox = (await make_inbox(ctx)).id
    # 1. a direct answer (after a bare greeting, which is no FAQ question)
    c1 = await say(client, ctx, inbox, "你好", sender="a")
    await say(client, ctx, inbox, "运费怎么收？", sender="a")
    *_, answer = await _bot_messages(ctx, c1)
    faq = answer.payload["faq"]
    assert faq["outcome"] == "answer" and faq["entry"] and 0 < faq["confidence"] <= 1
    assert "满 99 元包邮" in (answer.text or "")
    # 2. close candidates offered, the customer picks the first one by number
    c2 = await say(client, ctx, inbox, "shipping", sender="b")
    clarify = (await _bot_messages(ctx, c2))[-1]
    assert clarify.payload["faq"]["outcome"] == "clarify"
    first = clarify.payload["choices"][0]["payload"].removeprefix("faq:")
    assert clarify.payload["faq"]["entries"][0] == first
    await say(client, ctx, inbox, "1", sender="b")
    picked = (await _bot_messages(ctx, c2))[-1]
    assert picked.payload["faq"]["outcome"] == "picked" and picked.payload["faq"]["entry"] == first
    # 3. a question the FAQ does not know
    c3 = await say(client, ctx, inbox, "你们老板叫什么名字", sender="c")
    miss = (await _bot_messages(ctx, c3))[-1]
    assert miss.payload["faq"]["outcome"] == "reject" and "暂时回答不了" in (miss.text or "")

    rows = await _outcomes(ctx)
    assert [r.outcome for r in rows] == ["answer", "clarify", "picked", "reject"]
    assert rows[0].entry_key == faq["entry"] and rows[0].message_id == answer.id and rows[2].entry_key == first
    assert rows[3].entry_key is None and rows[3].message_id == miss.id and all(r.inbox_id == inbox for r in rows)

    # Three questions asked (the greeting and the "1" are not questions), two answered.
    start, end = utcnow() - timedelta(days=1), utcnow() + timedelta(days=1)
    async with ctx.db.session() as s:
        report = await reports.build(s, start, end, "inbox")
        top = await reports.faq_top(s, start, end)
        past = await reports.build(s, start - timedelta(days=30), start, "none")
    [row] = report["rows"]
    assert (row["faq_questions"], row["faq_answered"], row["faq_answered_directly"]) == (3, 2, 1)
    assert (row["faq_clarified"], row["faq_not_found"], row["faq_answer_rate"]) == (1, 1, round(2 / 3, 4))
    assert sorted(t["entry"] for t in top) == sorted({faq["entry"], first})
    assert all(t["question"] and t["count"] >= 1 for t in top)
    assert not any("faq_questions" in r for r in past["rows"])  # nothing outside the range

    resp = await client.get("/api/v1/desk/reports?group_by=channel", headers=admin_headers)
    body = await resp.json()
    assert resp.status == 200 and body["rows"][0]["faq_answer_rate"] == round(2 / 3, 4)
    assert {t["entry"] for t in body["faq_top"]} == {faq["entry"], first}
    csv = await (await client.get("/api/v1/desk/reports.csv", headers=admin_headers)).text()
    header, line = csv.lstrip("\ufeff").splitlines()[:2]
    values = dict(zip(header.split(","), line.split(","), strict=True))
    assert (values["faq_questions"], values["faq_answered"], values["faq_answer_rate"]) == ("3", "2", "0.6667")


async def test_none_of_these_is_not_an_answer(client: Any, ctx: AppContext) -> None:
    set_clock(ctx, TUESDAY_MORNING)
    inbox = (await make_inbox(ctx)).id
    cid = await say(client, ctx, inbox, "shipping")
    clarify = (await _bot_messages(ctx, cid))[-1]
    none = clarify.payload["choices"][-1]
    assert none["payload"] == "faq:none"
    await say(client, ctx, inbox, none["label"], choice=none["payload"])
    assert [r.outcome for r in await _outcomes(ctx)] == ["clarify", "none"]
    async with ctx.db.session() as s:
        [row] = (await reports.build(s, utcnow() - timedelta(days=1), utcnow() + timedelta(days=1)))["rows"]
    assert (row["faq_questions"], row["faq_answered"], row["faq_answer_rate"], row["faq_not_found"]) == (1, 0, 0.0, 1)
