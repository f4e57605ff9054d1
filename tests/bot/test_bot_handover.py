"""The bot's answers with a running worker in the same process (`scrm worker`, `scrm serve`): on PostgreSQL
the consumer's batch hands its new deliveries straight to that worker (delivery/handoff.py). Customers
still get every answer once and in order, an answer waits behind an earlier message to the same contact,
and a worker that stops leaves nothing stranded."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import event, select, update

from scrm.db.models import Delivery, utcnow
from scrm.delivery.worker import OutboxWorker
from scrm.services.outbox import enqueue_message
from scrm.services.uow import unit_of_work
from tests.bot.helpers_bot import TUESDAY_MORNING, set_clock, settle
from tests.conftest import api_message, make_inbox, post_signed, wait_for


async def _running_worker(ctx: Any) -> tuple[OutboxWorker, asyncio.Event, asyncio.Task[None]]:
    stop = asyncio.Event()
    worker = OutboxWorker(ctx, name="handover-worker")
    task = asyncio.create_task(worker.run(stop))
    await wait_for(lambda: ctx.bus.deliveries is worker, timeout=5)
    return worker, stop, task


def _texts(server: Any, sender: str) -> list[str]:
    return [r["message"]["text"] for r in server.received if r["recipient"]["id"] == sender]


async def test_answers_reach_each_customer_once_and_in_order(client, ctx, callback_server) -> None:
    set_clock(ctx, TUESDAY_MORNING)
    inbox = (await make_inbox(ctx, settings={"callback_url": callback_server.url})).id
    worker, stop, task = await _running_worker(ctx)
    adopted: list[int] = []
    real_adopt = worker.adopt

    def adopt(rows: Any) -> None:
        adopted.extend(r.id for r in rows)
        real_adopt(rows)

    worker.adopt = adopt  # type: ignore[method-assign]
    try:
        customers = [f"c{n}" for n in range(6)]
        for round_ in range(3):
            replies = await asyncio.gather(*(post_signed(client, inbox, api_message(f"{c}-{round_}", sender=c,
                                                                                   text="运费怎么收？"))
                                             for c in customers))
            assert all(r.status == 200 for r in replies)
            want = round_ + 2  # a greeting, then an answer per round
            await wait_for(lambda want=want: all(len(_texts(callback_server, c)) >= want for c in customers),
                           timeout=20)
        await settle(ctx)
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
    async with ctx.db.session() as s:
        rows = (await s.execute(select(Delivery.recipient_id, Delivery.id, Delivery.status, Delivery.attempts)
                                .order_by(Delivery.id))).all()
    assert {r.status for r in rows} == {"sent"} and {r.attempts for r in rows} == {1}
    assert len(callback_server.received) == len(callback_server.processed) == len(rows)  # none sent twice
    for c in customers:  # a greeting, then one answer per question, in the order the bot wrote them
        sent_order = [r["delivery_id"] for r in callback_server.received if r["recipient"]["id"] == c]
        assert sent_order == sorted(sent_order) and len(sent_order) == 4, sent_order
    if ctx.db.dialect == "postgresql":  # answers went straight from the batch to the worker (not all: one
        assert adopted  # written while the contact's previous answer is still being recorded waits its turn)


async def test_an_answer_waits_behind_an_earlier_message_to_the_contact(client, ctx, callback_server) -> None:
    set_clock(ctx, TUESDAY_MORNING)
    inbox_row = await make_inbox(ctx, settings={"callback_url": callback_server.url})
    r = await post_signed(client, inbox_row.id, api_message("first", sender="c1", text="你好"))
    cid = int((await r.json())["results"][0]["conversation_id"])
    await settle(ctx)
    # An agent's message to the same contact, queued but not due yet (a retry waiting for its backoff).
    async with unit_of_work(ctx) as tx:
        from scrm.db.models import ContactIdentity, Conversation, Inbox

        conv = await tx.session.get(Conversation, cid)
        identity = await tx.session.get(ContactIdentity, conv.identity_id)
        inbox = await tx.session.get(Inbox, inbox_row.id)
        _, held = await enqueue_message(tx, inbox=inbox, conversation=conv, identity=identity, sender_kind="agent",
                                        text="agent first")
    async with ctx.db.transaction() as s:
        await s.execute(update(Delivery).where(Delivery.id == held.id)
                        .values(next_attempt_at=utcnow().replace(year=2100)))
    worker, stop, task = await _running_worker(ctx)
    try:
        await wait_for(lambda: len(_texts(callback_server, "c1")) >= 1, timeout=10)  # the greeting's round
        await post_signed(client, inbox_row.id, api_message("second", sender="c1", text="运费怎么收？"))
        await settle(ctx)
        await asyncio.sleep(0.5)
        assert "agent first" not in _texts(callback_server, "c1")
        assert len(_texts(callback_server, "c1")) == 1  # the answer waits for the agent's message
        async with ctx.db.transaction() as s:
            await s.execute(update(Delivery).where(Delivery.id == held.id).values(next_attempt_at=utcnow()))
        await wait_for(lambda: len(_texts(callback_server, "c1")) >= 3, timeout=10)
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
    texts = _texts(callback_server, "c1")
    assert texts[1] == "agent first" and len(texts) == 3


async def test_a_stopping_worker_takes_nothing_and_its_answers_are_sent_by_the_next(client, ctx,
                                                                                    callback_server) -> None:
    set_clock(ctx, TUESDAY_MORNING)
    inbox = (await make_inbox(ctx, settings={"callback_url": callback_server.url})).id
    worker, stop, task = await _running_worker(ctx)
    stop.set()
    await asyncio.wait_for(task, 20)
    assert ctx.bus.deliveries is None and not worker.reserve()
    r = await post_signed(client, inbox, api_message("m1", sender="c1", text="运费怎么收？"))
    assert r.status == 200
    await settle(ctx)
    async with ctx.db.session() as s:
        statuses = set((await s.scalars(select(Delivery.status))).all())
    assert statuses == {"queued"}  # nobody took them: still in the queue
    assert await OutboxWorker(ctx).run_until_idle() == 2
    assert len(_texts(callback_server, "c1")) == 2


async def test_an_answer_handed_over_is_written_once_already_sending(client, ctx, callback_server) -> None:
    """On PostgreSQL the batch inserts the answers its worker sends at once as `sending` for that worker:
    no second version of the row (an UPDATE with its index entries) before the send; the next statement
    that writes the row records the send."""
    if ctx.db.dialect != "postgresql":
        pytest.skip("PostgreSQL: SQLite's batches do not hand deliveries over")

    set_clock(ctx, TUESDAY_MORNING)
    inbox = (await make_inbox(ctx, settings={"callback_url": callback_server.url})).id
    worker, stop, task = await _running_worker(ctx)
    statements: list[str] = []

    def on_execute(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "deliveries" in statement and statement.lstrip().upper().startswith(("UPDATE", "WITH")):
            statements.append(statement)

    event.listen(ctx.db.engine.sync_engine, "before_cursor_execute", on_execute)
    try:
        r = await post_signed(client, inbox, api_message("m1", sender="c1", text="运费怎么收？"))
        assert r.status == 200
        await wait_for(lambda: len(_texts(callback_server, "c1")) >= 2, timeout=10)  # greeting, answer
        await settle(ctx)
    finally:
        event.remove(ctx.db.engine.sync_engine, "before_cursor_execute", on_execute)
        stop.set()
        await asyncio.wait_for(task, 20)
    async with ctx.db.session() as s:
        rows = (await s.execute(select(Delivery.status, Delivery.attempts, Delivery.claimed_by)
                                .order_by(Delivery.id))).all()
    assert [(r.status, r.attempts) for r in rows] == [("sent", 1), ("sent", 1)]
    # The greeting went in `sending`; the answer behind it (same contact) waited in the queue and was taken
    # by the statement that recorded the greeting's send. No statement of its own marked either `sending`.
    # The worker's periodic sweep of expired leases (recovery.recover_stale: claimed -> queued) may run meanwhile;
    # it marks nothing `sending`.
    marks = [st for st in statements if st.lstrip().upper().startswith("UPDATE") and "claimed_by" in st
             and "lease_until <" not in st]
    assert not marks, marks
