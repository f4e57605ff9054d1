"""Shared parts of the FAQ benchmark and the calibration fit: the evaluation sets, the plain BM25
baseline, the shipped matcher configuration, and one record per evaluated question.

The Chinese dev sets are read from ../shared/faq_eval at run time (never copied); the English shop FAQ
and the mixed questions are hand-written under bench/data/.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_EVAL = ROOT.parent / "shared" / "faq_eval"
DATA = ROOT / "bench" / "data"
K100 = [f"bq_dev_k100_s{i}" for i in range(5)]
ZH_SETS = ["bq_dev", *K100, "lcqmc_test"]
EN_SETS = ["en_shop"]

from bot_flows.kb_io import load_kb_file  # noqa: E402
from bot_flows.matcher import FaqEntry, FaqMatcher, MatcherConfig, MatchResult  # noqa: E402
from bot_flows.tokenize import _jieba  # noqa: E402


def shipped_config(**overrides: Any) -> MatcherConfig:
    """The matcher configuration the product ships (config/faq dictionaries, default tuning)."""
    return MatcherConfig.from_dir(str(ROOT / "config" / "faq"), **overrides)


def family(name: str) -> str:
    """bq | lcqmc | en | mixed: the rows the benchmark reports."""
    return "bq" if name.startswith("bq_") else "lcqmc" if name.startswith("lcqmc") else name.split("_")[0]


def load_set(eval_dir: Path, name: str) -> tuple[list[FaqEntry], list[dict[str, Any]]]:
    """Read one evaluation set: KB entries and labelled queries ({text, gold_id, type})."""
    if name == "mixed_shop":  # mixed Chinese-English questions against the shipped example KB
        entries, _ = load_kb_file(str(ROOT / "config" / "faq" / "shop_faq.yaml"))
        return entries, _jsonl(DATA / name / "queries.jsonl")
    folder = DATA / name if (DATA / name).is_dir() else eval_dir / name
    entries = [FaqEntry(id=r["id"], question=r["question"], paraphrases=tuple(r.get("paraphrases") or ()),
                        answer=r.get("answer", ""), language=r.get("language", "zh"))
               for r in _jsonl(folder / "kb.jsonl")]
    return entries, _jsonl(folder / "queries.jsonl")


def _jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def grown_kb(eval_dir: Path, base: list[FaqEntry], size: int) -> list[FaqEntry]:
    """The base KB plus distractor entries up to `size` entries."""
    out = list(base)
    with (eval_dir / "distractors_atec.jsonl").open(encoding="utf-8") as f:
        for line in f:
            if len(out) >= size:
                break
            r = json.loads(line)
            out.append(FaqEntry(id=r["id"], question=r["question"], paraphrases=tuple(r.get("paraphrases") or ())))
    return out


class PlainBM25:
    """Baseline: Okapi BM25 (k1=1.2, b=0.75) over raw jieba words, one document per entry."""

    def __init__(self, entries: Sequence[FaqEntry]) -> None:
        self.tok = _jieba(None)
        self.ids = [e.id for e in entries]
        self.docs = [Counter(self._words(" ".join(e.sentences()))) for e in entries]
        self.lens = [sum(d.values()) for d in self.docs]
        self.avg = sum(self.lens) / max(1, len(self.lens))
        df: Counter[str] = Counter()
        for d in self.docs:
            df.update(d.keys())
        n = len(self.docs)
        self.idf = {t: math.log(1 + (n - c + 0.5) / (c + 0.5)) for t, c in df.items()}

    def _words(self, text: str) -> list[str]:
        return [w for w in self.tok.lcut(text.lower()) if w.strip()]

    def rank(self, text: str) -> list[str]:
        """The ids of the best five entries."""
        q = self._words(text)
        scores = []
        for i, d in enumerate(self.docs):
            s = 0.0
            for t in q:
                tf = d.get(t, 0)
                if tf:
                    s += self.idf[t] * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * self.lens[i] / self.avg))
            scores.append((self.ids[i], s))
        scores.sort(key=lambda x: -x[1])
        return [i for i, s in scores[:5] if s > 0]


@dataclass
class Record:
    """One evaluated question: what the matcher ranked and decided, and what was right."""

    set: str
    text: str
    gold: str | None
    type: str
    ranked: list[str]
    decision: str = "reject"
    probability: float = 0.0
    options_probability: float = 0.0
    n_options: int = 3
    features: dict[str, float] = field(default_factory=dict)
    conf: list[float] = field(default_factory=list)
    any_of: tuple[str, ...] = ()  # an ambiguous question: any of these entries is a fair option to offer

    @property
    def in_scope(self) -> bool:
        return self.gold is not None

    @property
    def ambiguous(self) -> bool:
        return bool(self.any_of)

    @property
    def out_of_scope(self) -> bool:
        return self.gold is None and not self.any_of

    @property
    def top1(self) -> bool:
        return self.in_scope and self.ranked[:1] == [self.gold]

    def in_options(self) -> bool:
        """The right entry (or, for an ambiguous question, a fair one) is among the options offered."""
        shown = self.ranked[: self.n_options]
        return (self.gold in shown) if self.in_scope else any(a in shown for a in self.any_of)


def evaluate(matcher: FaqMatcher, name: str, queries: Iterable[dict[str, Any]]) -> list[Record]:
    """Run the matcher on every question of a set."""
    out = []
    for q in queries:
        r: MatchResult = matcher.match(q["text"])
        out.append(Record(name, q["text"], q["gold_id"], q["type"], [c.entry_id for c in r.candidates],
                          r.decision, r.probability, r.options_probability, r.n_options, dict(r.features),
                          [c.confidence for c in r.candidates], tuple(q.get("any_of") or ())))
    return out


def evaluate_bm25(entries: Sequence[FaqEntry], name: str, queries: Iterable[dict[str, Any]]) -> list[Record]:
    """Rank every question of a set with the plain BM25 baseline (no decisions)."""
    bm = PlainBM25(entries)
    return [Record(name, q["text"], q["gold_id"], q["type"], bm.rank(q["text"]), any_of=tuple(q.get("any_of") or ()))
            for q in queries]


def ranking(records: Sequence[Record]) -> dict[str, float]:
    """Top-1 and MRR@5 over the in-scope questions."""
    ins = [r for r in records if r.in_scope]
    if not ins:
        return {"top1": 0.0, "mrr5": 0.0, "n": 0}
    mrr = sum(1 / (r.ranked[:5].index(r.gold) + 1) for r in ins if r.gold in r.ranked[:5])
    return {"top1": sum(r.top1 for r in ins) / len(ins), "mrr5": mrr / len(ins), "n": len(ins)}


def decisions(records: Sequence[Record], decide: Callable[[Record], str] | None = None) -> dict[str, float]:
    """Shares of in-scope questions answered correctly / wrongly, clarified (with the right entry among
    the options or not) and refused; of out-of-scope ones answered, clarified and refused; of ambiguous
    ones (several entries fit) answered and clarified with a fitting option."""
    ins = [r for r in records if r.in_scope]
    oos = [r for r in records if r.out_of_scope]
    amb = [r for r in records if r.ambiguous]
    d = decide or (lambda r: r.decision)
    out: dict[str, float] = {"n_in": len(ins), "n_oos": len(oos)}
    n = max(1, len(ins))
    out["correct"] = sum(d(r) == "answer" and r.top1 for r in ins) / n
    out["wrong"] = sum(d(r) == "answer" and not r.top1 for r in ins) / n
    out["clarified_right"] = sum(d(r) == "clarify" and r.in_options() for r in ins) / n
    out["clarified_other"] = sum(d(r) == "clarify" and not r.in_options() for r in ins) / n
    out["refused"] = sum(d(r) == "reject" for r in ins) / n
    out["handled"] = out["correct"] + out["clarified_right"]
    m = max(1, len(oos))
    out["oos_answered"] = sum(d(r) == "answer" for r in oos) / m
    out["oos_clarified"] = sum(d(r) == "clarify" for r in oos) / m
    out["oos_refused"] = sum(d(r) == "reject" for r in oos) / m
    out["oos_handled"] = out["oos_clarified"] + out["oos_refused"]
    out["n_amb"] = len(amb)
    out["amb_answered"] = sum(d(r) == "answer" for r in amb) / max(1, len(amb))
    out["amb_clarified"] = sum(d(r) == "clarify" and r.in_options() for r in amb) / max(1, len(amb))
    return out


def old_rule(r: Record, reject_threshold: float = 0.5, clarify_margin: float = 0.06) -> str:
    """The decision rule this replaces (a fixed confidence threshold and margin), as a baseline."""
    if not r.conf or r.conf[0] < reject_threshold:
        return "reject"
    if len(r.conf) > 1 and r.conf[0] - r.conf[1] < clarify_margin:
        return "clarify"
    return "answer"
