"""Outbox worker under load: group-committed outcomes keep per-delivery data; a slow channel cannot starve others."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from sqlalchemy import select

from channels.api import ApiChannelAdapter
from channels.base import RateLimit
from channels.registry import register
from scrm.db.models import Delivery, Message
from scrm.domain import OutboundMessage
from scrm.worker import OutboxWorker
from tests.conftest import make_inbox
from tests.core.test_outbox import _queue


@register
class TwoPerSecondApi(ApiChannelAdapter):
    """The API channel behind a platform quota of 2 sends per second."""

    channel_type = "test_two_per_second"

    def rate_limits(self, message: OutboundMessage) -> Sequence[RateLimit]:
        return (RateLimit(f"test-two:{self.inbox.id}", 2, 1.0),)


async def test_batched_outcomes_keep_each_deliverys_own_external_id(ctx, callback_server):
    inbox = await make_inbox(ctx, settings={"callback_url": callback_server.url})
    ids = []
    for i in range(12):
        ids += await _queue(ctx, inbox, [f"第{i}条"], sender=f"u{i}")
    assert await OutboxWorker(ctx).run_until_idle() == 12
    async with ctx.db.session() as s:
        rows = (await s.execute(select(Delivery, Message).join(Message, Message.id == Delivery.message_id)
                                .where(Delivery.id.in_(ids)))).all()
    assert len(rows) == 12
    for d, m in rows:
        assert (d.status, d.external_id, d.lease_until) == ("sent", f"ext-{d.id}", None)
        assert (m.delivery_status, m.external_id) == ("sent", f"ext-{d.id}")
        assert d.sent_at is not None
    assert sorted(r["message"]["text"] for r in callback_server.received) == sorted(f"第{i}条" for i in range(12))


async def test_a_rate_limited_backlog_does_not_starve_another_inbox(ctx, callback_server):
    slow = await make_inbox(ctx, "test_two_per_second", name="slow",
                            settings={"callback_url": callback_server.url}, secrets={"secret": "s" * 32})
    fast = await make_inbox(ctx, name="fast", settings={"callback_url": callback_server.url})
    for i in range(20):  # queued first: the oldest rows, claimed first
        await _queue(ctx, slow, [f"slow {i}"], sender=f"s{i}")
    for i in range(10):
        await _queue(ctx, fast, [f"fast {i}"], sender=f"f{i}")
    stop = asyncio.Event()
    worker = OutboxWorker(ctx, name="w")
    started = time.monotonic()
    task = asyncio.create_task(worker.run(stop))
    try:
        while sum(1 for r in callback_server.received if r["message"]["text"].startswith("fast")) < 10:
            assert time.monotonic() - started < 3.0, "the fast inbox waited behind the slow one's backlog"
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await task
    elapsed = time.monotonic() - started
    slow_sent = sum(1 for r in callback_server.received if r["message"]["text"].startswith("slow"))
    assert 1 <= slow_sent <= 2 * elapsed + 1  # the slow inbox kept to its quota meanwhile
    async with ctx.db.session() as s:
        statuses = (await s.scalars(select(Delivery.status).where(Delivery.inbox_id == slow.id))).all()
    # Nothing was lost: the rest of the slow backlog is back in the queue, due when its turn comes.
    assert sorted(set(statuses)) in (["queued", "sent"], ["sent"]) and len(statuses) == 20
