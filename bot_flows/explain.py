"""Why the bot did what it did with a question ("try a question" on the knowledge-base page): which flow
trigger fires before the FAQ, which of the customer's words matched each candidate, the calibrated
probabilities against their targets, and the feature that weighed most in the decision."""

from __future__ import annotations

from typing import Any

from bot_flows.conditions import MatchContext, matches, normalize_text
from bot_flows.flow_model import FlowSet
from bot_flows.intents import says
from bot_flows.matcher import FaqMatcher, MatchResult
from bot_flows.normalize import normalize

FEATURE_LABELS = {
    "conf1": "ranking confidence of the best entry",
    "margin": "lead over the second entry",
    "conf3": "confidence of the third entry",
    "gap3": "lead of the options over the rest",
    "options": "number of options",
    "bm25": "keyword (BM25) score of the best entry",
    "bm25_margin": "keyword lead over the second entry",
    "coverage": "share of the question's words the entry has",
    "sent_cover": "share of the entry's words the question has",
    "lcs": "key characters in the same order",
    "qterms": "length of the question",
    "sim": "meaning similarity (re-ranker)",
    "sim_margin": "meaning lead over the other entries",
}


def flow_trigger(flows: FlowSet, text: str) -> dict[str, Any] | None:
    """The global flow trigger a message fires before the FAQ is consulted (e.g. a handoff), if any."""
    ctx = MatchContext(text=normalize_text(text), payload=None, is_first_message=False, business_hours_open=True,
                       attributes={})
    for flow, t in flows.triggers():
        cond = t.when
        if cond.payload or cond.intent or cond.first_message or cond.has_attribute or not matches(cond, ctx):
            continue
        phrase = says(text, cond.says) if cond.says else None
        return {"flow": flow.name, "goto": t.goto or f"{flow.name}:{flow.start}", "phrase": phrase,
                "keywords": list(cond.keywords), "exact": list(cond.exact)}
    return None


def explain(matcher: FaqMatcher, text: str, result: MatchResult) -> dict[str, Any]:
    """The decision, its probabilities and targets, the feature that decided, and matched terms per candidate."""
    cfg = matcher.config
    said = matcher.analyzer.explain_terms(normalize(text))
    rerank = matcher.reranker is not None
    m1 = matcher.calibration.model(result.language, rerank, "top1")
    m3 = matcher.calibration.model(result.language, rerank, "top3")
    contrib1 = m1.contributions(result.features) if m1 and result.candidates else {}
    contrib3 = m3.contributions(result.features) if m3 and result.candidates else {}
    if result.decision == "answer":
        model, contrib, sign = "top1", contrib1, 1
    elif result.decision == "clarify":  # what kept it from answering
        model, contrib, sign = "top1", contrib1, -1
    else:  # what kept it from even offering options
        model, contrib, sign = "top3", contrib3, -1
    decided_by = None
    if contrib:
        feat = max(contrib, key=lambda f: sign * contrib[f])
        decided_by = {"model": model, "feature": feat, "label": FEATURE_LABELS.get(feat, feat),
                      "contribution": contrib[feat], "value": round(result.features.get(feat, 0.0), 4)}
    candidates = []
    for c in result.candidates:
        entry = matcher.get(c.entry_id)
        terms = matcher.entry_terms(c.entry_id)
        candidates.append({
            "id": c.entry_id, "confidence": round(c.confidence, 4), "score": round(c.score, 4), "matched": c.sentence,
            "question": entry.question if entry else None, "answer": entry.answer if entry else None,
            "language": entry.language if entry else None,
            "matched_terms": [w for t, w in said.items() if t in terms],
            "unmatched_terms": [w for t, w in said.items() if t not in terms],
        })
    return {
        "decision": result.decision, "probability": result.probability,
        "options_probability": result.options_probability, "options": result.n_options, "exact": result.exact,
        "answer_precision": cfg.answer_precision, "clarify_precision": cfg.clarify_precision,
        "language": result.language, "calibration": result.calibration, "reason": _reason(result, cfg),
        "decided_by": decided_by, "features": {k: round(v, 4) for k, v in result.features.items()},
        "contributions": {"top1": contrib1, "top3": contrib3}, "candidates": candidates,
    }


def _reason(result: MatchResult, cfg: Any) -> str:
    p1, p3 = round(result.probability * 100), round(result.options_probability * 100)
    a, c = round(cfg.answer_precision * 100), round(cfg.clarify_precision * 100)
    if not result.candidates:
        return "no entry shares a word with the question: refused, a human is offered"
    if result.exact:
        return "answered: the question restates the entry's question or a paraphrase word for word"
    if result.decision == "answer":
        return f"answered: the best entry is {p1}% likely right (target {a}%)"
    if result.decision == "clarify":
        return (f"asked \"did you mean\": the best entry is only {p1}% likely right (target {a}%), "
                f"the right one is {p3}% likely among the {result.n_options} option(s) (target {c}%)")
    return (f"refused, a human is offered: the best entry is {p1}% likely right and the options {p3}% "
            f"(targets {a}% and {c}%)")
