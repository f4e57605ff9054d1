"""The FAQ's decisions are remembered per question text, and forgotten as soon as the knowledge base changes."""

from __future__ import annotations

from dataclasses import replace

from bot_flows.faq_lookup import MatcherLookup
from bot_flows.matcher import FaqEntry, FaqMatcher

SHIP = FaqEntry("ship", "运费怎么算", ("邮费多少", "包邮吗"), "满99元包邮。")
REFUND = FaqEntry("refund", "退款多久到账", ("钱什么时候退回来",), "1-3个工作日原路退回。")


def _answer(matcher: FaqMatcher, question: str) -> str | None:
    found = MatcherLookup(matcher).match(question)  # a new lookup per bot round, as the bot makes them
    return found.candidates[0].answer if found.decision == "answer" else None


def test_a_repeated_question_gets_the_same_answer() -> None:
    matcher = FaqMatcher()
    matcher.build([SHIP, REFUND])
    assert _answer(matcher, "运费怎么算") == "满99元包邮。"
    assert _answer(matcher, "运费怎么算") == "满99元包邮。"
    assert _answer(matcher, "退款多久到账") == "1-3个工作日原路退回。"


def test_an_edited_entry_answers_the_same_question_anew() -> None:
    matcher = FaqMatcher()
    matcher.build([SHIP, REFUND])
    assert _answer(matcher, "运费怎么算") == "满99元包邮。"
    matcher.update(replace(SHIP, answer="全场包邮。"))
    assert _answer(matcher, "运费怎么算") == "全场包邮。"
    matcher.remove("ship")
    assert _answer(matcher, "运费怎么算") is None
    matcher.add(SHIP)
    assert _answer(matcher, "运费怎么算") == "满99元包邮。"
    matcher.build([REFUND])
    assert _answer(matcher, "运费怎么算") is None
