"""Outbox worker under load: group-committed outcomes keep per-delivery data; a slow channel cannot
starve others; outcomes ride along with the next commit; the worker's own database connections
recover from a drop and are returned. (Pacing itself: test_outbox_pacing.)"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest
from aiohttp import web
from sqlalchemy import select

from channels.api import ApiChannelAdapter
from channels.base import RateLimit
from channels.registry import register
from scrm.db.models import Delivery, Message
from scrm.delivery.batching import GroupCommit
from scrm.delivery.pacing import MARGIN_SECONDS, PACE_TARGET, RATE_TOLERANCE, paced
from scrm.delivery.worker import OutboxWorker
from scrm.domain import OutboundMessage
from tests.conftest import CallbackServer, make_inbox, wait_for
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


async def test_an_outcome_rides_along_with_the_next_urgent_commit():
    batches: list[list[str]] = []

    async def flush(items: list[str]) -> list[bool]:
        batches.append(list(items))
        await asyncio.sleep(0.01)
        return [True] * len(items)

    commits: GroupCommit[str, bool] = GroupCommit(flush, linger=5.0)
    rider = asyncio.create_task(commits.submit("outcome", urgent=False))
    await asyncio.sleep(0.05)
    assert batches == []  # no commit of its own: it waits for one to ride along with
    assert await commits.submit("mark sending") is True
    assert await rider is True
    assert batches == [["outcome", "mark sending"]]


async def test_a_lone_outcome_is_committed_after_the_linger():
    batches: list[list[str]] = []

    async def flush(items: list[str]) -> list[bool]:
        batches.append(list(items))
        return [True] * len(items)

    commits: GroupCommit[str, bool] = GroupCommit(flush, linger=0.05)
    started = time.monotonic()
    assert await asyncio.gather(commits.submit("a", urgent=False), commits.submit("b", urgent=False)) == [True, True]
    assert 0.04 <= time.monotonic() - started < 1.0
    assert batches == [["a", "b"]]


async def test_the_workers_own_connections_survive_a_drop_and_are_returned(ctx, callback_server):
    if ctx.db.dialect != "postgresql":
        pytest.skip("the worker holds its own connections on PostgreSQL only")
    inbox = await make_inbox(ctx, settings={"callback_url": callback_server.url})
    checked_out = ctx.db.engine.pool.checkedout()
    stop = asyncio.Event()
    worker = OutboxWorker(ctx, name="w")
    task = asyncio.create_task(worker.run(stop))
    try:
        for i in range(3):
            await _queue(ctx, inbox, [f"first {i}"], sender=f"a{i}")
        await wait_for(lambda: len(callback_server.received) >= 3)
        # The claim marks a send's row itself: the write connection is opened by the first outcome's record.
        held = await wait_for(lambda: worker._own.get("write"))
        await held.invalidate()  # the database dropped the connection
        for i in range(3):
            await _queue(ctx, inbox, [f"second {i}"], sender=f"b{i}")
        await wait_for(lambda: len(callback_server.received) >= 6)
    finally:
        stop.set()
        await task
    assert worker._own == {}
    # Nothing kept after the worker stopped (the event consumer of the test context may hold one at either moment).
    assert ctx.db.engine.pool.checkedout() <= max(checked_out, 1)
    async with ctx.db.session() as s:
        statuses = (await s.scalars(select(Delivery.status).where(Delivery.inbox_id == inbox.id))).all()
    assert sorted(statuses) == ["sent"] * 6


def test_pacing_aims_at_95_percent_of_per_second_limits_and_closer_on_longer_windows():
    """The margin is a span of time (go-ahead tolerance + arrival jitter), so its share shrinks with the window."""
    for rate in (300, 150, 30, 1):
        assert paced(RateLimit("k", rate, 1.0)).rate == pytest.approx(rate * PACE_TARGET)
        assert paced(RateLimit("k", rate, 1.0)).rate >= 0.95 * rate
    assert paced(RateLimit("group", 20, 60.0)).rate == pytest.approx(20 * 60 / (60 + MARGIN_SECONDS))
    assert paced(RateLimit("group", 20, 60.0)).rate > 0.999 * 20
    # The catch-up burst and the arrival jitter together fit in the margin: even the go-aheads of
    # 1 s + the margin, at the paced rate, hold no more sends than the limit.
    for rate in (300, 150, 30, 1):
        assert paced(RateLimit("k", rate, 1.0)).rate * (1.0 + MARGIN_SECONDS) <= rate + 1e-9
    assert RATE_TOLERANCE < MARGIN_SECONDS


class _OneIdReceiver(CallbackServer):
    """A receiver that answers every message with the same platform id (a broken or lazy integration)."""

    async def handle(self, request: web.Request) -> web.Response:
        await super().handle(request)
        return web.json_response({"id": "same-id"})


async def test_a_platform_id_given_twice_stays_with_one_message(ctx):
    receiver = _OneIdReceiver()
    await receiver.start()
    try:
        inbox = await make_inbox(ctx, settings={"callback_url": receiver.url})
        ids = []
        for i in range(3):
            ids += await _queue(ctx, inbox, [f"第{i}条"], sender=f"u{i}")
        assert await OutboxWorker(ctx).run_until_idle() == 3
        async with ctx.db.session() as s:
            rows = (await s.execute(select(Delivery, Message).join(Message, Message.id == Delivery.message_id)
                                    .where(Delivery.id.in_(ids)))).all()
        # Every send is recorded as sent; the message id, unique per inbox, is kept by one message only.
        assert [d.status for d, _ in rows] == ["sent"] * 3
        assert [m.delivery_status for _, m in rows] == ["sent"] * 3
        assert sorted((m.external_id or "") for _, m in rows) == ["", "", "same-id"]
    finally:
        await receiver.stop()


async def test_a_claim_marks_the_front_of_the_line_sending_itself(ctx, callback_server):
    """The rows that would be at the front of their inbox's line at once are marked `sending` by the claim's
    own statement (one commit before their send, not two); the rest stay `claimed` until they near the front."""
    inbox = await make_inbox(ctx, settings={"callback_url": callback_server.url})
    ids = []
    for i in range(4):
        ids += await _queue(ctx, inbox, [f"第{i}条"], sender=f"f{i}")
    worker = OutboxWorker(ctx)
    worker._budget.rates[inbox.id] = 0.0  # noqa: SLF001 - an inbox known to have no rate limit
    claimed, _ = await worker._claim(10, budget=worker._budget, refresh=True)  # noqa: SLF001
    assert [d.id for d in claimed] == ids
    # No line yet: its least (ARM_MIN) is marked ahead.
    assert [d.status for d in claimed] == ["sending", "sending", "claimed", "claimed"]
    async with ctx.db.session() as s:
        rows = dict((await s.execute(select(Delivery.id, Delivery.status).where(Delivery.id.in_(ids)))).all())
    assert [rows[i] for i in ids] == ["sending", "sending", "claimed", "claimed"]
    for d in claimed:
        worker._start(d)  # noqa: SLF001

    async def all_sent() -> bool:
        async with ctx.db.session() as s:
            return set((await s.scalars(select(Delivery.status).where(Delivery.id.in_(ids)))).all()) == {"sent"}

    await wait_for(all_sent, timeout=10)
    assert sorted(r["delivery_id"] for r in callback_server.received) == ids
    assert not worker._unjoined  # noqa: SLF001 - every marked row joined its line


async def test_a_running_worker_records_sends_with_their_messages_and_pushes_them_live(ctx):
    """A running worker (on PostgreSQL: its own connections, a batch of plain sends recorded by one statement
    that commits alone) records each send's own platform id on its delivery and message, keeps a platform id
    given twice with one message, and pushes the outcome events live."""
    from scrm import events as ev

    receiver = _OneIdReceiver()
    await receiver.start()
    live: list[ev.Event] = []

    async def keep(event: ev.Event) -> None:
        live.append(event)

    ctx.bus.subscribe(keep, everywhere=True)
    try:
        inbox = await make_inbox(ctx, settings={"callback_url": receiver.url})
        ids = []
        for i in range(8):
            ids += await _queue(ctx, inbox, [f"第{i}条"], sender=f"r{i}")
        worker, stop = OutboxWorker(ctx), asyncio.Event()
        task = asyncio.create_task(worker.run(stop))

        async def all_recorded() -> bool:
            async with ctx.db.session() as s:
                return set((await s.scalars(select(Delivery.status).where(Delivery.id.in_(ids)))).all()) == {"sent"}

        try:
            await wait_for(all_recorded, timeout=10)
        finally:
            stop.set()
            await task
        async with ctx.db.session() as s:
            rows = (await s.execute(select(Delivery, Message).join(Message, Message.id == Delivery.message_id)
                                    .where(Delivery.id.in_(ids)))).all()
        assert [(d.status, d.external_id, d.lease_until) for d, _ in rows] == [("sent", "same-id", None)] * 8
        assert all(d.sent_at is not None and m.sent_at is not None for d, m in rows)
        assert [m.delivery_status for _, m in rows] == ["sent"] * 8
        assert sorted((m.external_id or "") for _, m in rows) == [""] * 7 + ["same-id"]
        await wait_for(lambda: {e.data.get("delivery_id") for e in live if e.name == ev.DELIVERY_UPDATED} >= set(ids))
        assert {e.data.get("message_id") for e in live if e.name == ev.MESSAGE_UPDATED} >= {m.id for _, m in rows}
    finally:
        await receiver.stop()


async def test_a_contacts_next_message_is_taken_by_the_statement_recording_the_previous_one(ctx, callback_server):
    """PostgreSQL, a running worker, an inbox without a rate limit whose channel sends idempotently: the
    statement recording a send also takes the contact's next due row (marked `sending`), so a contact's
    messages follow each other, in order, without a claim each (a new customer's answer behind its greeting)."""
    if ctx.db.dialect != "postgresql":
        pytest.skip("the worker's lone statements are PostgreSQL's")
    inbox = await make_inbox(ctx, settings={"callback_url": callback_server.url})
    ids = await _queue(ctx, inbox, ["一", "二", "三", "四"], sender="u1")
    other = await _queue(ctx, inbox, ["别人"], sender="u2")
    worker, stop = OutboxWorker(ctx), asyncio.Event()
    claims: list[list[int]] = []
    real_claim = worker._claim  # noqa: SLF001

    async def claim(*args, **kw):  # type: ignore[no-untyped-def]
        rows, more = await real_claim(*args, **kw)
        if rows:
            claims.append([r.id for r in rows])
        return rows, more

    worker._claim = claim  # type: ignore[method-assign]  # noqa: SLF001
    task = asyncio.create_task(worker.run(stop))
    try:
        await wait_for(lambda: len(callback_server.received) >= 5, timeout=10)
    finally:
        stop.set()
        await task
    assert [r["message"]["text"] for r in callback_server.received if r["recipient"]["id"] == "u1"] == [
        "一", "二", "三", "四"]
    # Claimed: the heads (a few at a time before the inbox's kind is known); each next one came with its
    # predecessor's outcome.
    assert sorted(sum(claims, [])) == sorted([ids[0], *other])
    async with ctx.db.session() as s:
        rows = (await s.execute(select(Delivery.status, Delivery.attempts, Delivery.claimed_by)
                                .where(Delivery.id.in_(ids)))).all()
    assert rows == [("sent", 1, worker.name)] * 4
