"""Group commit's linger: while an inbox's messages come fast, a short batch waits a moment for company (more
messages per transaction, less CPU per message); a lone message at a quiet time is stored at once."""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any

from scrm.domain import InboundMessage
from scrm.services.conversations import ingest_batch
from scrm.services.conversations.ingest_batch import GroupCommit
from tests.conftest import make_inbox


def _recording(commit: GroupCommit) -> list[list[str]]:
    """Batches as the transactions would take them (the texts of their messages); each request settled."""
    batches: list[list[str]] = []

    async def store(batch: list[Any]) -> None:
        batches.append([m.text for p in batch for m in p.messages])
        for pending in batch:
            pending.future.set_result([])

    commit._commit = store  # type: ignore[method-assign]
    return batches


def _arrived_fast(commit: GroupCommit, inbox_id: int, until: float) -> None:
    """The half second before `until` as seen by `commit`: LINGER_FROM requests a second for this inbox."""
    commit._arrivals[inbox_id] = collections.deque(
        until - i * 0.001 for i in range(int(ingest_batch.LINGER_FROM * ingest_batch.RATE_WINDOW), 0, -1))


async def _two_requests_a_moment_apart(commit: GroupCommit, inbox: Any) -> None:
    first = asyncio.create_task(commit.submit(inbox, [InboundMessage("m1", "alice", "first")]))
    for _ in range(3):  # the first request's drain task has started, no wall time has passed
        await asyncio.sleep(0)
    second = asyncio.create_task(commit.submit(inbox, [InboundMessage("m2", "bob", "second")]))
    await asyncio.gather(first, second)


async def test_messages_arriving_fast_share_a_transaction(ctx: Any) -> None:
    inbox = await make_inbox(ctx)
    commit = GroupCommit(ctx)
    batches = _recording(commit)
    _arrived_fast(commit, inbox.id, time.perf_counter())
    await _two_requests_a_moment_apart(commit, inbox)
    assert batches == [["first", "second"]]


async def test_a_lone_message_is_stored_at_once(ctx: Any) -> None:
    inbox = await make_inbox(ctx)
    commit = GroupCommit(ctx)
    batches = _recording(commit)
    await _two_requests_a_moment_apart(commit, inbox)
    assert batches[0] == ["first"]  # not held back for the second
    _arrived_fast(commit, inbox.id, time.perf_counter() - 2 * ingest_batch.RATE_WINDOW)  # a burst that is over: no linger
    batches.clear()
    await _two_requests_a_moment_apart(commit, inbox)
    assert batches[0] == ["first"]


async def test_a_batch_that_fills_up_does_not_wait_out_the_linger(ctx: Any, monkeypatch: Any) -> None:
    """At high rates LINGER_FILL requests gather well within LINGER: the batch starts as soon as they wait."""
    monkeypatch.setattr(ingest_batch, "LINGER", 30.0)  # a wait the test would notice
    inbox = await make_inbox(ctx)
    commit = GroupCommit(ctx)
    batches = _recording(commit)
    _arrived_fast(commit, inbox.id, time.perf_counter())
    first = asyncio.create_task(commit.submit(inbox, [InboundMessage("m0", "c0", "0")]))
    for _ in range(3):  # its drain task lingers now
        await asyncio.sleep(0)
    rest = [asyncio.create_task(commit.submit(inbox, [InboundMessage(f"m{i}", f"c{i}", str(i))]))
            for i in range(1, ingest_batch.LINGER_FILL)]
    started = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(first, *rest), 10)
    assert time.perf_counter() - started < 5
    assert batches == [[str(i) for i in range(ingest_batch.LINGER_FILL)]]
