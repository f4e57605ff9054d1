"""English questions: contractions, stems, stop words and multi-word synonyms, and mixed Chinese-English."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot_flows.english import EnglishSynonyms, expand_contractions, stem
from bot_flows.matcher import FaqEntry, FaqMatcher, MatcherConfig
from bot_flows.normalize import normalize

CONFIG = Path(__file__).resolve().parents[2] / "config" / "faq"


@pytest.mark.parametrize(("said", "spelt"), [
    ("i can't log in", "i can not log in"),
    ("it won't arrive", "it will not arrive"),
    ("where's my parcel", "where is my parcel"),
    ("i haven't got it and i'm angry", "i have not got it and i am angry"),
    ("we'd like it, they've paid, you'll see", "we would like it, they have paid, you will see"),
    ("the order's address", "the order address"),
    ("it doesnt work, i dont know", "it does not work, i do not know"),
    ("it doesn\u2019t fit", "it does not fit"),  # typographic apostrophe, as phones type it
])
def test_contractions_are_spelt_out(said: str, spelt: str) -> None:
    assert expand_contractions(said) == spelt


def test_inflections_share_a_stem() -> None:
    assert stem("refunds") == stem("refunded") == stem("refunding") == stem("refund")
    assert stem("shipping") == stem("shipped") == stem("ship")
    assert stem("退款") == "退款" and stem("iphone15") == "iphone15"


def test_multi_word_synonyms_meet_on_one_term() -> None:
    syn = EnglishSynonyms({"money-back": "refund", "reimbursement": "refund"})
    assert [t for t, _w in syn.apply(["get", "my", "money", "back"])] == ["get", "my", "money", "back", "refund"]
    assert syn.apply(["reimbursements"]) == [("refund", "reimbursements")]
    assert syn.apply(["refunded"]) == [("refund", "refunded")]  # the canonical word's own inflections map too


def _matcher(entries: list[FaqEntry]) -> FaqMatcher:
    m = FaqMatcher(MatcherConfig.from_dir(str(CONFIG)))
    m.build(entries)
    return m


def test_english_question_finds_its_entry_through_stems_stop_words_and_synonyms() -> None:
    m = _matcher([
        FaqEntry("refund", "How long do refunds take?", ("When will my money be returned",), "3-5 days", language="en"),
        FaqEntry("cancel", "How do I cancel an order?", ("I want to cancel what I bought",), "My Orders", language="en"),
        FaqEntry("pw", "I forgot my password", ("How do I reset my password",), "Reset link", language="en"),
    ])
    for question, expected in (("I still haven't got my money back", "refund"),
                               ("Can't remember the password", "pw"),
                               ("cancelling a purchase", "cancel")):
        assert m.match(question).best.entry_id == expected, question  # type: ignore[union-attr]
    # stop words alone carry no intent
    assert m.match("what is the").decision == "reject"
    assert "the" not in m.analyzer.analyze(normalize("how do I reset the password")).words


def test_mixed_chinese_english_question_meets_chinese_entries() -> None:
    m = _matcher([
        FaqEntry("cancel", "怎么取消订单？", ("订单可以撤销吗",), "在我的订单里取消"),
        FaqEntry("invoice", "怎么开发票？", ("可以开票吗",), "在订单详情申请"),
    ])
    assert m.match("怎么cancel我的order").best.entry_id == "cancel"  # type: ignore[union-attr]
    assert m.match("可以开invoice吗").best.entry_id == "invoice"  # type: ignore[union-attr]
