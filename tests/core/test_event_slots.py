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
