"""Same-run A/B of the follow-up's CPU per message: this checkout against another revision, alternated.

    python bench/follow_up_pairs.py [--base REV] [--pairs 4] [--rate 360] [--seconds 20] [--quick] [-- ARGS]

A change to the follow-up (the bot's round, desk bookkeeping, the consumer's batches, sends) saves a few per
cent of CPU, and this shared machine's speed drifts by more than that within minutes: the same code used 1.44
to 1.97 ms of worker CPU per message in runs 15 minutes apart. So one run of each side says nothing.

Each pair runs `bench/bot_reply.py --rate R --seconds S --workers 1 [ARGS]` once from a git worktree of --base
(default HEAD: the working tree's uncommitted change against its last commit) and once from this checkout,
the order alternating from pair to pair so that a drift does not favour one side. Within a pair it compares
the worker's CPU per message, its PostgreSQL backends', their sum (the follow-up), and each of them divided
by `scrm serve`'s CPU per message in the same run: serve acknowledges the same messages whatever the
follow-up does, so the quotient takes the machine's speed at that moment out. If the change touches ingest
too, read the raw ratios. `--base` equal to this checkout's code measures the noise floor.

Prints every pair, then per figure the median of the per-pair ratios (this / base), their mean with a 95%
interval (Student's t over the pairs) and their range, and last one line with the medians:
`BENCH follow_up_pairs follow_up=... follow_up_per_serve=... worker=... worker_pg=... pairs=N`. The median
first: one run caught by a slow spell of the host (serve's own CPU per message up by half, replies seconds
late) moves the mean by several per cent. Measured on this 2-core host with the same code on both sides
(4 pairs at 360 msg/s): follow-up 1.047 ± 0.151, per serve 0.866 ± 0.260. A change smaller than that
needs more pairs, or a count that does not drift (bench/follow_up_statements.py).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ("worker_ms", "worker_pg_ms", "follow_up_ms", "serve_ms", "p50_ms", "p99_ms")
# Two-sided 95% quantiles of Student's t by degrees of freedom (pairs - 1); more pairs: the normal's.
T95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26, 10: 2.23,
       11: 2.20, 12: 2.18, 13: 2.16, 14: 2.14, 15: 2.13}


def parse_cpu_line(output: str) -> dict[str, float]:
    """The figures of bench/bot_reply.py's `CPU rate=...` line (the last one, if several)."""
    lines = [x for x in output.splitlines() if x.startswith("CPU rate=")]
    if not lines:
        raise ValueError("bench/bot_reply.py printed no `CPU rate=` line (does that revision have --rate?)")
    fields = dict(part.split("=", 1) for part in lines[-1].split()[1:])
    return {k: float(fields[k]) for k in FIGURES}


def interval(ratios: Sequence[float]) -> tuple[float, float]:
    """Mean of the ratios and the half-width of its 95% interval (inf with one pair)."""
    mean = statistics.fmean(ratios)
    if len(ratios) < 2:
        return mean, math.inf
    t = T95.get(len(ratios) - 1, 1.96)
    return mean, t * statistics.stdev(ratios) / math.sqrt(len(ratios))


def pair_ratios(head: dict[str, float], base: dict[str, float]) -> dict[str, float]:
    """This checkout's figures over the base's, raw and per unit of serve's CPU in the same run."""
    out = {k: head[k] / base[k] for k in ("worker_ms", "worker_pg_ms", "follow_up_ms")}
    out["follow_up_per_serve"] = (head["follow_up_ms"] / head["serve_ms"]) / (base["follow_up_ms"] / base["serve_ms"])
    out["worker_per_serve"] = (head["worker_ms"] / head["serve_ms"]) / (base["worker_ms"] / base["serve_ms"])
    return out


@contextlib.contextmanager
def worktree(rev: str) -> Iterator[Path]:
    """A detached worktree of `rev`, removed afterwards."""
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", f"{rev}^{{commit}}"],
                            capture_output=True, text=True)
    if commit.returncode != 0:
        raise SystemExit(f"--base {rev!r} is not a revision of this repository")
    path = Path(tempfile.mkdtemp(prefix="scrm_follow_up_base_")) / "tree"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(path),
                    commit.stdout.strip()], check=True)
    try:
        yield path
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)], check=False)
        with contextlib.suppress(OSError):
            path.parent.rmdir()


def run(tree: Path, rate: float, seconds: float, extra: list[str]) -> dict[str, float]:
    """One bench/bot_reply.py --rate run of the code in `tree` (its processes import that tree's scrm)."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    args = [sys.executable, str(tree / "bench" / "bot_reply.py"), "--rate", f"{rate:g}", "--seconds", f"{seconds:g}",
            "--workers", "1", *extra]
    done = subprocess.run(args, capture_output=True, text=True, env=env, cwd=tree)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return parse_cpu_line(done.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="HEAD", help="the revision to compare with (default HEAD)")
    ap.add_argument("--pairs", type=int, help="pairs of runs (default 4; --quick 1)")
    ap.add_argument("--rate", type=float, help="offered messages per second (default 360; --quick 60)")
    ap.add_argument("--seconds", type=float, help="seconds at that rate per run (default 20; --quick 3)")
    ap.add_argument("--quick", action="store_true", help="one short pair at a low rate (under a minute)")
    ap.add_argument("extra", nargs="*", help="more bench/bot_reply.py arguments, after --")
    args = ap.parse_args()
    pairs = args.pairs or (1 if args.quick else 4)
    rate = args.rate or (60.0 if args.quick else 360.0)
    seconds = args.seconds or (3.0 if args.quick else 20.0)
    extra = (["--pool", "60"] if args.quick else []) + args.extra
    if pairs < 1 or rate <= 0 or seconds <= 0:
        ap.error("--pairs, --rate and --seconds must be positive")
    print(f"follow-up A/B: {ROOT} against {args.base}; {pairs} pair(s) of bench/bot_reply.py --rate {rate:g} "
          f"--seconds {seconds:g} {' '.join(extra)}", flush=True)
    ratios: dict[str, list[float]] = {}
    with worktree(args.base) as base_tree:
        for pair in range(pairs):
            order = ("head", "base") if pair % 2 == 0 else ("base", "head")
            res = {side: run(ROOT if side == "head" else base_tree, rate, seconds, extra) for side in order}
            for key, value in pair_ratios(res["head"], res["base"]).items():
                ratios.setdefault(key, []).append(value)
            print(f"pair {pair + 1} ({order[0]} first): " + " | ".join(
                f"{side} worker {r['worker_ms']:.2f} pg {r['worker_pg_ms']:.2f} serve {r['serve_ms']:.2f} ms/msg "
                f"p50 {r['p50_ms']:.0f} p99 {r['p99_ms']:.0f} ms" for side, r in res.items())
                + f" | follow-up this/base {ratios['follow_up_ms'][-1]:.3f}, "
                  f"per serve {ratios['follow_up_per_serve'][-1]:.3f}", flush=True)
    medians = {key: statistics.median(values) for key, values in ratios.items()}
    for key, values in ratios.items():
        mean, half = interval(values)
        print(f"  {key:22s} this/base median {medians[key]:.3f}  mean {mean:.3f} ± {half:.3f} (95%)  "
              f"range {min(values):.3f}-{max(values):.3f}  ({pairs} pairs)")
    print("BENCH follow_up_pairs " + " ".join(
        f"{key}={medians[name]:.3f}" for key, name in (
            ("follow_up", "follow_up_ms"), ("follow_up_per_serve", "follow_up_per_serve"),
            ("worker", "worker_ms"), ("worker_pg", "worker_pg_ms"))) + f" pairs={pairs}")


if __name__ == "__main__":
    main()
