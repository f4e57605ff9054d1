"""The worker's 微信客服 pull runner process: restarted when it dies, and when it cannot be kept
running the worker pulls in its own loop (pulls are never left to nobody)."""

from __future__ import annotations

import asyncio
import sys

from scrm import kf_pull_process
from scrm.kf_pull_process import PullProcess


async def test_a_runner_that_keeps_dying_leaves_the_pulls_to_the_worker(monkeypatch) -> None:
    monkeypatch.setattr(kf_pull_process, "RESTART_AFTER", 0.05)
    fell_back = asyncio.Event()
    pulls = PullProcess(None, fell_back.set)
    pulls.args = [sys.executable, "-c", "raise SystemExit(3)"]  # e.g. a configuration it cannot load
    await pulls.start()
    try:
        await asyncio.wait_for(fell_back.wait(), 30)
        assert pulls.supervisor is not None
        await asyncio.wait_for(pulls.supervisor, 5)  # no more restarts
    finally:
        await pulls.stop(5)


async def test_a_runner_that_dies_is_restarted_and_stops_with_the_worker(monkeypatch) -> None:
    monkeypatch.setattr(kf_pull_process, "RESTART_AFTER", 0.05)
    pulls = PullProcess(None, lambda: None)
    pulls.args = [sys.executable, "-c", "import time; time.sleep(60)"]
    await pulls.start()
    try:
        first = pulls.proc
        assert first is not None
        first.kill()
        for _ in range(200):
            if pulls.proc is not first:
                break
            await asyncio.sleep(0.05)
        assert pulls.proc is not first and pulls.proc is not None and pulls.proc.returncode is None
    finally:
        await pulls.stop(5)
    assert pulls.proc.returncode is not None  # stopped with the worker
