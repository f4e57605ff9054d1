"""Redis event messages carry a header (event names and conversation ids): a process parses the JSON of
another process's events only when one of its live listeners may want one of them (issue 17: `scrm serve`
spent much of its CPU per 微信客服 callback parsing events that no connected browser could receive)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from scrm import events as ev
from scrm.events import Event, RedisEventBus, events_header, header_entries
from tests.conftest import REDIS_URL
from tests.scratch import ScratchRedis

pytestmark = pytest.mark.skipif(not REDIS_URL and not ScratchRedis.available(), reason="needs Redis")


@pytest.fixture
async def redis_url() -> AsyncIterator[str]:
    if REDIS_URL:
        yield REDIS_URL
        return
    server = ScratchRedis()
    server.start()
    try:
        yield server.url
    finally:
        server.close()


@pytest.fixture
def parsed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of the Redis event messages this test's buses parsed (events_from_json calls)."""
    counts: list[int] = []
    real = ev.events_from_json

    def counting(raw: str | bytes) -> list[Event]:
        out = real(raw)
        counts.append(len(out))
        return out

    monkeypatch.setattr(ev, "events_from_json", counting)
    return counts


class Wakes:
    """A stand-in consumer: counts the Redis messages the bus has read (it wakes its consumer for each)."""

    def __init__(self) -> None:
        self.count = 0

    def start(self) -> None: ...

    def wake(self) -> None:
        self.count += 1

    async def stop(self) -> None: ...


async def until(check: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_header_lists_each_name_and_conversation_once() -> None:
    batch = [Event(ev.MESSAGE_CREATED, {"conversation_id": 7, "message_id": 1}),
             Event(ev.MESSAGE_CREATED, {"conversation_id": 7, "message_id": 2}),
             Event(ev.CONVERSATION_UPDATED, {"conversation_id": 7}),
             Event("agent.updated", {"agent_id": 3}),
             Event(ev.DELIVERY_UPDATED, {"conversation_id": "7"})]  # not an id: about no conversation here
    assert header_entries(events_header(batch)) == [
        (ev.MESSAGE_CREATED, 7), (ev.CONVERSATION_UPDATED, 7), ("agent.updated", None), (ev.DELIVERY_UPDATED, None)]


async def test_events_no_live_listener_wants_are_not_parsed(redis_url: str, parsed: list[int]) -> None:
    import redis.asyncio as aioredis

    sender = RedisEventBus(aioredis.from_url(redis_url), process_id="sender")
    receiver = RedisEventBus(aioredis.from_url(redis_url), process_id="receiver")
    wakes = receiver.consumer = Wakes()
    connected: set[int] = set()  # conversations a socket of the receiver watches
    seen: list[Event] = []

    async def on_event(event: Event) -> None:
        seen.append(event)

    receiver.subscribe(on_event, ev.MESSAGE_CREATED, everywhere=True,
                       wants=lambda e: e.data.get("conversation_id") in connected,
                       interested=lambda _name, cid: cid in connected)
    await receiver.start()
    try:
        # Nobody watches conversation 5: the message is read (the consumer is woken) but not parsed.
        await sender.publish([Event(ev.MESSAGE_CREATED, {"conversation_id": 5, "message_id": 50}),
                              Event(ev.CONVERSATION_UPDATED, {"conversation_id": 9})])
        await until(lambda: wakes.count == 1)
        assert parsed == [] and seen == []
        # A socket watches conversation 5 now: the same kind of message is parsed and fanned out.
        connected.add(5)
        await sender.publish([Event(ev.CONVERSATION_UPDATED, {"conversation_id": 5}),
                              Event(ev.MESSAGE_CREATED, {"conversation_id": 5, "message_id": 51})])
        await until(lambda: wakes.count == 2)
        await until(lambda: len(seen) == 1)
        assert parsed == [2]
        assert seen[0].data == {"conversation_id": 5, "message_id": 51} and seen[0].origin == "sender"
        # A name the listener does not subscribe to, for a watched conversation: not parsed either.
        await sender.publish([Event(ev.TYPING, {"conversation_id": 5})])
        await until(lambda: wakes.count == 3)
        assert parsed == [2]
        # A message of an older version (no header) is parsed as before.
        await sender.redis.publish(sender.channel, "old\n" + ev.events_to_json(
            [Event(ev.MESSAGE_CREATED, {"conversation_id": 5, "message_id": 52})]))
        await until(lambda: len(seen) == 2)
        assert seen[1].data["message_id"] == 52
    finally:
        await receiver.close()
        await sender.close()
        await receiver.redis.aclose()
        await sender.redis.aclose()


async def test_realtime_listener_parses_only_with_a_connected_tab(redis_url: str, parsed: list[int], ctx: Any) -> None:
    """The realtime fan-out's interest: a process without sockets skips other processes' events unparsed."""
    import redis.asyncio as aioredis

    from scrm.listeners import realtime

    sender = RedisEventBus(aioredis.from_url(redis_url), process_id="sender")
    receiver = RedisEventBus(aioredis.from_url(redis_url), process_id="receiver")
    wakes = receiver.consumer = Wakes()
    original, ctx.bus = ctx.bus, receiver
    unsubscribe = realtime.install(ctx)
    hub = realtime.hub_for(ctx)
    await receiver.start()
    try:
        await sender.publish([Event(ev.MESSAGE_CREATED, {"conversation_id": 5, "message_id": 50})])
        await until(lambda: wakes.count == 1)
        assert parsed == []
        client = realtime.Client(ws=None, agent_id=1, role="admin")  # type: ignore[arg-type]
        hub.add(client)
        await sender.publish([Event("agent.updated", {"agent_id": 1})])
        await until(lambda: not client.queue.empty())
        assert parsed == [1]
        assert '"agent.updated"' in client.queue.get_nowait()  # type: ignore[operator]
    finally:
        for fn in unsubscribe:
            fn()
        ctx.bus = original
        await receiver.close()
        await sender.close()
        await receiver.redis.aclose()
        await sender.redis.aclose()


async def test_live_only_events_reach_listeners_but_wake_no_consumer(redis_url: str) -> None:
    """A plain send's outcome is pushed live but not logged (delivery/outcomes.py): it reaches the delivery
    ticks' listeners in every process, but wakes no consumer (there is nothing new in the log to work)."""
    import redis.asyncio as aioredis

    sender = RedisEventBus(aioredis.from_url(redis_url), process_id="sender")
    receiver = RedisEventBus(aioredis.from_url(redis_url), process_id="receiver")
    remote, local = Wakes(), Wakes()
    receiver.consumer, sender.consumer = remote, local
    seen: list[Event] = []

    async def on_event(event: Event) -> None:
        seen.append(event)

    receiver.subscribe(on_event, ev.MESSAGE_UPDATED, everywhere=True)
    await receiver.start()
    try:
        await sender.publish([Event(ev.MESSAGE_UPDATED, {"conversation_id": 5, "message_id": 50})], wake=False)
        await until(lambda: len(seen) == 1)
        assert seen[0].data["message_id"] == 50 and seen[0].origin == "sender"
        assert remote.count == 0 and local.count == 0
        # A logged event still wakes both, and the receiver still knows its own messages by their origin.
        await sender.publish([Event(ev.MESSAGE_UPDATED, {"conversation_id": 5, "message_id": 51})])
        await until(lambda: len(seen) == 2 and remote.count == 1)
        assert local.count == 1
        await receiver.publish([Event(ev.MESSAGE_UPDATED, {"conversation_id": 5, "message_id": 52})], wake=False)
        await until(lambda: len(seen) == 3)  # its own listener, called at once, and not again from Redis
        await asyncio.sleep(0.2)
        assert [e.data["message_id"] for e in seen] == [50, 51, 52] and remote.count == 1
    finally:
        await receiver.close()
        await sender.close()
        await receiver.redis.aclose()
        await sender.redis.aclose()
