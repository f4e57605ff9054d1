"""The outbox worker's per-reply overhead: a plain message's outcome events are pushed live but logged
for the event log's consumer only when an outgoing webhook subscribes to them, and a finished send with
nothing of its contact waiting behind it makes no claim of its own."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select

from scrm import events as ev
from scrm.db.models import Delivery
from scrm.db.models_desk import WebhookSubscription
from scrm.db.models_events import EventRecord
from scrm.delivery.worker import OutboxWorker
from scrm.services.desk import webhooks_out
from tests.conftest import make_inbox, wait_for
from tests.core.test_outbox import _queue


async def _logged(ctx, name: str, delivery_id: int) -> int:
    async with ctx.db.session() as s:
        rows = (await s.scalars(select(EventRecord).where(EventRecord.name == name))).all()
    return sum(1 for r in rows if (r.payload or {}).get("delivery_id", delivery_id) == delivery_id
               and (name != ev.MESSAGE_UPDATED or (r.payload or {}).get("delivery_status") == "sent"))


async def test_a_plain_replys_outcome_is_pushed_live_and_logged_only_for_a_webhook(ctx, callback_server):
    webhooks_out.invalidate_cache()
    inbox = await make_inbox(ctx, settings={"callback_url": callback_server.url})
    live: list[ev.Event] = []

    async def keep(event: ev.Event) -> None:
        live.append(event)

    ctx.bus.subscribe(keep, everywhere=True)  # what the realtime fan-out sees
    [first] = await _queue(ctx, inbox, ["没有订阅"], sender="u1")
    assert await OutboxWorker(ctx).run_until_idle() == 1
    await wait_for(lambda: {e.name for e in live if e.data.get("delivery_id") == first or
                            e.data.get("delivery_status") == "sent"} >= {ev.MESSAGE_UPDATED, ev.DELIVERY_UPDATED})
    assert await _logged(ctx, ev.DELIVERY_UPDATED, first) == 0
    assert await _logged(ctx, ev.MESSAGE_UPDATED, first) == 0

    # An outgoing webhook subscribed to delivery.updated: that event is logged (its consumer queues the
    # webhook), message.updated still is not.
    async with ctx.db.transaction() as s:
        s.add(WebhookSubscription(name="ERP", url=callback_server.url, secret="s" * 32, events=["delivery.updated"]))
    webhooks_out.invalidate_cache()
    [second] = await _queue(ctx, inbox, ["有订阅"], sender="u2")
    assert await OutboxWorker(ctx).run_until_idle() == 1
    assert await _logged(ctx, ev.DELIVERY_UPDATED, second) == 1
    async with ctx.db.session() as s:
        assert await s.scalar(select(func.count()).select_from(EventRecord).where(
            EventRecord.name == ev.MESSAGE_UPDATED, EventRecord.payload["delivery_status"].as_string() == "sent")) == 0
    webhooks_out.invalidate_cache()


async def test_a_send_with_nothing_behind_it_claims_no_more(ctx, callback_server):
    inbox = await make_inbox(ctx, settings={"callback_url": callback_server.url})
    worker = OutboxWorker(ctx)
    worker.cfg = worker.cfg.model_copy(update={"poll_interval": 5.0})  # no look from polling meanwhile
    claims = 0
    claim = worker._claim

    async def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal claims
        claims += 1
        return await claim(*args, **kwargs)

    def sent(did: int):  # type: ignore[no-untyped-def]
        async def check() -> bool:
            async with ctx.db.session() as s:
                return (await s.get(Delivery, did)).status == "sent"  # type: ignore[union-attr]
        return check

    worker._claim = counted  # type: ignore[method-assign]
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        [first] = await _queue(ctx, inbox, ["一句"], sender="u1")  # the worker learns the inbox's rate
        await wait_for(sent(first), timeout=10)
        await asyncio.sleep(0.3)
        claims = 0
        [second] = await _queue(ctx, inbox, ["两句"], sender="u2")  # announced: one claim takes it
        await wait_for(sent(second), timeout=10)
        await asyncio.sleep(0.3)
        assert claims == 1  # neither the send's end nor its outcome claimed again: nothing waits behind it
        [third, fourth] = await _queue(ctx, inbox, ["三句", "四句"], sender="u3")  # the fourth waits behind the third
        await wait_for(sent(fourth), timeout=3)  # claimed once the third's outcome is recorded, not at a poll
    finally:
        stop.set()
        await task
