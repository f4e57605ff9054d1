"""Listener slots: at most N listener calls at once, first come first served, cancelled waiters skipped."""

from __future__ import annotations

import asyncio

from scrm.events import Event, EventBus, _Slots


async def test_slots_bound_concurrency_and_keep_arrival_order():
    slots = _Slots(3)
    running = 0
    peak = 0
    order: list[int] = []

    async def call(i: int) -> None:
        nonlocal running, peak
        await slots.acquire()
        try:
            order.append(i)
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0)
            running -= 1
        finally:
            slots.release()

    await asyncio.gather(*[call(i) for i in range(5000)])  # a backlog like a busy server's
    assert peak == 3
    assert order == list(range(5000))


async def test_a_cancelled_waiter_does_not_lose_a_slot():
    slots = _Slots(1)
    await slots.acquire()
    waiter = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    slots.release()
    await asyncio.wait_for(slots.acquire(), 1)  # the slot is free again, not stuck with the cancelled waiter
    slots.release()
    third = asyncio.create_task(slots.acquire())
    await asyncio.wait_for(third, 1)


async def test_a_listener_that_wants_nothing_costs_no_task():
    """WebSocket fan-out with no agent connected: thousands of events a second start no task for it."""
    bus = EventBus()
    seen: list[str] = []
    connected = False

    async def push(event: Event) -> None:
        seen.append(event.name)

    bus.subscribe(push, everywhere=True, wants=lambda e: connected)
    await bus.publish([Event("message.created", {}), Event("conversation.updated", {})])
    assert not bus._tasks and seen == []
    connected = True
    await bus.publish([Event("message.created", {})])
    await bus.drain(1)
    assert seen == ["message.created"]


async def test_calls_for_one_conversation_take_turns_without_holding_slots():
    """A conversation whose row is busy (its first call blocks) holds one slot, not all: others go on."""
    bus = EventBus()
    gate = asyncio.Event()
    running: dict[int, int] = {}
    order: list[tuple[int, int]] = []

    async def listener(event: Event) -> None:
        cid = event.data["conversation_id"]
        running[cid] = running.get(cid, 0) + 1
        assert running[cid] == 1, "two calls for one conversation at once"
        order.append((cid, event.data["n"]))
        if cid == 1:
            await gate.wait()
        running[cid] -= 1

    bus.subscribe(listener, per_conversation=True)
    await bus.publish([Event("message.created", {"conversation_id": 1, "n": n}) for n in range(10)])
    await bus.publish([Event("message.created", {"conversation_id": c, "n": 0}) for c in range(2, 12)])
    for _ in range(50):
        await asyncio.sleep(0)
    assert sorted(c for c, _ in order if c != 1) == list(range(2, 12))  # not stuck behind conversation 1
    assert [n for c, n in order if c == 1] == [0]
    assert bus.backlog == 9  # conversation 1's calls waiting for their turn still count as backlog
    gate.set()
    await bus.drain(2)
    assert [n for c, n in order if c == 1] == list(range(10))  # in arrival order
    assert bus.backlog == 0
