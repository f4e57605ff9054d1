"""The default flows end to end at the engine level: inputs in, actions and state out.

Every step round-trips the state through JSON, as the application persists it between messages.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot_flows.actions import (
    AddTag,
    BotInput,
    Handoff,
    OpenTicket,
    RecordUnanswered,
    ScheduleTimeout,
    SendReply,
    SetAttribute,
)
from bot_flows.conditions import BusinessHours
from bot_flows.engine import EngineConfig, FaqCandidate, FaqMatch, FlowEngine
from bot_flows.flows import load_flows
from scrm.domain import Choice

FLOWS_DIR = Path(__file__).resolve().parents[2] / "config" / "flows"
# Tuesday 2025-03-04 10:00 in Shanghai (02:00 UTC): agents are working.
TUESDAY_MORNING = datetime(2025, 3, 4, 2, 0, tzinfo=UTC)
HOURS = BusinessHours.from_config({"weekly": {d: "09:00-18:00" for d in ("mon", "tue", "wed", "thu", "fri")}})

SHIPPING = FaqCandidate("ship", "运费怎么算？", "全场满99元包邮，不满99元收取8元运费。")
RETURN = FaqCandidate("return", "怎么退货？", "签收7天内可在订单页申请退货。")
REFUND = FaqCandidate("refund", "退款多久到账？", "退款1-3个工作日原路退回。")
EXCHANGE = FaqCandidate("exchange", "可以换货吗？", "支持15天内换货。", (Choice("换货入口", "https://shop.example/exchange"),))


class StubFaq:
    """A knowledge base of four entries with fixed decisions, recording what it was asked."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def match(self, text: str) -> FaqMatch:
        self.asked.append(text)
        if "运费" in text or "shipping" in text.lower():
            return FaqMatch("answer", (SHIPPING, RETURN))
        if "退" in text or "换" in text:
            return FaqMatch("clarify", (RETURN, REFUND, EXCHANGE, SHIPPING))
        return FaqMatch("reject", ())


class Convo:
    """One conversation: feeds inputs and keeps the JSON-persisted state like the application."""

    def __init__(self, engine: FlowEngine | None = None, *, contact: dict[str, Any] | None = None,
                 hours_open: bool = True, now: datetime = TUESDAY_MORNING, buttons: bool = True) -> None:
        self.faq = StubFaq()
        self.engine = engine or FlowEngine(load_flows(FLOWS_DIR), self.faq, EngineConfig(business_hours=HOURS))
        self.contact = contact or {"name": "王女士", "attributes": {}, "tags": []}
        self.state: dict[str, Any] | None = None
        self.first = True
        self.hours_open = hours_open
        self.now = now
        self.buttons = buttons

    def feed(self, kind: str, text: str | None = None, choice: str | None = None,
             data: dict[str, Any] | None = None) -> list[Any]:
        inp = BotInput(kind=kind, now=self.now, text=text, choice=choice,  # type: ignore[arg-type]
                       is_first_message=self.first and kind == "message",
                       channel_has_buttons=self.buttons, contact=self.contact,
                       business_hours_open=self.hours_open, data=data or {})
        if kind in ("message", "postback"):
            self.first = False
        before = json.dumps(self.state)
        result = self.engine.handle(json.loads(before), inp)
        assert json.dumps(self.state) == before, "handle() must not mutate the given state"
        self.state = json.loads(json.dumps(result.state, ensure_ascii=False))
        return result.actions

    def say(self, text: str) -> list[Any]:
        return self.feed("message", text)

    def click(self, payload: str, label: str | None = None) -> list[Any]:
        return self.feed("postback", label, payload)

    @property
    def at(self) -> str:
        assert self.state is not None
        return str(self.state["at"])


def replies(actions: list[Any]) -> list[str]:
    return [a.text for a in actions if isinstance(a, SendReply)]


# --- greeting + FAQ ------------------------------------------------------------------------------


def test_a_bare_greeting_gets_a_greeting_and_no_faq_lookup() -> None:
    c = Convo()
    actions = c.say("你好")
    assert len(actions) == 1 and "智能客服" in replies(actions)[0]
    assert c.faq.asked == [] and c.at == "faq:answering"
    assert "virtual assistant" in replies(Convo().say("Hello!"))[0]


def test_a_first_question_is_greeted_then_answered() -> None:
    c = Convo()
    texts = replies(c.say("请问运费怎么算"))
    assert len(texts) == 2 and "智能客服" in texts[0]
    assert texts[1] == SHIPPING.answer
    assert replies(c.say("运费呢")) == [SHIPPING.answer], "greeting only once"


def test_close_candidates_are_offered_as_top_three_choices_and_a_number_picks_one() -> None:
    c = Convo()
    c.say("你好")
    (ask,) = c.say("我想退东西")
    assert ask.text == "您是想问："
    assert ask.choices == (Choice("怎么退货？", "faq:return"), Choice("退款多久到账？", "faq:refund"),
                           Choice("可以换货吗？", "faq:exchange"), Choice("都不是", "faq:none"))
    (answer,) = c.say("２")  # full-width digit from a Chinese keyboard
    assert answer == SendReply(REFUND.answer)


def test_a_clicked_choice_answers_with_the_entry_buttons() -> None:
    c = Convo()
    c.say("你好")
    c.say("换货")
    (answer,) = c.click("faq:exchange", "可以换货吗？")
    assert answer == SendReply(EXCHANGE.answer, EXCHANGE.buttons)


def test_none_of_these_records_the_question_and_offers_human_or_ticket() -> None:
    c = Convo()
    c.say("你好")
    c.say("退的那个怎么弄")
    actions = c.say("都不是")  # the label typed instead of clicked
    assert RecordUnanswered("退的那个怎么弄") in actions
    (offer,) = [a for a in actions if isinstance(a, SendReply)]
    assert "暂时回答不了" in offer.text
    assert [ch.payload for ch in offer.choices] == ["handoff", "open_ticket"]


def test_unknown_question_is_admitted_recorded_and_a_number_opens_the_offer() -> None:
    c = Convo(buttons=False)
    c.say("你好")
    actions = c.say("你们老板叫什么名字")
    assert actions[0] == RecordUnanswered("你们老板叫什么名字")
    assert "暂时回答不了" in replies(actions)[0]
    actions = c.say("1")  # "1. 转人工" on a channel without buttons
    assert [type(a) for a in actions] == [Handoff]
    assert actions[0].reason == "customer_request"


def test_two_failed_questions_in_a_row_hand_off_but_an_answer_resets_the_count() -> None:
    c = Convo()
    c.say("你好")
    c.say("火星上能送货吗")
    assert replies(c.say("运费多少")) == [SHIPPING.answer]
    assert not any(isinstance(a, Handoff) for a in c.say("月球呢"))
    actions = c.say("那木星呢")
    assert RecordUnanswered("那木星呢") in actions
    handoffs = [a for a in actions if isinstance(a, Handoff)]
    assert len(handoffs) == 1 and handoffs[0].reason == "bot_unanswered"
    assert "转接人工客服" in handoffs[0].message
    assert c.at == "faq:answering" and c.state and c.state["faq_failures"] == 0


def test_english_question_gets_english_texts() -> None:
    c = Convo()
    c.say("hi")
    actions = c.say("can you ship to Mars?")
    assert "Sorry, I don't know" in replies(actions)[0]
    assert [ch.label for ch in actions[-1].choices] == ["Talk to an agent", "Open a ticket"]
    # A bare number has no script: the conversation's language stays English.
    (handoff,) = c.say("1")
    assert handoff.message.startswith("Connecting you to an agent")


def test_contact_language_is_used_when_the_message_has_no_script() -> None:
    c = Convo(contact={"name": "Ann", "language": "en-GB", "attributes": {}, "tags": []})
    assert replies(c.click("open_ticket"))[0].startswith("Sure. Please describe")


# --- talk to a human -----------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["人工", "转人工", "我要找客服", "human please", "Agent"])
def test_handoff_keywords_move_the_conversation_to_the_queue(text: str) -> None:
    c = Convo()
    actions = c.say(text)
    assert [type(a) for a in actions] == [Handoff]
    assert actions[0].reason == "customer_request"
    assert c.at == "faq:answering"


def test_outside_hours_the_handoff_says_when_agents_are_back_and_offers_a_ticket() -> None:
    friday_night = datetime(2025, 3, 7, 12, 30, tzinfo=UTC)  # Fri 20:30 Shanghai
    c = Convo(hours_open=False, now=friday_night)
    (offer,) = c.say("转人工")
    assert "将于3月10日（周一）09:00回来" in offer.text
    assert [ch.payload for ch in offer.choices] == ["handoff_wait", "open_ticket"]
    assert "请描述您遇到的问题" in replies(c.say("2"))[0]
    assert c.at == "ticket:describe"


def test_outside_hours_the_customer_can_still_wait_for_an_agent() -> None:
    saturday = datetime(2025, 3, 8, 3, 0, tzinfo=UTC)  # Sat 11:00 Shanghai
    c = Convo(hours_open=False, now=saturday, contact={"language": "en", "attributes": {}})
    (offer,) = c.say("agent")
    assert "back Mon 10 Mar at 09:00 (UTC+8)" in offer.text
    (handoff,) = c.say("Wait for an agent")
    assert handoff.reason == "after_hours" and "(Mon 10 Mar at 09:00 (UTC+8))" in handoff.message


# --- open a ticket -------------------------------------------------------------------------------


def test_ticket_flow_collects_description_and_phone_then_confirms_the_number() -> None:
    c = Convo()
    actions = c.say("我要提交工单")
    assert replies(actions) == ["好的，请描述您遇到的问题（如有订单号请一并提供）。回复“取消”可退出。"]
    assert ScheduleTimeout(900.0, actions[-1].token) == actions[-1]
    (ask_contact, _) = c.say("订单 2025030412345 的蓝牙耳机收到第二天左耳就没有声音了，重新配对也没用，客服态度也不好")
    assert ask_contact.text == "请留下您的手机号或邮箱，方便我们联系您。"
    actions = c.say("phone: 138 1234")
    assert replies(actions) == ["格式好像不对，请输入 11 位手机号（如 13812345678）或邮箱地址。"]
    actions = c.say("+86 138-1234-5678")
    assert actions[0] == SetAttribute("phone", "13812345678")
    ticket = actions[1]
    assert isinstance(ticket, OpenTicket)
    assert ticket.description == "订单 2025030412345 的蓝牙耳机收到第二天左耳就没有声音了，重新配对也没用，客服态度也不好"
    assert ticket.subject.endswith("…") and len(ticket.subject) == 40
    assert ticket.fields == {"contact": "13812345678", "source": "bot", "kind": "request"} and ticket.priority == "normal"
    assert replies(actions) == ["工单已创建，编号 {ticket_number}。我们会尽快通过 13812345678 联系您。"]
    assert c.at == "faq:answering" and c.state and c.state["vars"] == {}


@pytest.mark.parametrize(("given", "attribute", "value"), [
    ("Ann.Lee@Example.COM", "email", "Ann.Lee@example.com"),
    ("+44 7700 900123", "phone", "+447700900123"),
    ("１３９００１３９０００", "phone", "13900139000"),
])
def test_ticket_contact_accepts_email_and_international_phone(given: str, attribute: str, value: str) -> None:
    c = Convo()
    c.click("open_ticket")
    c.say("broken screen")
    actions = c.say(given)
    assert actions[0] == SetAttribute(attribute, value)
    assert isinstance(actions[1], OpenTicket) and actions[1].fields["contact"] == value


def test_ticket_contact_retry_limit_still_opens_the_ticket_without_contact() -> None:
    c = Convo()
    c.click("open_ticket")
    c.say("收到的杯子碎了")
    assert len(replies(c.say("不告诉你"))) == 1
    assert len(replies(c.say("12345"))) == 1
    actions = c.say("还是不告诉你")
    assert not any(isinstance(a, SetAttribute) for a in actions)
    (ticket,) = [a for a in actions if isinstance(a, OpenTicket)]
    assert ticket.fields["contact"] == "" and ticket.description == "收到的杯子碎了"
    assert "没能识别您的联系方式" in replies(actions)[0] and c.at == "faq:answering"


def test_ticket_can_be_cancelled_and_handoff_words_in_a_description_do_not_interrupt() -> None:
    c = Convo()
    c.say("投诉")
    assert replies(c.say("取消")) == ["好的，已取消。还有什么可以帮您？"]
    assert c.at == "faq:answering"
    c.say("投诉")
    actions = c.say("人工客服一直不回复")
    assert not any(isinstance(a, Handoff) for a in actions) and c.at == "ticket:contact"


def test_ticket_timeout_cancels_after_silence_but_a_stale_timer_is_ignored() -> None:
    c = Convo()
    first_timer = c.say("ticket")[-1]
    assert isinstance(first_timer, ScheduleTimeout)
    second_timer = c.say("The parcel never arrived")[-1]
    assert isinstance(second_timer, ScheduleTimeout) and second_timer.token != first_timer.token
    assert c.feed("timeout", data={"token": first_timer.token}) == []
    assert c.at == "ticket:contact"
    c.now += timedelta(seconds=899)
    assert c.feed("timeout") == [], "a timer without token is ignored before it is due"
    c.now += timedelta(seconds=1)
    assert replies(c.feed("timeout", data={"token": second_timer.token})) == [
        "I haven't heard back from you, so I've cancelled this ticket. Write any time if you still need help."]
    assert c.at == "faq:answering"


def test_invalid_contact_answer_rearms_the_timeout() -> None:
    c = Convo()
    c.say("工单")
    c.say("坏了")
    actions = c.say("不知道")
    assert isinstance(actions[-1], ScheduleTimeout)


# --- restart mid-flow ----------------------------------------------------------------------------


def test_restart_mid_flow_with_a_fresh_engine_between_every_step() -> None:
    faq = StubFaq()
    steps = ["你好", "我要投诉", "快递把箱子摔坏了", "abc", "a@b.cn"]
    state: dict[str, Any] | None = None
    actions: list[Any] = []
    for i, text in enumerate(steps):
        engine = FlowEngine(load_flows(FLOWS_DIR), faq, EngineConfig(business_hours=HOURS))  # "process restart"
        inp = BotInput(kind="message", now=TUESDAY_MORNING, text=text, is_first_message=i == 0)
        result = engine.handle(state, inp)
        state = json.loads(json.dumps(result.state))
        actions = result.actions
    assert SetAttribute("email", "a@b.cn") in actions
    (ticket,) = [a for a in actions if isinstance(a, OpenTicket)]
    assert ticket.description == "快递把箱子摔坏了"


def test_a_state_removed_from_the_flows_falls_back_to_the_resting_state() -> None:
    c = Convo()
    c.say("工单")
    assert c.state is not None
    c.state["at"] = "ticket:gone_in_new_version"
    assert replies(c.say("运费")) == [SHIPPING.answer]


def test_without_a_knowledge_base_the_bot_admits_it_and_offers_help() -> None:
    engine = FlowEngine(load_flows(FLOWS_DIR), None, EngineConfig(business_hours=HOURS))
    c = Convo(engine)
    actions = c.say("运费多少")
    assert "暂时回答不了" in replies(actions)[-1]
    assert AddTag not in [type(a) for a in actions]


def test_default_flows_with_the_real_matcher() -> None:
    matcher_mod = pytest.importorskip("bot_flows.matcher")
    from bot_flows.engine import MatcherLookup

    matcher = matcher_mod.FaqMatcher()
    matcher.build([
        matcher_mod.FaqEntry("ship", "运费怎么算", ("邮费多少", "包邮吗"), "满99元包邮。"),
        matcher_mod.FaqEntry("refund", "退款多久到账", ("钱什么时候退回来",), "1-3个工作日原路退回。"),
    ])
    engine = FlowEngine(load_flows(FLOWS_DIR), MatcherLookup(matcher), EngineConfig(business_hours=HOURS))
    c = Convo(engine)
    assert replies(c.say("邮费多少"))[-1] == "满99元包邮。"  # restates a paraphrase: answered
    # Likely but not sure enough: "did you mean" offers the one plausible entry (not the far-fetched
    # refund entry), and the customer's "1" picks it.
    ask = c.say("运费多少钱")[-1]
    assert ask.text == "您是想问：" and [ch.label for ch in ask.choices] == ["运费怎么算", "都不是"]
    assert ask.faq["outcome"] == "clarify" and ask.faq["confidence"] >= 0.5
    assert replies(c.say("1")) == ["满99元包邮。"]
    actions = c.say("你们老板是谁")
    assert RecordUnanswered("你们老板是谁") in actions
    refusal = replies(actions)[-1]
    assert "暂时回答不了" in refusal  # and a human or a ticket is offered
    assert [ch.payload for ch in actions[-1].choices] == ["handoff", "open_ticket"]
