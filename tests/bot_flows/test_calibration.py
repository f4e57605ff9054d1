"""Calibrated confidence: the shipped models, the target-precision decisions, and a clear error for a bad file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot_flows import calibration
from bot_flows.matcher import FaqEntry, FaqMatcher, MatcherConfig

CONFIG = Path(__file__).resolve().parents[2] / "config" / "faq"


def test_every_configuration_is_calibrated_for_both_decisions() -> None:
    cal = calibration.load()
    for key in ("zh", "en", "zh+rerank", "en+rerank"):
        for target in ("top1", "top3"):
            assert cal.models[key][target].features, (key, target)
    assert cal.key("en", True) == "en+rerank" and cal.key("zh", False) == "zh"


def test_probability_rises_with_a_clearer_lead() -> None:
    model = calibration.load().model("zh", False, "top1")
    assert model is not None
    close = {"conf1": 0.8, "margin": 0.02, "bm25": 0.8, "bm25_margin": 0.02, "coverage": 1, "sent_cover": 0.8,
             "lcs": 0.8, "qterms": 1.6}
    clear = {**close, "margin": 0.5, "bm25_margin": 0.5}
    assert 0 < model.probability(close) < model.probability(clear) < 1


def test_decisions_follow_the_target_precisions() -> None:
    assert calibration.decide(0.95, 0.99, 3, 0.9, 0.5) == "answer"
    assert calibration.decide(0.85, 0.99, 3, 0.9, 0.5) == "clarify"
    assert calibration.decide(0.85, 0.99, 3, 0.8, 0.5) == "answer"
    assert calibration.decide(0.2, 0.4, 3, 0.9, 0.5) == "reject"
    assert calibration.decide(0.99, 0.99, 0, 0.9, 0.5) == "reject"


def test_a_stricter_target_answers_fewer_questions() -> None:
    entries = [FaqEntry("ship", "运费怎么算", ("邮费多少", "包邮吗"), "满99元包邮。"),
               FaqEntry("refund", "退款多久到账", ("钱什么时候退回来",), "1-3个工作日原路退回。")]
    loose = FaqMatcher(MatcherConfig.from_dir(str(CONFIG), answer_precision=0.5))
    strict = FaqMatcher(MatcherConfig.from_dir(str(CONFIG), answer_precision=0.99))
    for m in (loose, strict):
        m.build(entries)
    assert loose.match("运费多少钱").decision == "answer"
    result = strict.match("运费多少钱")
    assert result.decision == "clarify" and result.probability < 0.99 <= 1


def test_a_broken_calibration_file_is_named_in_the_error(tmp_path: Path) -> None:
    bad = tmp_path / "cal.json"
    bad.write_text(json.dumps({"configurations": {"zh": {"top1": {"features": ["conf1"], "mean": [0, 1],
                                                                   "scale": [1], "coef": [1], "intercept": 0}}}}))
    with pytest.raises(ValueError, match="cal.json"):
        calibration.load(bad)
    with pytest.raises(ValueError, match="cal.json"):
        FaqMatcher(MatcherConfig(calibration_path=str(bad)))
