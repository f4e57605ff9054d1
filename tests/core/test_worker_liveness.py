"""Worker heartbeats: a worker whose count stops is found dead after five of the watcher's heartbeats and its
deliveries are recovered then; a watcher that could not beat itself judges nobody."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import select, update

from scrm.db.models import ContactIdentity, Conversation, Delivery, Inbox, WorkerHeartbeat, utcnow
from scrm.delivery.liveness import DEAD_AFTER_BEATS, Liveness
from scrm.delivery.worker import OutboxWorker
from scrm.domain import InboundMessage
from scrm.services.conversations.ingest import ingest
from scrm.services.outbox import enqueue_message
from scrm.services.uow import unit_of_work
from tests.conftest import make_inbox


async def test_a_worker_whose_heartbeat_stops_is_found_dead_after_five_beats(ctx):
    interval = 0.05
    quiet = Liveness(ctx, "quiet", interval)
    await quiet.beat()  # beats once, then dies
    watcher = Liveness(ctx, "watcher", interval)
    loop = asyncio.get_running_loop()
    started = loop.time()
    dead: set[str] = set()
    while not dead and loop.time() - started < 5:
        dead = await watcher.beat()
        if not dead:
            await asyncio.sleep(interval)
    assert dead == {"quiet"}
    assert loop.time() - started >= DEAD_AFTER_BEATS * interval  # watched for five heartbeats' time first


async def test_a_beating_worker_is_never_dead_and_a_stopped_one_leaves_no_row(ctx):
    interval = 0.03
    alive, watcher = Liveness(ctx, "alive", interval), Liveness(ctx, "watcher", interval)
    for _ in range(3 * DEAD_AFTER_BEATS):
        await alive.beat()
        assert await watcher.beat() == set()
        await asyncio.sleep(interval)
    await alive.stop()
    async with ctx.db.session() as s:
        assert await s.get(WorkerHeartbeat, "alive") is None


async def test_the_dead_workers_deliveries_are_recovered_before_their_lease_ends(ctx):
    inbox = await make_inbox(ctx, "memory", name="sim")
    [out] = await ingest(ctx, inbox, [InboundMessage("m-1", "cust", "hi")])
    async with unit_of_work(ctx) as tx:
        conv = await tx.session.get(Conversation, out.conversation_id)
        ident = await tx.session.get(ContactIdentity, conv.identity_id)
        box = await tx.session.get(Inbox, inbox.id)
        for text in ("first", "second"):
            await enqueue_message(tx, inbox=box, conversation=conv, identity=ident, sender_kind="agent", text=text)
    async with ctx.db.transaction() as s:  # a worker that died holding both, with most of its lease left
        ids = sorted((await s.scalars(select(Delivery.id))).all())
        lease = utcnow() + timedelta(seconds=60)
        await s.execute(update(Delivery).where(Delivery.id == ids[0]).values(status="sending", claimed_by="gone",
                                                                               lease_until=lease))
        await s.execute(update(Delivery).where(Delivery.id == ids[1]).values(status="claimed", claimed_by="gone",
                                                                               lease_until=lease))
    worker = OutboxWorker(ctx)
    assert await worker.recover_stale() == 0  # the lease alone: nothing yet
    assert await worker.recover_stale(dead={"gone"}) == 2
    async with ctx.db.session() as s:
        rows = {d.id: d for d in (await s.scalars(select(Delivery))).all()}
    # memory is not an idempotent channel: the `sending` one may have gone out, so it is reported
    assert rows[ids[0]].status == "failed" and rows[ids[0]].error_code == "unknown_outcome"
    assert rows[ids[1]].status == "queued" and rows[ids[1]].claimed_by is None
