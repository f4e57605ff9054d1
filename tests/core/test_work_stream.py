"""The Redis work stream: follow-up work (bot, desk) runs once, in the processes that run workers,
and an event a crashed worker held is taken over by another."""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import pytest

from scrm import events as ev
from tests.conftest import REDIS_URL

pytestmark = pytest.mark.skipif(not REDIS_URL, reason="needs Redis (SCRM_TEST_REDIS_URL)")


async def _bus(settings: Any, name: str) -> ev.RedisEventBus:
    import redis.asyncio as aioredis

    bus = ev.RedisEventBus(aioredis.from_url(settings.redis.url), process_id=name)
    await bus.start()
    return bus


async def _worker(settings: Any, name: str, into: list[str], **tuning: float) -> ev.RedisEventBus:
    """A bus that consumes the work stream like `scrm worker`, noting each event's "n" in `into`."""
    bus = await _bus(settings, name)
    for knob, value in tuning.items():  # production's timings are minutes; tests shorten them
        setattr(bus, knob, value)
    bus.subscribe(lambda e: _append(into, e))
    bus.consume_work()
    return bus


async def _close(*buses: ev.RedisEventBus) -> None:
    for bus in buses:
        await bus.close()
        await bus.redis.aclose()


async def _until(check: Any, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_work_published_by_a_server_without_worker_runs_once_across_workers(settings) -> None:
    serve = await _bus(settings, "serve")  # `scrm serve --no-worker`: stores, publishes, does no work
    workers = [await _bus(settings, f"worker-{i}") for i in range(2)]
    handled: collections.Counter[str] = collections.Counter()
    by_worker: collections.Counter[str] = collections.Counter()
    pushed: list[str] = []

    async def on_serve(event: ev.Event) -> None:
        handled["serve:" + event.data["n"]] += 1

    serve.subscribe(on_serve)  # installed there too, but its work is left to the workers
    serve.subscribe(lambda e: _append(pushed, e), everywhere=True)  # the WebSocket push still runs there
    for worker in workers:
        async def on_work(event: ev.Event, name: str = worker.process_id) -> None:
            await asyncio.sleep(0.01)
            handled[event.data["n"]] += 1
            by_worker[name] += 1

        worker.subscribe(on_work, ev.MESSAGE_CREATED)
        worker.consume_work()
    try:
        for batch in range(10):
            await serve.publish([ev.Event(ev.MESSAGE_CREATED, {"n": f"{batch}-{i}"}) for i in range(20)])
        await _until(lambda: sum(handled.values()) >= 200 and len(pushed) >= 200)
        await asyncio.sleep(0.2)  # nothing more arrives late
        assert sorted(handled) == sorted(f"{b}-{i}" for b in range(10) for i in range(20))
        assert set(handled.values()) == {1}  # each event's work done once cluster-wide, never by serve
        assert len(by_worker) == 2, by_worker  # and both workers took a share
        for worker in workers:
            await worker.drain(5)
        info = {g["name"]: g for g in await serve.redis.xinfo_groups(ev.RedisEventBus.STREAM)}
        assert info[b"listeners"]["pending"] == 0  # every event acknowledged
    finally:
        await _close(serve, *workers)


async def _append(into: list[str], event: ev.Event) -> None:
    into.append(event.data["n"])


async def test_an_event_held_by_a_crashed_worker_is_taken_over(settings) -> None:
    serve = await _bus(settings, "serve")
    await serve.publish([ev.Event(ev.MESSAGE_CREATED, {"n": "lost?"})])
    # A worker reads the event and dies before acknowledging it (kill -9 mid-answer).
    taken = await serve.redis.xreadgroup(ev.RedisEventBus.GROUP, "dead-worker", {ev.RedisEventBus.STREAM: ">"}, count=10)
    assert len(taken[0][1]) == 1

    seen: list[str] = []
    # Production waits a minute before deciding a worker is gone.
    survivor = await _worker(settings, "survivor", seen, RECLAIM_IDLE_MS=200, HOUSEKEEPING_SECONDS=0.1)
    try:
        await serve.publish([ev.Event(ev.MESSAGE_CREATED, {"n": "fresh"})])
        await _until(lambda: "lost?" in seen and "fresh" in seen)
        await asyncio.sleep(0.5)
        assert sorted(seen) == ["fresh", "lost?"]  # taken over once, not once per housekeeping round
        await _until(lambda: not survivor._held and not survivor._acks)  # noqa: SLF001
        summary = await serve.redis.xpending(ev.RedisEventBus.STREAM, ev.RedisEventBus.GROUP)
        assert summary["pending"] == 0
    finally:
        await _close(serve, survivor)


async def test_acknowledged_work_is_trimmed_and_unread_work_is_kept(settings) -> None:
    serve = await _bus(settings, "serve")
    for i in range(300):
        await serve.publish([ev.Event(ev.MESSAGE_CREATED, {"n": str(i)})])
    stream = ev.RedisEventBus.STREAM
    assert await serve.redis.xlen(stream) == 300  # no worker yet: the work waits in Redis
    assert serve.backlog == 0  # (first read starts the refresh)
    await _until(lambda: serve.backlog >= 300)

    done: list[str] = []
    worker = await _worker(settings, "worker", done)
    try:
        await _until(lambda: len(done) == 300)
        await worker.drain(5)
        await worker._trim()  # noqa: SLF001 (runs every HOUSEKEEPING_SECONDS)
        assert await serve.redis.xlen(stream) < 300  # approximate trim: whole nodes of done work go
        assert done == [str(i) for i in range(300)]  # one consumer reads in publish order
    finally:
        await _close(serve, worker)


async def test_a_commits_events_travel_as_one_entry_and_older_single_event_entries_still_work(settings) -> None:
    serve = await _bus(settings, "serve")
    other = await _bus(settings, "other-serve")  # another `scrm serve`: pushes every event to its WebSockets
    pushed: list[str] = []
    other.subscribe(lambda e: _append(pushed, e), everywhere=True)
    stream = ev.RedisEventBus.STREAM
    before = await serve.redis.xlen(stream)
    await serve.publish([ev.Event(ev.MESSAGE_CREATED, {"n": f"c-{i}"}) for i in range(50)])
    assert await serve.redis.xlen(stream) == before + 1  # one entry (and one pub/sub message) per commit
    # An entry written by the previous version (one event per entry, field "e") during a rolling upgrade.
    await serve.redis.xadd(stream, {"e": ev.Event(ev.MESSAGE_CREATED, {"n": "old"}).to_json()})

    done: list[str] = []
    worker = await _worker(settings, "worker", done)
    try:
        await _until(lambda: len(done) == 51 and len(pushed) == 50)
        assert done == [f"c-{i}" for i in range(50)] + ["old"]  # each once, in order
        assert pushed == [f"c-{i}" for i in range(50)]
        await worker.drain(5)
        group = await worker._group()  # noqa: SLF001
        assert group is not None and not int(group.get("pending") or 0)  # acknowledged once all 50 were done
    finally:
        await _close(serve, other, worker)
