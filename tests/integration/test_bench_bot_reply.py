"""bench/bot_reply.py's core in a tiny mode: real `scrm serve` (and a `scrm worker` on PostgreSQL + Redis),
set up over HTTP like an operator, a few seconds of signed API-channel messages (FAQ questions, small talk,
handoff requests): every acknowledged message gets exactly one bot reply on the inbox's callback_url, or its
conversation is with agents. No timing is asserted: the latencies are the bench's business."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
BENCH = Path(__file__).resolve().parents[2] / "bench"


async def test_every_customer_message_gets_one_bot_reply(tmp_path: Path) -> None:
    sys.path.insert(0, str(BENCH))
    from _bot_reply_core import Bench, BenchConfig

    pg = os.environ.get("SCRM_TEST_DATABASE_URL")
    redis = os.environ.get("SCRM_TEST_REDIS_URL")
    # A database of its own next to the test database: the bench creates and drops it.
    db_url = f"{pg}_bot_reply" if pg else f"sqlite+aiosqlite:///{tmp_path}/bench.db"
    cfg = BenchConfig(db_url=db_url, redis_url=redis if pg else None, pool=8, warm_rate=4.0, warm_seconds=2.0,
                      drain_timeout=60.0)
    async with Bench(cfg, 1 if pg and redis else 0, tmp_path) as bench:
        step = await bench.step(4.0, 2.0)
        final = await bench.finish(60.0)
        ack = await bench.ack_rate(20, senders=4, contacts=4)
    assert len(bench.warm_up) + step.sent > 0
    assert step.ack_errors == 0 and ack["errors"] == 0
    assert final["lost"] == 0, final
    assert final["duplicates"] == 0, final
    for name, c in final["classes"].items():
        assert c["replied"] + c["no_answer"] == c["sent"], (name, c)
    assert all(s.first_reply is not None or s.no_answer for s in bench.warm_up)
    # The step's timeline: one p50 per second of the step, none of them a reply that never came.
    assert len(step.timeline) == 2 and not any(v == float("inf") for v in step.timeline), step.timeline
