"""Same-run A/B of the PostgreSQL ingest batch function: bench/ingest.py with and without it, alternated.

    python bench/ingest_pairs.py [--pairs 5] [--quick] [--messages N] [-- extra bench/ingest.py args]

Each pair runs `bench/ingest.py --backends postgresql --no-drain` once with the function and once with
`--no-db-function`, the order alternating from pair to pair (on/off, off/on, ...) so drift on a
shared machine does not favour one side. Prints every pair and the median of the per-pair ratios.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(extra: list[str], db_function: bool) -> dict[str, float]:
    args = [sys.executable, str(HERE / "ingest.py"), "--backends", "postgresql", "--no-drain", *extra]
    if not db_function:
        args.append("--no-db-function")
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("BENCH ingest "))
    fields = dict(part.split("=", 1) for part in line.split()[2:])
    return {k: float(v) for k, v in fields.items() if k in ("pg_rate", "pg_p50_ms", "pg_p99_ms", "bare_rate")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--messages", type=int)
    ap.add_argument("extra", nargs="*", help="more bench/ingest.py arguments (after --)")
    args = ap.parse_args()
    extra = (["--quick"] if args.quick else []) + (["--messages", str(args.messages)] if args.messages else []) + args.extra
    rate_ratios: list[float] = []
    p99_ratios: list[float] = []
    for pair in range(args.pairs):
        order = (True, False) if pair % 2 == 0 else (False, True)
        res = {on: run(extra, on) for on in order}
        on, off = res[True], res[False]
        rate_ratios.append(on["pg_rate"] / off["pg_rate"])
        p99_ratios.append(on["pg_p99_ms"] / off["pg_p99_ms"])
        print(f"pair {pair + 1} ({'on first' if order[0] else 'off first'}): "
              f"function on {on['pg_rate']:6.0f} msg/s p50 {on['pg_p50_ms']:6.1f} p99 {on['pg_p99_ms']:6.1f} ms | "
              f"off {off['pg_rate']:6.0f} msg/s p50 {off['pg_p50_ms']:6.1f} p99 {off['pg_p99_ms']:6.1f} ms | "
              f"rate on/off {rate_ratios[-1]:.3f}  p99 on/off {p99_ratios[-1]:.3f}", flush=True)
    print(f"median rate on/off {statistics.median(rate_ratios):.3f}  median p99 on/off {statistics.median(p99_ratios):.3f} "
          f"({args.pairs} pairs)")


if __name__ == "__main__":
    main()
