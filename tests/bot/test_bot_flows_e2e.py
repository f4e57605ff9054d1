"""Each default flow end to end through the API channel: signed webhook in, bot reply in the outbox."""

from __future__ import annotations

from sqlalchemy import select

from scrm.db.models import Contact, FaqEntryRow, Ticket, UnansweredQuestion
from tests.bot.helpers_bot import (
    SATURDAY_MORNING,
    TUESDAY_MORNING,
    bot_replies,
    conversation,
    say,
    set_clock,
    system_notes,
)
from tests.conftest import make_inbox


async def _inbox(ctx, when=TUESDAY_MORNING):
    set_clock(ctx, when)
    return (await make_inbox(ctx)).id


async def test_greeting_then_faq_answer_in_chinese(client, ctx):
    inbox = await _inbox(ctx)
    cid = await say(client, ctx, inbox, "你好")
    [greeting] = await bot_replies(ctx, cid)
    assert greeting["text"].startswith("您好！我是智能客服") and greeting["automatic"] is True
    await say(client, ctx, inbox, "运费怎么收？")
    replies = await bot_replies(ctx, cid)
    assert "满 99 元包邮" in replies[-1]["text"] and len(replies) == 2


async def test_first_message_question_is_greeted_and_answered_in_english(client, ctx):
    inbox = await _inbox(ctx)
    cid = await say(client, ctx, inbox, "How do I return an item?", name="Alice")
    greeting, answer = await bot_replies(ctx, cid)
    assert greeting["text"].startswith("Hello! I'm the virtual assistant")
    assert "return" in answer["text"].lower() and not any("\u4e00" <= ch <= "\u9fff" for ch in answer["text"])


async def test_close_candidates_are_offered_as_choices_and_a_number_picks_one(client, ctx):
    inbox = await _inbox(ctx)
    cid = await say(client, ctx, inbox, "shipping")
    clarify = (await bot_replies(ctx, cid))[-1]
    assert clarify["text"] == "Did you mean:"
    labels = [c["label"] for c in clarify["choices"]]
    assert 2 <= len(labels) <= 4 and labels[-1] == "None of these"
    assert clarify["choices"][0]["payload"].startswith("faq:")
    first_key = clarify["choices"][0]["payload"].removeprefix("faq:")
    async with ctx.db.session() as s:
        expected = (await s.scalar(select(FaqEntryRow).where(FaqEntryRow.key == first_key))).answer
    await say(client, ctx, inbox, "1")
    answer = (await bot_replies(ctx, cid))[-1]
    assert answer["text"] == expected
    # The same question again, answered by a button click (a postback) this time.
    await say(client, ctx, inbox, "shipping")
    payload = (await bot_replies(ctx, cid))[-1]["choices"][0]["payload"]
    await say(client, ctx, inbox, labels[0], choice=payload)
    assert (await bot_replies(ctx, cid))[-1]["text"] == answer["text"]


async def test_unknown_questions_are_kept_and_two_failures_hand_off(client, ctx):
    inbox = await _inbox(ctx)
    cid = await say(client, ctx, inbox, "你们老板叫什么名字")
    reply = (await bot_replies(ctx, cid))[-1]
    assert "暂时回答不了" in reply["text"]
    assert [c["payload"] for c in reply["choices"]] == ["handoff", "open_ticket"]
    await say(client, ctx, inbox, "今天天气怎么样")
    assert (await conversation(ctx, cid)).handler == "queue"
    assert "正在为您转接人工客服" in (await bot_replies(ctx, cid))[-1]["text"]
    async with ctx.db.session() as s:
        kept = (await s.scalars(select(UnansweredQuestion.text).order_by(UnansweredQuestion.id))).all()
    assert list(kept) == ["你们老板叫什么名字", "今天天气怎么样"]


async def test_talk_to_a_human_queues_adds_a_note_and_silences_the_bot(client, ctx):
    inbox = await _inbox(ctx)
    cid = await say(client, ctx, inbox, "转人工")
    conv = await conversation(ctx, cid)
    assert conv.handler == "queue" and conv.waiting_since is not None
    notes = await system_notes(ctx, cid)
    assert any("已转人工" in n and "客户要求转人工" in n for n in notes)
    before = await bot_replies(ctx, cid)
    assert "正在为您转接人工客服" in before[-1]["text"]
    await say(client, ctx, inbox, "运费怎么收？")
    await say(client, ctx, inbox, "人呢？")
    assert await bot_replies(ctx, cid) == before


async def test_after_hours_handoff_says_when_agents_are_back_and_offers_a_ticket(client, ctx):
    inbox = await _inbox(ctx, SATURDAY_MORNING)
    cid = await say(client, ctx, inbox, "I want to talk to a human agent", name="Bob")
    reply = (await bot_replies(ctx, cid))[-1]
    assert "offline" in reply["text"] and "Mon" in reply["text"] and "09:00" in reply["text"]
    assert [c["payload"] for c in reply["choices"]] == ["handoff_wait", "open_ticket"]
    assert (await conversation(ctx, cid)).handler == "bot"
    await say(client, ctx, inbox, "Wait for an agent", choice="handoff_wait")
    assert (await conversation(ctx, cid)).handler == "queue"
    assert "as soon as they are back" in (await bot_replies(ctx, cid))[-1]["text"]


async def test_can_i_talk_to_a_human_hands_over_in_english(client, ctx):
    inbox = await _inbox(ctx)
    cid = await say(client, ctx, inbox, "hi", name="Carol")
    await say(client, ctx, inbox, "Can I talk to a real person, please?")
    assert (await conversation(ctx, cid)).handler == "queue"
    assert (await bot_replies(ctx, cid))[-1]["text"].startswith("Connecting you to an agent")


async def test_ticket_flow_creates_a_ticket_and_confirms_its_number(client, ctx):
    inbox = await _inbox(ctx)
    cid = await say(client, ctx, inbox, "我要投诉")  # a complaint: apologized for, then a ticket
    *_, sorry, ask = await bot_replies(ctx, cid)
    assert sorry["text"].startswith("非常抱歉") and "请描述您遇到的问题" in ask["text"]
    # While describing, "客服" is part of the description, not a request for a human.
    await say(client, ctx, inbox, "客服态度很差，订单号 20250301123")
    assert "手机号或邮箱" in (await bot_replies(ctx, cid))[-1]["text"]
    await say(client, ctx, inbox, "电话不给")
    assert "格式好像不对" in (await bot_replies(ctx, cid))[-1]["text"]
    await say(client, ctx, inbox, "13812345678")
    async with ctx.db.session() as s:
        [ticket] = (await s.scalars(select(Ticket))).all()
        contact = await s.get(Contact, ticket.contact_id)
    assert ticket.conversation_id == cid and ticket.description == "客服态度很差，订单号 20250301123"
    assert ticket.number >= 1000 and ticket.fields["source"] == "bot" and ticket.fields["kind"] == "complaint"
    confirmation = (await bot_replies(ctx, cid))[-1]["text"]
    assert f"#{ticket.number}" in confirmation and "{ticket_number}" not in confirmation
    assert contact.phone == "13812345678" and contact.attributes["phone"] == "13812345678"
    assert (await conversation(ctx, cid)).handler == "bot"


async def test_a_button_under_an_answer_opens_the_linked_entry(client, ctx):
    inbox = await _inbox(ctx)
    cid = await say(client, ctx, inbox, "下单后多久发货？")
    answer = (await bot_replies(ctx, cid))[-1]
    assert answer["choices"] == [{"label": "查看订单状态", "payload": "faq:order-status"}]
    await say(client, ctx, inbox, None, choice="faq:order-status")
    assert "我的订单" in (await bot_replies(ctx, cid))[-1]["text"]
    await say(client, ctx, inbox, "下单后多久发货？")
    await say(client, ctx, inbox, "1")  # the same button answered by number on a text-only channel
    assert "我的订单" in (await bot_replies(ctx, cid))[-1]["text"]
