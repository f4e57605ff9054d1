"""A consumer batch's writes and re-reads of its conversations (event_batch.py): the held-back changes of all
its conversations in one execution on PostgreSQL, a handoff's re-read of the row in the statement that
writes its held-back changes, and the desk's per-handoff lookups asked once per batch."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from sqlalchemy import event, select

from scrm.db.models import Contact, ContactIdentity, Conversation, Inbox, utcnow
from scrm.db.models_desk import SlaPolicy, Team
from scrm.event_batch import hold_back_conversation_writes, write_held_back
from scrm.services.conversations.actions import load
from scrm.services.desk.assignment import team_for_inbox
from scrm.services.desk.sla import choose_policy
from scrm.services.uow import unit_of_work
from tests.conftest import make_inbox


@contextmanager
def _statements(ctx: Any) -> Iterator[list[tuple[str, bool]]]:
    """(statement, executemany) of every statement sent meanwhile."""
    sent: list[tuple[str, bool]] = []

    def on_execute(_conn: Any, _cursor: Any, statement: str, _params: Any, _context: Any, many: bool) -> None:
        sent.append((" ".join(statement.split()), many))

    event.listen(ctx.db.engine.sync_engine, "before_cursor_execute", on_execute)
    try:
        yield sent
    finally:
        event.remove(ctx.db.engine.sync_engine, "before_cursor_execute", on_execute)


async def _conversations(ctx: Any, n: int, at: Any) -> tuple[int, list[int]]:
    inbox = await make_inbox(ctx)
    ids = []
    async with ctx.db.transaction() as s:
        for i in range(n):
            contact = Contact(name=f"c{i}", attributes={})
            s.add(contact)
            await s.flush()
            identity = ContactIdentity(inbox_id=inbox.id, external_id=f"u{i}", contact_id=contact.id, attributes={})
            s.add(identity)
            await s.flush()
            conv = Conversation(inbox_id=inbox.id, contact_id=contact.id, identity_id=identity.id, status="open",
                                handler="bot", last_activity_at=at, waiting_since=at, last_message_preview="问")
            s.add(conv)
            await s.flush()
            ids.append(conv.id)
    return inbox.id, ids


def _clocks(conversation_id: int, now: Any, preview: str) -> tuple[Any, ...]:
    return ("clocks", True, {"b_id": conversation_id, "b_now": now, "b_preview": preview})


async def test_the_held_back_writes_of_a_batch_are_one_execution_per_shape_and_keep_their_meaning(ctx) -> None:
    asked = utcnow()
    _, ids = await _conversations(ctx, 3, asked)
    later = asked + timedelta(minutes=5)  # the last one's stored message is newer than the reply: it stays waiting
    async with ctx.db.session() as s:
        await s.execute(Conversation.__table__.update().where(Conversation.id == ids[2]).values(
            last_activity_at=later + timedelta(minutes=1), last_message_preview="又问"))
        await s.commit()
    async with ctx.db.shared_transaction() as shared:
        hold_back_conversation_writes(shared)
        shared.turns = set(ids)
        session = shared.session
        for cid in ids:
            shared.held_back[cid] = [_clocks(cid, later, f"答{cid}")]
            conv = await session.get(Conversation, cid)
            assert conv is not None
            conv.bot_state = {"at": f"s{cid}"}
            conv.first_reply_at = later
        with _statements(ctx) as sent:
            await write_held_back(shared)
    updates = [(s, many) for s, many in sent if s.startswith("UPDATE conversations")]
    if not ctx.db.is_sqlite:
        assert len(updates) == 1 and not updates[0][1]  # one execution for the three conversations
    async with ctx.db.session() as s:
        rows = {c.id: c for c in [await s.get(Conversation, cid) for cid in ids] if c is not None}
    for cid in ids[:2]:
        assert (rows[cid].last_activity_at, rows[cid].last_message_preview) == (later, f"答{cid}")
        assert rows[cid].waiting_since is None
    assert rows[ids[2]].last_message_preview == "又问" and rows[ids[2]].waiting_since == asked
    assert all(rows[cid].bot_state == {"at": f"s{cid}"} and rows[cid].first_reply_at == later for cid in ids)


async def test_a_handoff_reads_its_conversation_again_in_the_statement_that_writes_its_held_back_reply(ctx) -> None:
    asked = utcnow()
    _, (cid,) = await _conversations(ctx, 1, asked)
    replied = asked + timedelta(seconds=1)
    async with ctx.db.shared_transaction() as shared:
        hold_back_conversation_writes(shared)
        shared.turns = {cid}
        shared.held_back[cid] = [_clocks(cid, replied, "请稍等")]
        async with unit_of_work(ctx) as tx:
            with _statements(ctx) as sent:
                conv, _, _ = await load(tx, cid)
            assert (conv.last_message_preview, conv.last_activity_at, conv.waiting_since) == ("请稍等", replied, None)
            assert not shared.held_back.get(cid)
    touching = [s for s, _ in sent if "conversations" in s and "turn" not in s]
    assert len(touching) == 1 and touching[0].startswith("UPDATE conversations"), touching
    assert "RETURNING" in touching[0]


async def test_a_batch_asks_for_the_sla_policy_and_the_inbox_team_once_until_it_writes_them(ctx) -> None:
    inbox_id, _ = await _conversations(ctx, 1, utcnow())
    async with ctx.db.transaction() as s:
        s.add(SlaPolicy(name="std", inbox_id=None, priority=None, first_response_minutes=30))
        s.add(Team(name="t", inbox_id=inbox_id))
    async with ctx.db.shared_transaction() as shared:
        hold_back_conversation_writes(shared)
        async with unit_of_work(ctx) as tx:
            with _statements(ctx) as sent:
                first = await choose_policy(tx, inbox_id, "normal")
                again = await choose_policy(tx, inbox_id, "normal")
                team = await team_for_inbox(tx, inbox_id)
                assert await team_for_inbox(tx, inbox_id) is team
            assert first is not None and again is first and team is not None
            assert len([s for s, _ in sent if "desk_sla_policies" in s]) == 1
            assert len([s for s, _ in sent if "desk_teams" in s]) == 1
            tx.session.add(SlaPolicy(name="urgent", inbox_id=inbox_id, priority="normal", first_response_minutes=5))
            await tx.session.flush()  # the batch wrote the policies: asked again
            newer = await choose_policy(tx, inbox_id, "normal")
            assert newer is not None and newer.name == "urgent"


async def test_a_batch_inserts_its_plain_rows_of_a_table_in_one_execution_with_the_column_defaults(ctx) -> None:
    from scrm.db.models import UnansweredQuestion
    from scrm.event_rows import insert_rows

    _, (cid,) = await _conversations(ctx, 1, utcnow())
    rows = [{"conversation_id": cid, "text": f"问题{n}"} for n in range(3)]  # resolved, created_at: the defaults
    async with ctx.db.transaction() as s:
        with _statements(ctx) as sent:
            await s.run_sync(lambda session: insert_rows(session.connection(), UnansweredQuestion.__table__, rows))
    inserts = [(st, many) for st, many in sent if st.startswith("INSERT")]
    assert len(inserts) == 1
    if not ctx.db.is_sqlite:
        assert not inserts[0][1] and "unnest" in inserts[0][0]  # one execution, not one per row
    async with ctx.db.session() as s:
        stored = list(await s.scalars(select(UnansweredQuestion).order_by(UnansweredQuestion.id)))
    assert [q.text for q in stored] == ["问题0", "问题1", "问题2"]  # in the rows' order
    assert all(q.resolved is False and q.created_at is not None for q in stored)


async def test_a_round_of_writes_of_different_shapes_is_one_update_and_keeps_each_ones_meaning(ctx) -> None:
    asked = utcnow()
    _, ids = await _conversations(ctx, 4, asked)
    later = asked + timedelta(minutes=5)
    async with ctx.db.shared_transaction() as shared:
        hold_back_conversation_writes(shared)
        shared.turns = set(ids)
        shared.held_back[ids[0]] = [_clocks(ids[0], later, "答")]  # clocks alone
        shared.held_back[ids[1]] = [("clocks", False, {"b_id": ids[1], "b_now": later, "b_preview": "备注"})]
        shared.held_back[ids[2]] = [("set", {"handler": "queue", "bot_state": {}})]  # a change alone
        shared.held_back[ids[3]] = [_clocks(ids[3], later, "答"), ("set", {"bot_state": {"n": 1}})]
        with _statements(ctx) as sent:
            await write_held_back(shared)
    updates = [s for s, _ in sent if s.startswith("UPDATE conversations")]
    if not ctx.db.is_sqlite:
        assert len(updates) == 1, updates
    async with ctx.db.session() as s:
        rows = {c.id: c for c in [await s.get(Conversation, cid) for cid in ids] if c is not None}
    assert (rows[ids[0]].last_message_preview, rows[ids[0]].waiting_since, rows[ids[0]].handler) == ("答", None, "bot")
    assert (rows[ids[1]].last_message_preview, rows[ids[1]].waiting_since) == ("备注", asked)  # does not answer
    assert (rows[ids[2]].handler, rows[ids[2]].bot_state, rows[ids[2]].last_message_preview) == ("queue", {}, "问")
    assert rows[ids[2]].last_activity_at == asked and rows[ids[2]].waiting_since == asked
    assert (rows[ids[3]].bot_state, rows[ids[3]].last_activity_at, rows[ids[3]].waiting_since) == ({"n": 1}, later, None)


def test_a_conversations_writes_merge_only_where_the_row_ends_the_same() -> None:
    from scrm.event_batch import _merged

    at = utcnow()
    soon = at + timedelta(seconds=1)
    greeting = ("clocks", True, {"b_now": at, "b_preview": "你好"})
    answer = ("clocks", True, {"b_now": soon, "b_preview": "答"})
    note = ("clocks", False, {"b_now": soon, "b_preview": "备注"})
    state = ("set", {"bot_state": {"n": 1}})
    assert _merged([greeting, answer]) == [answer]  # a greeting and an answer: the answer's clocks
    assert _merged([greeting, state, answer]) == [("clocks+set", True, answer[2], state[1])]
    assert _merged([state, answer]) == [("clocks+set", True, answer[2], state[1])]  # they commute
    assert _merged([answer, greeting]) == [answer, greeting]  # an earlier time: kept in order
    assert _merged([greeting, note]) == [greeting, note]  # another kind of clocks
    waiting = ("set", {"waiting_since": at})
    assert _merged([waiting, answer]) == [waiting, answer]  # the clocks read what the change set
    assert _merged([greeting, waiting, answer]) == [("clocks+set", True, greeting[2], waiting[1]), answer]


async def test_a_handoffs_read_again_leaves_the_batchs_new_rows_to_its_next_flush(ctx) -> None:
    from scrm.db.models import AuditLog

    asked = utcnow()
    _, (cid,) = await _conversations(ctx, 1, asked)
    async with ctx.db.shared_transaction() as shared:
        hold_back_conversation_writes(shared)
        shared.turns = {cid}
        shared.held_back[cid] = [_clocks(cid, asked + timedelta(seconds=1), "请稍等")]
        async with unit_of_work(ctx) as tx:
            loaded = await tx.session.get(Conversation, cid)  # as the batch's preload leaves them
            assert loaded is not None
            held = [await tx.session.get(ContactIdentity, loaded.identity_id), await tx.session.get(Inbox, loaded.inbox_id)]
            tx.session.add(AuditLog(agent_id=None, action="x", target_type="conversation", target_id=cid, data={}))
            with _statements(ctx) as sent:
                conv, _, _ = await load(tx, cid)
                conv.handler = "queue"
            assert not [s for s, _ in sent if s.startswith("INSERT")], sent  # the audit entry waits
            assert all(held)
            await write_held_back(shared)
    async with ctx.db.session() as s:
        assert await s.scalar(select(AuditLog.id).where(AuditLog.target_id == cid)) is not None
        stored = await s.get(Conversation, cid)
        assert stored is not None and (stored.handler, stored.last_message_preview) == ("queue", "请稍等")
