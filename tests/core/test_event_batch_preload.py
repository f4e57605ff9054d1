"""What a consumer batch reads once for all its events (event_batch.preload) and what it spares the rounds
after it: one statement text whatever the batch's size, the bot's first-message question answered without
a statement of its own, message ids taken with the reads, and the bot's plain rows inserted once per table."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event, func, select

from scrm import events as ev
from scrm.db.models import AuditLog, Contact, ContactIdentity, Conversation, Message, utcnow
from scrm.event_batch import hold_back_conversation_writes, preload
from scrm.services.bot.rounds import apply_actions
from scrm.services.conversations.actions import do_set_handler
from scrm.services.outbox import batch_message_id, defer_deliveries, insert_deferred_deliveries
from scrm.services.uow import unit_of_work
from tests.conftest import make_inbox


@contextmanager
def _statements(ctx: Any) -> Iterator[list[str]]:
    sent: list[str] = []

    def on_execute(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        sent.append(" ".join(statement.split()))

    event.listen(ctx.db.engine.sync_engine, "before_cursor_execute", on_execute)
    try:
        yield sent
    finally:
        event.remove(ctx.db.engine.sync_engine, "before_cursor_execute", on_execute)


async def _conversations(ctx: Any, n: int, *, messages: int = 0) -> tuple[Any, list[tuple[Any, Any, int, list[int]]]]:
    """n bot conversations of new customers, each with `messages` customer messages:
    (inbox, [(identity, contact, conversation id, message ids)])."""
    inbox = await make_inbox(ctx)
    made = []
    async with ctx.db.transaction() as s:
        for i in range(n):
            contact = Contact(name=f"c{i}", attributes={})
            s.add(contact)
            await s.flush()
            identity = ContactIdentity(inbox_id=inbox.id, external_id=f"p{i}", contact_id=contact.id, attributes={})
            s.add(identity)
            await s.flush()
            now = utcnow()
            conv = Conversation(inbox_id=inbox.id, contact_id=contact.id, identity_id=identity.id, status="open",
                                handler="bot", last_activity_at=now, waiting_since=now, last_message_preview="问")
            s.add(conv)
            await s.flush()
            ids = []
            for k in range(messages):
                msg = Message(conversation_id=conv.id, inbox_id=inbox.id, direction="in", sender_kind="contact",
                              content_type="text", text=f"问{k}", attachments=[], payload={}, edit_history=[],
                              created_at=now)
                s.add(msg)
                await s.flush()
                ids.append(msg.id)
            made.append((identity, contact, conv.id, ids))
    return inbox, made


def _asked(conversation_id: int, message_id: int) -> ev.Event:
    return ev.Event(ev.MESSAGE_CREATED, {"conversation_id": conversation_id, "message_id": message_id,
                                         "direction": "in", "sender_kind": "contact"})


async def test_a_batch_reads_its_conversations_with_one_statement_text_whatever_its_size(ctx) -> None:
    if ctx.db.is_sqlite:
        pytest.skip("PostgreSQL: prepared statements (SQLite expands its IN lists)")
    _, made = await _conversations(ctx, 3)
    texts: set[str] = set()
    for size in (1, 2, 3):
        async with ctx.db.shared_transaction() as shared:
            with _statements(ctx) as sent:
                await preload(shared, [ev.Event(ev.CONVERSATION_CREATED, {"conversation_id": cid})
                                       for _, _, cid, _ in made[:size]])
            texts |= {s for s in sent if "FROM conversations" in s}
            assert {obj.id for obj in shared.loaded if isinstance(obj, Conversation)} == {
                cid for _, _, cid, _ in made[:size]}
    # One text: PostgreSQL prepares it once, not once per batch size (an IN list's text grows with it).
    assert len(texts) == 1, texts


async def test_the_bot_knows_a_customers_first_message_from_the_batch_read(ctx) -> None:
    from scrm.services.bot.rounds import _earlier_customer_message

    _, made = await _conversations(ctx, 2, messages=2)
    (_, _, first_cid, (m1, m2)), (_, _, other_cid, (o1, _)) = made
    async with ctx.db.shared_transaction() as shared:
        defer_deliveries(shared)
        await preload(shared, [_asked(first_cid, m1), _asked(first_cid, m2), _asked(other_cid, o1)])
        async with unit_of_work(ctx) as tx:
            with _statements(ctx) as sent:
                assert await _earlier_customer_message(tx, first_cid, m1) is False  # greeted: the first one
                assert await _earlier_customer_message(tx, first_cid, m2) is True
                assert await _earlier_customer_message(tx, other_cid, o1) is False
                ids = [await batch_message_id(tx) for _ in range(6)]  # two per customer message of the batch
            assert sent == []  # answered by the batch's read: no count, no sequence call of their own
            if ctx.db.is_sqlite:
                assert ids == [None] * 6  # SQLite: the ORM's flush gives the ids
            else:
                assert all(ids) and ids == sorted(set(ids))  # type: ignore[type-var]
                assert await batch_message_id(tx) is not None  # then a chunk of its own, as before


async def test_the_bot_rows_of_several_rounds_wait_for_a_statement_that_reads_their_table(ctx) -> None:
    if ctx.db.is_sqlite:
        pytest.skip("SQLite: the batch's messages are ORM objects")
    from bot_flows.actions import BotResult, SendReply

    inbox, made = await _conversations(ctx, 2)
    async with ctx.db.shared_transaction() as shared:
        shared.turns = {cid for _, _, cid, _ in made}
        hold_back_conversation_writes(shared)
        defer_deliveries(shared)
        with _statements(ctx) as sent:
            for identity, contact, cid, _ in made:
                async with unit_of_work(ctx) as tx:
                    conv = await tx.session.get(Conversation, cid)
                    assert conv is not None
                    await apply_actions(tx, conv, inbox, identity, contact,
                                        BotResult(state={}, actions=[SendReply(f"答{cid}")]))
                    # A round's own reads of other tables (a contact, a policy...) do not write them.
                    await tx.session.scalar(select(func.count()).select_from(Contact))
            assert not [s for s in sent if s.startswith("INSERT")]
            count = await shared.session.scalar(select(func.count()).select_from(Message)
                                                .where(Message.conversation_id.in_([c for _, _, c, _ in made])))
            assert count == 2  # a read of the messages sees both replies
            await insert_deferred_deliveries(shared)
        inserts = [s.split(" (")[0] for s in sent if s.startswith("INSERT")]
        assert inserts == ["INSERT INTO messages", "INSERT INTO deliveries"]  # one per table for both rounds


async def test_a_batch_writes_the_desk_stats_it_changed_once_and_before_a_statement_reads_them(ctx) -> None:
    from scrm.db.models_desk import ConversationStats
    from scrm.event_batch import write_held_back

    _, made = await _conversations(ctx, 2)
    ids = [cid for _, _, cid, _ in made]
    async with ctx.db.transaction() as s:
        for cid in ids:
            s.add(ConversationStats(conversation_id=cid, inbox_id=1, priority="normal", created_at=utcnow()))
    started = utcnow()
    async with ctx.db.shared_transaction() as shared:
        shared.turns = set(ids)
        hold_back_conversation_writes(shared)
        await preload(shared, [ev.Event(ev.CONVERSATION_HANDLER_CHANGED, {"conversation_id": cid}) for cid in ids])
        with _statements(ctx) as sent:
            for n, cid in enumerate(ids):
                stats = await shared.session.get(ConversationStats, cid)
                assert stats is not None
                stats.sla_started_at = started
                stats.handoffs += n + 1
                await shared.session.scalar(select(func.count()).select_from(Contact))  # autoflushes
                assert stats.handoffs == n + 1  # the listeners see their changes
            assert not [s for s in sent if s.startswith("UPDATE")]
            # A statement that reads the stats rows sees what the batch made of them.
            counted = await shared.session.scalar(select(func.sum(ConversationStats.handoffs))
                                                  .where(ConversationStats.conversation_id.in_(ids)))
            assert counted == 3
            stats = await shared.session.get(ConversationStats, ids[0])
            assert stats is not None
            stats.human_involved = True
            await write_held_back(shared)
        updates = [s for s in sent if s.startswith("UPDATE desk_conversation_stats")]
        if not ctx.db.is_sqlite:
            assert len(updates) == 2  # both rows at once, then the one changed after the read
    async with ctx.db.session() as s:
        rows = {r.conversation_id: r for r in await s.scalars(select(ConversationStats)
                                                              .where(ConversationStats.conversation_id.in_(ids)))}
    assert [(rows[c].sla_started_at, rows[c].handoffs) for c in ids] == [(started, 1), (started, 2)]
    assert rows[ids[0]].human_involved and not rows[ids[1]].human_involved


async def test_the_desk_stats_rows_of_a_batchs_new_conversations_are_one_insert(ctx) -> None:
    from scrm.db.models_desk import ConversationStats
    from scrm.services.desk.sla import ensure_stats

    _, made = await _conversations(ctx, 3)
    ids = [cid for _, _, cid, _ in made]
    async with ctx.db.shared_transaction() as shared:
        shared.turns = set(ids)
        hold_back_conversation_writes(shared)
        await preload(shared, [ev.Event(ev.CONVERSATION_CREATED, {"conversation_id": cid}) for cid in ids])
        async with unit_of_work(ctx) as tx:
            with _statements(ctx) as sent:
                for cid in ids:
                    conv = await tx.session.get(Conversation, cid)
                    assert conv is not None
                    stats = await ensure_stats(tx, conv)
                    assert (stats.conversation_id, stats.inbox_id, stats.priority, stats.handoffs) == (
                        cid, conv.inbox_id, "normal", 0)
            inserts = [s for s in sent if s.startswith("INSERT INTO desk_conversation_stats")]
            assert len(inserts) == (3 if ctx.db.is_sqlite else 1), sent
    async with ctx.db.session() as s:
        stored = list(await s.scalars(select(ConversationStats).where(ConversationStats.conversation_id.in_(ids))))
    assert sorted(r.conversation_id for r in stored) == ids
    assert all(r.warned == [] and r.breached == [] and r.human_involved is False for r in stored)


async def test_a_batch_reads_its_conversations_stats_and_messages_in_one_statement_and_locks_the_stats(ctx) -> None:
    from scrm.db.models_desk import ConversationStats

    inbox, made = await _conversations(ctx, 3, messages=2)
    (_, _, with_stats, (first, second)), (_, _, without, (other, _)), (_, _, agents_only, (agent_msg, _)) = made
    async with ctx.db.transaction() as s:
        s.add(ConversationStats(conversation_id=with_stats, inbox_id=inbox.id, priority="normal", created_at=utcnow(),
                                human_involved=False, handoffs=0, warned=[], breached=[]))
    events = [_asked(with_stats, first), _asked(with_stats, second), _asked(without, other),
              # an agent's message in a conversation the batch does not read: loaded apart
              ev.Event(ev.MESSAGE_CREATED, {"conversation_id": agents_only, "message_id": agent_msg,
                                            "direction": "out", "sender_kind": "agent"})]
    async with ctx.db.shared_transaction() as shared:
        with _statements(ctx) as sent:
            await preload(shared, events)
        reads = [s for s in sent if s.startswith("SELECT") and "nextval" not in s and "contact_tags" not in s]
        assert len(reads) == 2, reads  # the conversations with all they hang off, and the agent's message apart
        loaded = {(type(obj).__name__, getattr(obj, "id", None) or obj.conversation_id) for obj in shared.loaded}
        assert {("Message", mid) for mid in (first, second, other, agent_msg)} <= loaded
        assert ("ConversationStats", with_stats) in loaded
        assert shared.locked == {("desk_conversation_stats", with_stats)}
        assert shared.facts["stats_missing"] == {without}
        if not ctx.db.is_sqlite:  # the stats row is locked until the batch commits
            async with ctx.db.engine.connect() as other_conn:
                from sqlalchemy.exc import DBAPIError

                with pytest.raises(DBAPIError):
                    await other_conn.execute(select(ConversationStats).where(
                        ConversationStats.conversation_id == with_stats).with_for_update(nowait=True))


async def test_a_finished_batch_is_freed_at_once_not_left_to_the_garbage_collector(ctx) -> None:
    """The session listeners a batch installs close over its shared transaction, which holds the session:
    left tied, every batch's session and the rows it loaded stayed in memory as one reference cycle until
    the cyclic collector found it (about 90 objects per message, ~6% of the worker's CPU at 400 msg/s)."""
    _, made = await _conversations(ctx, 3, messages=1)
    gc.collect()
    gc.disable()
    try:
        async with ctx.db.shared_transaction() as shared:
            shared.turns = {cid for _, _, cid, _ in made}
            hold_back_conversation_writes(shared)
            defer_deliveries(shared)
            await preload(shared, [_asked(cid, ids[0]) for _, _, cid, ids in made])
            loaded = [weakref.ref(obj) for obj in shared.loaded if isinstance(obj, Conversation | Message)]
        assert len(loaded) == 6
        del shared
        assert [ref for ref in loaded if ref() is not None] == []
    finally:
        gc.enable()


async def test_a_handoffs_lock_of_the_lower_conversations_leaves_the_batchs_bot_rows_to_its_end(ctx) -> None:
    """A handoff mid-batch locks the batch's conversations below its own first (event_batch.lock_in_order): that
    statement declares its one table, so the bot replies of the rounds before it still wait for the batch's
    end instead of being inserted before each handoff's lock; the handoff's note is a row of the batch too,
    inserted with them, and so is its audit entry (each was an ORM object flushed on its own)."""
    if ctx.db.is_sqlite:
        pytest.skip("SQLite: the batch's messages are ORM objects and nothing is locked")
    from bot_flows.actions import BotResult, SendReply

    inbox, made = await _conversations(ctx, 2)
    (identity, contact, low, _), (_, _, high, _) = sorted(made, key=lambda m: m[2])
    with _statements(ctx) as sent:
        async with ctx.db.shared_transaction() as shared:
            shared.turns = {low, high}
            hold_back_conversation_writes(shared)
            defer_deliveries(shared)
            # The handoff's conversation has a change held back (its bot reply): it is read again with its lock.
            shared.held_back[high] = [("clocks", True, {"b_id": high, "b_now": utcnow(), "b_preview": "请稍等"})]
            async with unit_of_work(ctx) as tx:
                conv = await tx.session.get(Conversation, low)
                assert conv is not None
                await apply_actions(tx, conv, inbox, identity, contact, BotResult(state={}, actions=[SendReply("答")]))
            async with unit_of_work(ctx) as tx:
                await do_set_handler(tx, high, None, "queue", "customer_request")  # the bot's handoff
            assert [s for s in sent if s.endswith("FOR NO KEY UPDATE")], sent  # the lower one was locked first
            assert not [s for s in sent if "INSERT INTO messages" in s], sent
            await insert_deferred_deliveries(shared)
    # The reply, its delivery, the handoff's note and audit entry: one statement, to the commit.
    inserts = [s for s in sent if "INSERT INTO" in s]
    assert len(inserts) == 1 and "INSERT INTO deliveries" in inserts[0] and "INSERT INTO audit_log" in inserts[0], inserts
    async with ctx.db.session() as s:
        notes = (await s.scalars(select(Message).where(Message.conversation_id == high))).all()
        assert [(m.sender_kind, m.content_type, m.private, m.delivery_status, m.payload["handoff"]["to"])
                for m in notes] == [("system", "event", True, None, "queue")]
        assert "customer_request" in (notes[0].text or "")
        reply = (await s.scalars(select(Message).where(Message.conversation_id == low))).one()
        assert (reply.text, reply.private, reply.delivery_status) == ("答", False, "queued")
        audit = (await s.scalars(select(AuditLog).where(AuditLog.target_id == high))).one()
        assert (audit.action, audit.target_type, audit.agent_id, audit.data) == (
            "conversation.handler", "conversation", None, {"handler": "queue"})
        assert audit.created_at is not None


def test_the_batchs_text_statements_declare_the_tables_they_touch() -> None:
    """Text statements a batch runs mid-batch name their tables (event_rows.TABLES); unnamed, a text statement
    counts as touching every table, and the batch's pending rows were inserted before each."""
    from scrm.event_batch import _LOCK_IN_ORDER
    from scrm.event_rows import statement_tables
    from scrm.services.desk.sla import _insert_new_stats_statement

    assert statement_tables(_LOCK_IN_ORDER) == {"conversations"}
    assert statement_tables(_insert_new_stats_statement()) == {"desk_conversation_stats"}
