"""Asking for a human, or complaining, in many wordings and both languages: recognized before the FAQ."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot_flows.actions import Handoff, OpenTicket
from bot_flows.conditions import MatchContext, matches, normalize_text
from bot_flows.flows import FlowValidationError, load_flows
from bot_flows.intents import compile_phrase, message_tokens, phrase_in
from tests.bot_flows.test_engine import FLOWS_DIR, Convo, replies

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = [json.loads(line) for line in (ROOT / "bench" / "data" / "handoff.jsonl").open(encoding="utf-8")]


def _routed(text: str) -> str | None:
    flows = load_flows(FLOWS_DIR)
    ctx = MatchContext(text=normalize_text(text), payload=None, is_first_message=False, business_hours_open=True,
                       attributes={})
    for flow, t in flows.triggers():
        if matches(t.when, ctx):
            return "complaint" if (t.goto or "").endswith(":complaint") else flow.name
    return None


@pytest.mark.parametrize("sample", SAMPLES, ids=[s["text"] for s in SAMPLES])
def test_shipped_flows_route_each_sample(sample: dict[str, str | None]) -> None:
    assert _routed(str(sample["text"])) == sample["intent"]


def test_phrase_gaps_stems_and_runs() -> None:
    talk = compile_phrase("talk human")
    assert phrase_in(message_tokens("Can I talk to a real human?"), talk)
    assert phrase_in(message_tokens("talking to humans please"), talk)
    assert not phrase_in(message_tokens("humans talk too much"), talk)  # order matters
    assert not phrase_in(message_tokens("talk about the weather, the sky, the sea and a human"), talk)  # too far
    assert phrase_in(message_tokens("帮我找一下客服"), compile_phrase("找 客服"))
    assert not phrase_in(message_tokens("转给人工"), compile_phrase("转人工"))  # written together: stands together
    assert phrase_in(message_tokens("轉人工"), compile_phrase("转人工"))  # traditional characters too


def test_can_i_talk_to_a_human_hands_over() -> None:
    c = Convo()
    c.first = False
    actions = c.say("Can I talk to a human?")
    [handoff] = [a for a in actions if isinstance(a, Handoff)]
    assert handoff.reason == "customer_request" and handoff.message.startswith("Connecting you to an agent")
    assert c.faq.asked == []  # recognized before the FAQ was consulted


def test_a_complaint_opens_a_ticket_marked_as_complaint() -> None:
    c = Convo()
    c.first = False
    first = replies(c.say("我要投诉你们的快递员"))
    assert first[0].startswith("非常抱歉") and "请描述您遇到的问题" in first[1]
    c.say("快递员态度很差，还把包裹扔在门口")
    actions = c.say("13812345678")
    [ticket] = [a for a in actions if isinstance(a, OpenTicket)]
    assert ticket.fields["kind"] == "complaint" and ticket.description.startswith("快递员态度很差")


def test_saying_no_human_is_needed_stays_with_the_faq() -> None:
    c = Convo()
    c.first = False
    actions = c.say("不用转人工了，运费怎么收")
    assert not any(isinstance(a, Handoff) for a in actions) and c.faq.asked


def test_a_phrase_without_words_is_a_flow_error(tmp_path: Path) -> None:
    for f in FLOWS_DIR.glob("*.yaml"):
        (tmp_path / f.name).write_text(f.read_text(encoding="utf-8"), encoding="utf-8")
    text = (tmp_path / "handoff.yaml").read_text(encoding="utf-8")
    (tmp_path / "handoff.yaml").write_text(text.replace("says: [投诉, 12315", 'says: ["？？", 12315'), encoding="utf-8")
    with pytest.raises(FlowValidationError, match="handoff.yaml:.*no words"):
        load_flows(tmp_path)
