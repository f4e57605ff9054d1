"""PostgreSQL: ingest and the worker's batches lock conversation rows in one order (ascending id).

A batch of acknowledgements (scrm_ingest_batch) moves the clocks of several conversations, and a worker's
event-log batch writes several at its end. When one locked them in the senders' order and the other in id
order, each could hold a row the other waited for: PostgreSQL broke the deadlock only after deadlock_timeout
(1 s), and every acknowledgement queued behind the batch waited that second (bench/bot_reply.py's ack runs
stalled at p99 ≈ 1.05 s).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from scrm.context import AppContext
from scrm.db.models import ContactIdentity, Conversation, Inbox, Message
from scrm.domain import InboundMessage
from scrm.event_batch import lock_in_order
from scrm.services.conversations.ingest import group_commit, ingest
from tests.conftest import make_inbox

pytestmark = pytest.mark.usefixtures("backend")


async def _conversation_of(ctx: AppContext, inbox_id: int, sender: str) -> int:
    async with ctx.db.session() as s:
        conv_id = await s.scalar(select(Conversation.id).join(ContactIdentity, Conversation.identity_id == ContactIdentity.id)
                                 .where(ContactIdentity.inbox_id == inbox_id, ContactIdentity.external_id == sender))
    assert conv_id is not None
    return int(conv_id)


async def _many_conversations(ctx: AppContext, inbox: Inbox, count: int = 5000) -> None:
    """A table the size of a live desk's, analyzed: the planner then joins a batch's conversations by their
    index, one after another in the batch's order (on a nearly empty table it reads the whole table instead,
    in storage order, which hid the problem)."""
    group_commit(ctx).fast = False  # the Python path: the function is planned first on the full table
    await ingest(ctx, inbox, [InboundMessage("filler", "filler", "hello")])
    async with ctx.db.engine.begin() as conn:
        await conn.execute(text(
            "INSERT INTO conversations (inbox_id, contact_id, identity_id, status, handler, priority, last_activity_at,"
            " created_at, unread_count, bot_state, meta) "
            "SELECT c.inbox_id, c.contact_id, c.identity_id, 'resolved', 'bot', 'normal', c.last_activity_at - n * interval '1 minute',"
            " c.created_at, 0, '{}', '{}' FROM conversations c, generate_series(1, :count) AS n WHERE c.inbox_id = :inbox"),
            {"count": count, "inbox": inbox.id})
        await conn.execute(text("ANALYZE conversations"))


async def _waits_for_a_lock(ctx: AppContext, timeout: float = 10.0) -> None:
    """Until some other backend of this database waits for a row lock."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        async with ctx.db.engine.connect() as conn:
            waiting = await conn.scalar(text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"))
        if waiting:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("ingest never waited for the worker's row lock")


@pytest.mark.parametrize("status", ["open", "resolved", "snoozed"])
async def test_a_batch_of_acknowledgements_waits_for_a_workers_batch_instead_of_deadlocking(
        quiet_ctx: AppContext, status: str) -> None:
    """`status`: the higher conversation's before the batch; a resolved one opens again to the bot, a snoozed one
    to its handler (the function used to write those in its senders' loop, locking them in that order)."""
    ctx = quiet_ctx
    inbox = await make_inbox(ctx)
    await _many_conversations(ctx, inbox)
    group_commit(ctx).fast = True  # the batch function
    # "b" writes first, so its conversation has the lower id; in a batch the senders go in code-point order (a, b).
    for sender in ("b", "a"):
        await ingest(ctx, inbox, [InboundMessage(f"first-{sender}", sender, "hello")])
    low, high = await _conversation_of(ctx, inbox.id, "b"), await _conversation_of(ctx, inbox.id, "a")
    assert low < high
    if status != "open":
        async with ctx.db.engine.begin() as conn:
            await conn.execute(text("UPDATE conversations SET status = :status, handler = 'human', "
                                    "snoozed_until = now() + interval '1 hour' WHERE id = :id"),
                               {"status": status, "id": high})

    async with ctx.db.engine.connect() as worker:  # a worker's batch, writing its conversations in id order
        # Shorter than deadlock_timeout (1 s): were the row held by ingest, this fails before PostgreSQL would
        # break the deadlock by aborting ingest's batch (which ingest then runs again, a second later).
        await worker.execute(text("SET lock_timeout = '300ms'"))
        await worker.execute(text("UPDATE conversations SET unread_count = 0 WHERE id = :id"), {"id": low})
        acknowledged = asyncio.create_task(ingest(ctx, inbox, [InboundMessage("second-a", "a", "and a question"),
                                                               InboundMessage("second-b", "b", "another")]))
        await _waits_for_a_lock(ctx)
        # Ingest waits for `low` holding nothing the worker needs: the worker's next row is free. (Locked in the
        # senders' order, ingest held `high` already: this UPDATE waited until one of the two was aborted.)
        await worker.execute(text("UPDATE conversations SET unread_count = 0 WHERE id = :id"), {"id": high})
        await worker.commit()
        outcomes = await asyncio.wait_for(acknowledged, 10)

    assert [o.duplicate for o in outcomes] == [False, False] and all(o.message_id for o in outcomes)
    async with ctx.db.session() as s:
        unread = dict((await s.execute(select(Conversation.id, Conversation.unread_count)
                                       .where(Conversation.id.in_([low, high])))).all())
        texts = set(await s.scalars(select(Message.text).where(Message.conversation_id.in_([low, high]))))
    assert unread == {low: 1, high: 1}  # the worker's write first, then the acknowledged message
    async with ctx.db.session() as s:
        reopened = await s.get(Conversation, high)
    assert reopened is not None and reopened.status == "open" and reopened.snoozed_until is None
    assert reopened.handler == ("human" if status == "snoozed" else "bot")
    assert {"and a question", "another"} <= texts


async def test_a_workers_batch_locks_the_lower_conversations_before_one_it_writes_mid_batch(quiet_ctx: AppContext) -> None:
    """A handoff writes its conversation mid-batch (its row stays locked to the commit); the batch's other
    conversations are written at its end in id order. Those below the handoff's are locked first, so the
    batch's locks still go up in id order."""
    ctx = quiet_ctx
    inbox = await make_inbox(ctx)
    for sender in ("x", "y", "z"):
        await ingest(ctx, inbox, [InboundMessage(f"m-{sender}", sender, "hello")])
    first, middle, last = sorted([await _conversation_of(ctx, inbox.id, s) for s in ("x", "y", "z")])

    async def locked(conn: Any, conversation_id: int) -> bool:
        try:
            async with conn.begin_nested():
                await conn.execute(select(Conversation.id).where(Conversation.id == conversation_id)
                                   .with_for_update(nowait=True, key_share=False))
            return False
        except DBAPIError:
            return True

    async with ctx.db.shared_transaction() as shared:
        shared.turns = {first, middle, last}
        await lock_in_order(shared, middle)
        async with ctx.db.engine.connect() as other:
            assert await locked(other, first)
            assert not await locked(other, middle)  # the caller's own UPDATE locks it next
            assert not await locked(other, last)  # written at the batch's end, after `middle`
            await other.rollback()
        await lock_in_order(shared, first)  # below what is locked already: nothing more
        assert shared.conversations_locked_to == middle
