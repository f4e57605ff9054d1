"""The event log: follow-up work is logged with the change, worked once across consumers, in order per
conversation, with each listener's writes and the consumer's progress in one transaction."""

from __future__ import annotations

import asyncio
import collections
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text, update

from scrm import events as ev
from scrm.bootstrap import build_context
from scrm.db.models import Contact, ContactIdentity, Conversation, utcnow
from scrm.db.models_events import EventRecord
from scrm.event_log import prune
from scrm.services.outbox import enqueue_message
from scrm.services.uow import unit_of_work
from tests.conftest import make_inbox, wait_for


async def _log(ctx: Any, conversation_id: int, n: int) -> None:
    async with unit_of_work(ctx) as tx:
        tx.emit("test.step", conversation_id=conversation_id, n=n)


async def _rows(ctx: Any) -> list[EventRecord]:
    async with ctx.db.session() as s:
        return list(await s.scalars(select(EventRecord).order_by(EventRecord.id)))


async def test_events_are_worked_once_across_consumers_in_order_per_conversation(settings) -> None:
    producer = await build_context(settings)  # `scrm serve --no-worker`: logs, works nothing
    workers = [await build_context(settings) for _ in range(2)]
    seen: dict[int, list[int]] = collections.defaultdict(list)
    by_worker: collections.Counter[int] = collections.Counter()
    try:
        for index, worker in enumerate(workers):
            async def step(event: ev.Event, index: int = index) -> None:
                await asyncio.sleep(0.002)
                seen[event.data["conversation_id"]].append(event.data["n"])
                by_worker[index] += 1

            worker.bus.subscribe(step, "test.step")
            worker.bus.consume_work()
        async def conversation(c: int) -> None:  # one conversation's changes commit one after the other
            for n in range(10):
                await _log(producer, c, n)

        await asyncio.gather(*(conversation(c) for c in range(1, 9)))
        await wait_for(lambda: sum(len(v) for v in seen.values()) >= 80, timeout=30)
        await producer.bus.drain(10)
        await asyncio.sleep(0.2)  # nothing arrives late
    finally:
        for context in (producer, *workers):
            await context.close()
    assert sum(len(v) for v in seen.values()) == 80  # each event worked once
    assert all(sorted(v) == v for v in seen.values()), seen  # in order within each conversation
    assert all(row.worked_at is not None and row.error is None for row in await _rows(producer))


async def test_a_failing_listener_undoes_only_its_own_writes_and_the_failure_is_recorded(ctx) -> None:
    async with ctx.db.transaction() as s:
        contact = Contact(name="before", attributes={})
        s.add(contact)
        await s.flush()
        contact_id = contact.id

    async def renames(event: ev.Event) -> None:
        async with unit_of_work(ctx) as tx:
            await tx.session.execute(update(Contact).where(Contact.id == contact_id).values(name="renamed"))

    async def breaks(event: ev.Event) -> None:
        async with unit_of_work(ctx) as tx:
            await tx.session.execute(update(Contact).where(Contact.id == contact_id).values(email="x@example.com"))
            raise RuntimeError("listener bug")

    ctx.bus.subscribe(renames, "test.step")
    ctx.bus.subscribe(breaks, "test.step")
    await _log(ctx, 1, 0)
    await ctx.bus.drain(10)
    [row] = [r for r in await _rows(ctx) if r.name == "test.step"]
    assert row.worked_at is not None  # not retried forever
    assert "listener bug" in (row.error or "")
    async with ctx.db.session() as s:
        contact = await s.get(Contact, contact_id)
        assert contact is not None
        assert (contact.name, contact.email) == ("renamed", None)  # the other listener's write is kept


async def test_a_batch_that_fails_to_commit_is_worked_again_and_its_effects_happen_once(ctx) -> None:
    async with ctx.db.transaction() as s:
        contact = Contact(name="n", attributes={"count": 0})
        s.add(contact)
        await s.flush()
        contact_id = contact.id
    calls = collections.Counter[int]()

    async def counts(event: ev.Event) -> None:
        calls[event.data["n"]] += 1
        async with unit_of_work(ctx) as tx:
            row = await tx.session.get(Contact, contact_id)
            assert row is not None
            row.attributes = {"count": row.attributes["count"] + 1}
        if calls[event.data["n"]] == 1 and event.data["n"] == 2:
            raise ConnectionResetError("the database went away mid-batch")  # the whole batch rolls back

    ctx.bus.subscribe(counts, "test.step")
    for n in range(4):
        await _log(ctx, 7, n)
    await ctx.bus.drain(10)
    async with ctx.db.session() as s:
        contact = await s.get(Contact, contact_id)
        assert contact is not None
        assert contact.attributes == {"count": 4}  # every event's effect once, though some ran twice
    assert calls[2] == 2
    assert all(r.worked_at is not None for r in await _rows(ctx))


async def test_worked_events_are_pruned_after_the_retention_window_and_unworked_never(settings) -> None:
    ctx = await build_context(settings)  # no consumer: the events stay unworked
    try:
        for n in range(3):
            await _log(ctx, 1, n)
        rows = await _rows(ctx)
        async with ctx.db.transaction() as s:
            await s.execute(update(EventRecord).where(EventRecord.id == rows[0].id)
                            .values(worked_at=utcnow() - timedelta(hours=30)))
            await s.execute(update(EventRecord).where(EventRecord.id == rows[1].id)
                            .values(worked_at=utcnow() - timedelta(hours=2)))
        assert await prune(ctx.db, retention_hours=24) == 1
        async with ctx.db.session() as s:
            left = list(await s.scalars(select(EventRecord.id).order_by(EventRecord.id)))
            assert left == [rows[1].id, rows[2].id]  # kept for debugging; the unworked one waits
            assert await s.scalar(select(func.count()).select_from(EventRecord).where(EventRecord.worked_at.is_(None))) == 1
    finally:
        await ctx.close()


async def test_a_batch_writes_its_conversations_at_its_end_and_a_message_stored_meanwhile_stays_waiting(ctx) -> None:
    """Ingest moves a conversation's clocks without a turn: a batch answering that conversation must not
    hold its row from the reply to the commit (on PostgreSQL the row is free mid-batch), and a customer
    message stored meanwhile stays the latest, the conversation still waiting for an answer."""
    inbox = await make_inbox(ctx)
    asked = utcnow()
    async with ctx.db.transaction() as s:
        contact = Contact(name="顾客", attributes={})
        s.add(contact)
        await s.flush()
        identity = ContactIdentity(inbox_id=inbox.id, external_id="held-back", contact_id=contact.id, attributes={})
        s.add(identity)
        await s.flush()
        conv = Conversation(inbox_id=inbox.id, contact_id=contact.id, identity_id=identity.id, status="open",
                            handler="bot", last_activity_at=asked, waiting_since=asked, last_message_preview="在吗")
        s.add(conv)
        await s.flush()
        conv_id = conv.id
    replied, release = asyncio.Event(), asyncio.Event()

    async def bot_round(event: ev.Event) -> None:
        async with unit_of_work(ctx) as tx:
            row = await tx.session.get(Conversation, conv_id)
            assert row is not None
            await enqueue_message(tx, inbox=inbox, conversation=row, identity=identity, sender_kind="bot", text="您好")
            row.bot_state = {"step": "answered"}
            assert row.waiting_since is None  # the listener sees its own reply at once
        replied.set()
        await release.wait()

    ctx.bus.subscribe(bot_round, "test.step")
    await _log(ctx, conv_id, 0)
    working = asyncio.create_task(ctx.bus.drain(10))
    await asyncio.wait_for(replied.wait(), 10)
    later = utcnow() + timedelta(seconds=5)
    if not ctx.db.is_sqlite:
        async with ctx.db.transaction() as s:  # as ingest: relative clocks, no turn; the row is not locked
            await s.execute(text("SET LOCAL lock_timeout = '2s'"))
            await s.execute(update(Conversation).where(Conversation.id == conv_id).values(
                last_activity_at=later, last_message_preview="还在吗",
                waiting_since=func.coalesce(Conversation.waiting_since, later)))
    release.set()
    await asyncio.wait_for(working, 20)
    async with ctx.db.session() as s:
        stored = await s.get(Conversation, conv_id)
        assert stored is not None
        assert stored.bot_state == {"step": "answered"}
        if not ctx.db.is_sqlite:
            assert (stored.last_message_preview, stored.last_activity_at) == ("还在吗", later)
            # Still waiting for an answer (since the stored row's time, as when ingest commits before a reply).
            assert stored.waiting_since is not None
        else:
            assert stored.last_message_preview == "您好" and stored.waiting_since is None


async def test_a_wake_up_starts_one_waiting_consumer_task_and_a_task_publishing_its_own_events_none() -> None:
    """Every empty claim is a transaction: a new event wakes one idle task, not every one of them."""
    from types import SimpleNamespace

    from scrm.event_log import EventConsumer

    looks: list[asyncio.Task[Any] | None] = []
    consumer = EventConsumer(SimpleNamespace(), SimpleNamespace(is_sqlite=False),  # type: ignore[arg-type]
                             SimpleNamespace(batch_size=16, consumers=3, poll_interval=60.0))  # type: ignore[arg-type]

    async def work_once() -> int:
        looks.append(asyncio.current_task())
        return 0

    consumer.work_once = work_once  # type: ignore[method-assign]
    consumer.start()
    try:
        await wait_for(lambda: len(consumer._idle) == 3, timeout=5)  # noqa: SLF001 - each looked once, then waits
        assert len(looks) == 3
        consumer.wake()
        await asyncio.sleep(0.05)
        assert len(looks) == 4  # one task looked again
        await wait_for(lambda: len(consumer._idle) == 3, timeout=5)  # noqa: SLF001

        async def own_publish() -> None:  # as a task of the consumer publishing after its batch
            consumer.wake()
        consumer._wakes[asyncio.current_task()] = asyncio.Event()  # noqa: SLF001 - this test task as one of them
        await own_publish()
        await asyncio.sleep(0.05)
        assert len(looks) == 4
    finally:
        await consumer.stop()


async def test_a_batch_of_events_is_logged_in_its_order_with_its_payloads(ctx) -> None:
    """One statement for many events (PostgreSQL: arrays): ids in the events' order, payloads as given."""
    from scrm.event_log import append

    events = [ev.Event("test.step", {"conversation_id": 7 if i % 2 else None, "n": i, "text": f"第{i}条 \"q\""})
              for i in range(40)]
    async with ctx.db.transaction() as s:
        await append(s, events)
    rows = await _rows(ctx)
    assert [r.payload for r in rows] == [e.data for e in events]
    assert [r.conversation_id for r in rows] == [e.data["conversation_id"] for e in events]
    assert len({r.created_at for r in rows}) == 1 and all(r.worked_at is None for r in rows)


async def test_a_backlog_whose_events_take_as_long_in_any_batch_is_worked_in_short_batches(ctx) -> None:
    """Every event of a batch waits for the whole batch: a backlog whose work per event is the same in a
    longer batch (here 40 ms each) is not worked in batches of 64 (each event then waited four times as
    long for the same rate); a longer batch is tried once, and dropped."""
    async def slow(event: ev.Event) -> None:
        await asyncio.sleep(0.04)

    ctx.bus.subscribe(slow, "test.step")
    async with unit_of_work(ctx) as tx:  # one commit: the consumers find a backlog of 100 events
        for n in range(100):
            tx.emit("test.step", conversation_id=1000 + n % 40, n=n)
    await ctx.bus.drain(30)
    async with ctx.db.session() as s:
        sizes = list(await s.scalars(select(func.count()).select_from(EventRecord)
                                     .where(EventRecord.name == "test.step").group_by(EventRecord.worked_at)))
    assert sum(sizes) == 100
    assert max(sizes) <= (16 if ctx.db.is_sqlite else 32), sorted(sizes)


def test_batches_grow_while_longer_ones_work_faster_and_return_to_the_base_size_without_a_backlog() -> None:
    """The batch sizer: when a batch's own statements dominate (a longer batch works more events per
    second) a backlog is worked in the longest batches; when the work per event dominates, in the base
    size (after one try of the double); a short batch (no backlog) goes back to the base size."""
    from scrm.batch_sizer import BatchSizer

    now = [0.0]
    sizer = BatchSizer(16, 64, clock=lambda: now[0])

    def run(per_batch: float, per_event: float, batches: int) -> list[int]:
        seen = []
        for _ in range(batches):
            limit = sizer.limit
            seen.append(limit)
            took = per_batch + per_event * limit
            now[0] += took
            sizer.worked(limit, limit, took)
        return seen

    assert run(0.05, 0.0005, 6) == [16, 32, 64, 64, 64, 64]  # the batch's statements dominate: grow, stay
    sizer.worked(3, 64, 0.05)  # caught up
    assert sizer.limit == 16
    now[0] += 60  # later, another load: the work per event dominates
    assert run(0.001, 0.005, 6) == [16, 32, 16, 16, 16, 16]


def test_claims_are_spaced_while_events_arrive_fast_never_at_a_low_rate_or_after_a_full_batch() -> None:
    """Linger (BatchSizer.gap): a claim costs the same statements for 2 events or 16, so while events arrive
    fast a process spaces its claims to find more of them waiting; a lone message is never held up, nor a
    backlog (a full batch: the events are waiting already)."""
    from scrm import batch_sizer as bs

    now = [0.0]
    sizer = bs.BatchSizer(16, 64, clock=lambda: now[0])
    for _ in range(5):  # 10 events per second: claims find one event each
        sizer.claimed(1, 16)
        now[0] += 0.1
    assert sizer.gap() == 0.0
    for _ in range(100):  # 400 events per second, claimed as they come (4 per 10 ms)
        sizer.claimed(4, 16)
        now[0] += 0.01
    assert sizer.gap() == bs.LINGER
    # Room for what arrives in the gap (400/s x 50 ms = 20 events, at FILL), within the sizer's bounds.
    assert sizer.claim_limit(bs.LINGER) == pytest.approx(400 * bs.LINGER / bs.FILL, abs=2)
    assert sizer.claim_limit(0.0) == sizer.limit == 16
    sizer.claimed(16, 16)  # a full batch: claim again at once
    assert sizer.gap() == 0.0
    sizer.claimed(5, 16)
    assert sizer.gap() > 0
    now[0] += 1.0  # the rate fell (nothing claimed within the window)
    assert sizer.gap() == 0.0


def test_processes_sharing_the_log_space_their_claims_as_one_process_would() -> None:
    """Two worker processes each claim half of the events: each counts the cluster's rate (from how far the
    log's ids moved past its own share) against the linger threshold and spaces its claims by LINGER per
    process, so the cluster claims about once per LINGER and each claim finds as many events as one
    process's would; one process alone, or one whose share is unclear, spaces them as before."""
    from scrm import batch_sizer as bs

    def sizer_claiming(own: int, every: int, per_second: float) -> bs.BatchSizer:
        """A process whose claims of `own` events come while the log's ids move `own * every` (1 of `every`)."""
        now = [0.0]
        sizer = bs.BatchSizer(16, 64, clock=lambda: now[0])
        top = 1000
        for _ in range(int(per_second * bs.RATE_WINDOW / own) + 1):
            top += own * every
            sizer.claimed(own, 16, top)
            now[0] += own / per_second
        return sizer

    alone = sizer_claiming(4, 1, 400.0)  # 400 events/s, all of them this process's
    assert alone.peers() == 1 and alone.gap() == bs.LINGER
    pair = sizer_claiming(4, 2, 200.0)  # 400 events/s cluster-wide, half of them this process's
    assert pair.peers() == 2
    assert pair.gap() == 2 * bs.LINGER  # the two processes' claims together: one per LINGER
    # Each claim has room for what the cluster logs in one LINGER, as one process's claim has.
    assert pair.claim_limit(pair.gap()) == pytest.approx(alone.claim_limit(alone.gap()), abs=2)
    # 100 events/s of its own: one process alone does not linger, one of two (200/s in all) does.
    assert sizer_claiming(2, 1, 100.0).gap() == 0.0
    assert sizer_claiming(2, 2, 100.0).gap() == 2 * bs.LINGER
    assert sizer_claiming(2, 10, 100.0).peers() == bs.MAX_PEERS  # gaps in the ids: counted on up to MAX_PEERS
    unknown = bs.BatchSizer(16, 64)
    for _ in range(40):
        unknown.claimed(4, 16)  # no ids (the claims of an older caller): one process
    assert unknown.peers() == 1
