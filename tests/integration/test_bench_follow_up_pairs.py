"""bench/follow_up_pairs.py reads bench/bot_reply.py's `CPU rate=` line and compares pairs of runs: if the
line's format drifts, or the ratios are computed the wrong way round, the A/B reports nonsense."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import follow_up_pairs as pairs  # noqa: E402

LINE = ("CPU rate=360 sent=10739 new_customers=1104 worker_ms=1.68 worker_pg_ms=0.97 postgres_all_ms=1.28 "
        "serve_ms=0.63 follow_up_ms=2.64 p50_ms=665.3 p99_ms=inf late=0")


def test_the_bot_reply_benchs_cpu_line_is_read_as_it_prints_it() -> None:
    printed = (BENCH / "bot_reply.py").read_text()
    for name in pairs.FIGURES:  # every figure the A/B reads is one bot_reply.py prints
        assert f"{name}=" in printed, name
    figures = pairs.parse_cpu_line("1 scrm worker process(es)\n" + LINE + "\n  events 13024 in 309 batches\n")
    assert figures["worker_ms"] == 1.68 and figures["serve_ms"] == 0.63 and figures["follow_up_ms"] == 2.64
    assert math.isinf(figures["p99_ms"])  # replies that never came
    with pytest.raises(ValueError, match="CPU rate="):
        pairs.parse_cpu_line("Traceback (most recent call last):\n")


def test_a_pair_is_this_checkout_over_the_base_and_per_unit_of_serves_cpu() -> None:
    base = {"worker_ms": 2.0, "worker_pg_ms": 1.0, "follow_up_ms": 3.0, "serve_ms": 0.5}
    head = {"worker_ms": 1.5, "worker_pg_ms": 1.0, "follow_up_ms": 2.5, "serve_ms": 0.5}
    r = pairs.pair_ratios(head, base)
    assert r["worker_ms"] == pytest.approx(0.75) and r["follow_up_ms"] == pytest.approx(2.5 / 3.0)
    # The host was slower during this checkout's run (serve used a fifth more): per serve, the gain is larger.
    slow = {**head, "worker_ms": 1.8, "follow_up_ms": 2.8, "serve_ms": 0.6}
    assert pairs.pair_ratios(slow, base)["follow_up_per_serve"] == pytest.approx((2.8 / 0.6) / (3.0 / 0.5))


def test_the_interval_widens_with_the_spread_and_narrows_with_more_pairs() -> None:
    mean, half = pairs.interval([1.0])
    assert mean == 1.0 and math.isinf(half)  # one pair says nothing about the noise
    _, wide = pairs.interval([0.9, 1.1, 0.9, 1.1])
    _, narrow = pairs.interval([0.9, 1.1] * 8)
    assert 0.0 < narrow < wide
    assert pairs.interval([0.95, 0.95, 0.95])[1] == 0.0
