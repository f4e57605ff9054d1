"""The bot's rows in a consumer batch (outbox.BatchRows, PostgreSQL): its messages, deliveries, FAQ outcomes
and unanswered questions are plain rows inserted with one statement per table, before any other statement
of the batch (what the batch reads next sees them) and at the latest before the batch marks its events."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event, func, select

from scrm import events as ev
from scrm.db.models import (
    Contact,
    ContactIdentity,
    Conversation,
    Delivery,
    Message,
    UnansweredQuestion,
    utcnow,
)
from scrm.db.models_desk import FaqOutcome
from scrm.event_batch import hold_back_conversation_writes, write_held_back
from scrm.services.bot.rounds import apply_actions
from scrm.services.outbox import BatchDelivery, defer_deliveries, insert_deferred_deliveries
from scrm.services.uow import unit_of_work
from tests.conftest import make_inbox


async def _conversation(ctx: Any, n: int) -> tuple[Any, Any, Any, int]:
    inbox = await make_inbox(ctx)
    async with ctx.db.transaction() as s:
        contact = Contact(name="顾客", attributes={})
        s.add(contact)
        await s.flush()
        identity = ContactIdentity(inbox_id=inbox.id, external_id=f"rows-{n}", contact_id=contact.id, attributes={})
        s.add(identity)
        await s.flush()
        now = utcnow()
        conv = Conversation(inbox_id=inbox.id, contact_id=contact.id, identity_id=identity.id, status="open",
                            handler="bot", last_activity_at=now, waiting_since=now, last_message_preview="在吗")
        s.add(conv)
        await s.flush()
        return inbox, identity, contact, conv.id


async def test_the_bot_rows_of_a_batch_are_one_insert_and_read_back_at_once(ctx) -> None:
    if ctx.db.is_sqlite:
        pytest.skip("SQLite: the batch's messages take their ids from a flush (ORM objects)")
    from bot_flows.actions import BotResult, RecordUnanswered, SendReply

    inbox, identity, contact, conv_id = await _conversation(ctx, 1)
    faq = {"outcome": "answer", "entry": "shipping", "confidence": 0.9}
    unsure = {"outcome": "reject"}
    statements: list[str] = []

    def on_execute(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement.strip())

    def inserts() -> list[str]:
        return [s for s in statements if s.startswith(("INSERT", "WITH"))]

    async with ctx.db.shared_transaction() as shared:
        shared.turns = {conv_id}
        hold_back_conversation_writes(shared)
        defer_deliveries(shared)
        event.listen(ctx.db.engine.sync_engine, "before_cursor_execute", on_execute)
        try:
            async with unit_of_work(ctx) as tx:
                conv = await tx.session.get(Conversation, conv_id)
                assert conv is not None
                await apply_actions(tx, conv, inbox, identity, contact, BotResult(state={}, actions=[
                    SendReply("运费10元", faq=faq), RecordUnanswered("花呗分期?", faq=unsure), SendReply("还有吗？"),
                    SendReply("没找到答案", faq=unsure)]))
            assert not inserts()  # nothing written yet
            # The next statement of the batch writes them first: a read sees the bot's messages.
            count = await shared.session.scalar(select(func.count()).select_from(Message)
                                                .where(Message.conversation_id == conv_id))
            assert count == 3
            # The three tables' rows in one statement; deliveries wait for the batch's end (nothing in the
            # batch reads them): one INSERT for all.
            (written,) = inserts()
            assert written.startswith("WITH ") and all(f"INSERT INTO {table} (" in written for table in (
                "messages", "desk_faq_outcomes", "unanswered_questions"))
            handed = await insert_deferred_deliveries(shared)
            assert [s.split("(")[0] for s in inserts()[1:]] == ["INSERT INTO deliveries "]
        finally:
            event.remove(ctx.db.engine.sync_engine, "before_cursor_execute", on_execute)
        assert len(handed) == 3 and all(isinstance(d, BatchDelivery) and d.id for d in handed)
        assert [e.name for e in shared.events].count(ev.MESSAGE_CREATED) == 3
        await write_held_back(shared)  # the conversation's clocks, as the batch writes them before its commit

    async with ctx.db.session() as s:
        messages = list(await s.scalars(select(Message).where(Message.conversation_id == conv_id)
                                        .order_by(Message.id)))
        assert [(m.text, m.sender_kind, m.direction, m.delivery_status) for m in messages] == [
            ("运费10元", "bot", "out", "queued"), ("还有吗？", "bot", "out", "queued"),
            ("没找到答案", "bot", "out", "queued")]
        assert messages[0].payload == {"faq": faq} and messages[0].attachments == [] and not messages[0].private
        deliveries = list(await s.scalars(select(Delivery).where(Delivery.conversation_id == conv_id)
                                          .order_by(Delivery.id)))
        assert [d.message_id for d in deliveries] == [m.id for m in messages]
        assert sorted(d.id for d in deliveries) == sorted(d.id for d in handed)
        assert deliveries[0].payload["text"] == "运费10元" and deliveries[0].status == "queued"
        assert deliveries[0].ordering_key == f"{inbox.id}:rows-1"
        outcomes = list(await s.scalars(select(FaqOutcome).where(FaqOutcome.conversation_id == conv_id)
                                        .order_by(FaqOutcome.id)))
        # The reject rode on the unanswered question first, then on the reply that carried it.
        assert [(o.outcome, o.message_id, o.entry_key) for o in outcomes] == [
            ("answer", messages[0].id, "shipping"), ("reject", messages[2].id, None)]
        assert await s.scalar(select(func.count()).select_from(UnansweredQuestion)
                              .where(UnansweredQuestion.conversation_id == conv_id)) == 1
        stored = await s.get(Conversation, conv_id)
        assert stored is not None and stored.last_message_preview == "没找到答案" and stored.waiting_since is None


async def test_a_batch_that_rolls_back_leaves_none_of_the_bot_rows(ctx) -> None:
    if ctx.db.is_sqlite:
        pytest.skip("SQLite: ORM objects")
    from bot_flows.actions import BotResult, SendReply

    inbox, identity, contact, conv_id = await _conversation(ctx, 2)
    with pytest.raises(RuntimeError):
        async with ctx.db.shared_transaction() as shared:
            shared.turns = {conv_id}
            defer_deliveries(shared)
            async with unit_of_work(ctx) as tx:
                conv = await tx.session.get(Conversation, conv_id)
                assert conv is not None
                await apply_actions(tx, conv, inbox, identity, contact, BotResult(state={}, actions=[SendReply("好")]))
            await insert_deferred_deliveries(shared)
            raise RuntimeError("the batch fails before its commit")
    async with ctx.db.session() as s:
        assert await s.scalar(select(func.count()).select_from(Message).where(Message.conversation_id == conv_id)) == 0
        assert await s.scalar(select(func.count()).select_from(Delivery)
                              .where(Delivery.conversation_id == conv_id)) == 0
