"""Outbox worker semantics: retries, permanent failures, ordering, crash recovery without duplicates."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from scrm.db.models import ContactIdentity, Conversation, Delivery, Inbox, Message, utcnow
from scrm.delivery.worker import UNKNOWN_OUTCOME, OutboxWorker
from scrm.domain import InboundMessage
from scrm.services.conversations.ingest import ingest
from scrm.services.outbox import enqueue_message
from scrm.services.uow import unit_of_work
from tests.conftest import make_inbox


async def _queue(ctx, inbox, texts, sender="u1"):
    [out] = await ingest(ctx, inbox, [InboundMessage(f"in-{sender}-{texts[0]}", sender, "hi")])
    ids = []
    for text in texts:
        async with unit_of_work(ctx) as tx:
            conv = await tx.session.get(Conversation, out.conversation_id)
            ident = await tx.session.get(ContactIdentity, conv.identity_id)
            ib = await tx.session.get(Inbox, inbox.id)
            msg, d = await enqueue_message(tx, inbox=ib, conversation=conv, identity=ident, sender_kind="bot", text=text)
        ids.append(d.id)
    return ids


async def test_transient_errors_retry_then_succeed(ctx, callback_server):
    inbox = await make_inbox(ctx, settings={"callback_url": callback_server.url})
    [did] = await _queue(ctx, inbox, ["retry me"])
    callback_server.fail_next = [503, 500]
    worker = OutboxWorker(ctx)
    for _ in range(3):
        await worker.run_until_idle()
        async with ctx.db.transaction() as s:  # skip the backoff wait
            await s.execute(update(Delivery).where(Delivery.status == "queued").values(next_attempt_at=utcnow()))
    async with ctx.db.session() as s:
        d = await s.get(Delivery, did)
    assert d.status == "sent" and d.attempts == 3 and len(callback_server.received) == 1


async def test_gives_up_after_max_attempts_with_the_reason(ctx, callback_server, settings):
    inbox = await make_inbox(ctx, settings={"callback_url": callback_server.url})
    [did] = await _queue(ctx, inbox, ["never"])
    callback_server.fail_next = [503] * 20
    worker = OutboxWorker(ctx)
    for _ in range(settings.worker.max_attempts + 1):
        await worker.run_until_idle()
        async with ctx.db.transaction() as s:
            await s.execute(update(Delivery).where(Delivery.status == "queued").values(next_attempt_at=utcnow()))
    async with ctx.db.session() as s:
        d = await s.get(Delivery, did)
        m = await s.get(Message, d.message_id)
    assert d.status == "failed" and d.attempts == settings.worker.max_attempts
    assert m.delivery_status == "failed" and "HTTP 503" in m.delivery_error


async def test_deliveries_to_one_contact_keep_their_order(ctx, callback_server):
    inbox = await make_inbox(ctx, settings={"callback_url": callback_server.url})
    await _queue(ctx, inbox, [f"#{i}" for i in range(6)])
    callback_server.fail_next = [503]  # the first one fails once: later ones must wait for it
    worker = OutboxWorker(ctx)
    for _ in range(4):
        await worker.run_until_idle()
        async with ctx.db.transaction() as s:
            await s.execute(update(Delivery).where(Delivery.status == "queued").values(next_attempt_at=utcnow()))
    assert [r["message"]["text"] for r in callback_server.received] == [f"#{i}" for i in range(6)]


async def test_unreachable_callback_is_retried_not_failed(ctx):
    inbox = await make_inbox(ctx, settings={"callback_url": "http://127.0.0.1:9/nothing"})
    [did] = await _queue(ctx, inbox, ["x"])
    await OutboxWorker(ctx).run_until_idle()
    async with ctx.db.session() as s:
        d = await s.get(Delivery, did)
    assert d.status == "queued" and "unreachable" in d.last_error and d.next_attempt_at > utcnow()


async def _crash_as(ctx, did, status):
    async with ctx.db.transaction() as s:
        await s.execute(update(Delivery).where(Delivery.id == did).values(
            status=status, claimed_by="dead-worker", lease_until=utcnow() - timedelta(seconds=1)))


async def test_claimed_but_unsent_rows_are_requeued_after_a_crash(ctx, callback_server):
    inbox = await make_inbox(ctx, settings={"callback_url": callback_server.url})
    [did] = await _queue(ctx, inbox, ["claimed"])
    await _crash_as(ctx, did, "claimed")
    await OutboxWorker(ctx).run_until_idle()
    assert len(callback_server.received) == 1


async def test_in_flight_row_is_resent_with_the_same_key_on_idempotent_channels(ctx, callback_server):
    inbox = await make_inbox(ctx, settings={"callback_url": callback_server.url})
    [did] = await _queue(ctx, inbox, ["sending"])
    # The dead worker had already delivered it once before dying.
    async with ctx.db.session() as s:
        key = (await s.get(Delivery, did)).idempotency_key
    callback_server.processed[key] = {"pre": True}
    await _crash_as(ctx, did, "sending")
    await OutboxWorker(ctx).run_until_idle()
    assert len(callback_server.processed) == 1  # the receiver saw the same key: processed once


async def test_in_flight_row_on_non_idempotent_channel_fails_as_unknown(ctx):
    inbox = await make_inbox(ctx, "memory", name="sim")
    [did] = await _queue(ctx, inbox, ["maybe sent"])
    await _crash_as(ctx, did, "sending")
    await OutboxWorker(ctx).run_until_idle()
    async with ctx.db.session() as s:
        d = await s.get(Delivery, did)
        m = await s.get(Message, d.message_id)
    assert d.status == "failed" and d.last_error == UNKNOWN_OUTCOME and m.delivery_status == "failed"


async def test_graceful_shutdown_releases_claimed_rows(ctx, callback_server):
    inbox = await make_inbox(ctx, settings={"callback_url": callback_server.url})
    ids = await _queue(ctx, inbox, ["a"], sender="x1") + await _queue(ctx, inbox, ["b"], sender="x2")
    worker = OutboxWorker(ctx)
    claimed = await worker.claim(10)
    assert {d.id for d in claimed} == set(ids)
    assert await worker.release_claimed() == 2
    async with ctx.db.session() as s:
        statuses = (await s.scalars(select(Delivery.status))).all()
    assert statuses == ["queued", "queued"]


async def test_two_workers_never_claim_the_same_row(ctx, callback_server):
    inbox = await make_inbox(ctx, settings={"callback_url": callback_server.url})
    for i in range(10):
        await _queue(ctx, inbox, [f"m{i}"], sender=f"c{i}")
    a, b = OutboxWorker(ctx, name="a"), OutboxWorker(ctx, name="b")
    import asyncio

    got_a, got_b = await asyncio.gather(a.claim(10), b.claim(10))
    ids_a, ids_b = {d.id for d in got_a}, {d.id for d in got_b}
    assert not ids_a & ids_b and len(ids_a | ids_b) == 10
