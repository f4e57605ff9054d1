"""Turns on a conversation: the bot's rounds and agents' actions take turns on it; a customer's new
message is stored and acknowledged without waiting for a round in progress (PostgreSQL)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, text, update

from scrm.db.models import ContactIdentity, Conversation, Inbox, Message, utcnow
from scrm.services.bot import rounds as bot_svc
from scrm.services.conversations import actions as conv_svc
from scrm.services.conversations.turns import TURNS
from scrm.services.outbox import enqueue_message
from scrm.services.uow import unit_of_work
from scrm.web import api_conversations
from tests.bot.helpers_bot import TUESDAY_MORNING, bot_replies, conversation, say, set_clock, settle
from tests.conftest import api_message, make_inbox, post_signed, wait_for


async def _start(client, ctx):
    set_clock(ctx, TUESDAY_MORNING)
    inbox = (await make_inbox(ctx)).id
    cid = await say(client, ctx, inbox, "你好")
    return inbox, cid


def _hold_rounds(monkeypatch) -> tuple[asyncio.Event, asyncio.Event]:
    """Bot rounds stop halfway (after reading the conversation, before answering) until `gate` is set."""
    entered, gate = asyncio.Event(), asyncio.Event()
    real = bot_svc._business_hours

    async def held(*args, **kwargs):
        entered.set()
        await gate.wait()
        return await real(*args, **kwargs)

    monkeypatch.setattr(bot_svc, "_business_hours", held)
    return entered, gate


class _WatchedWriteLock(asyncio.Lock):
    """SQLite's write lock (one writer at a time), recording the tasks that wait for it."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting: set[asyncio.Task[Any]] = set()

    async def acquire(self) -> bool:
        task = asyncio.current_task()
        if self.locked() and task is not None:
            self.waiting.add(task)
        try:
            return await super().acquire()
        finally:
            self.waiting.discard(task)  # type: ignore[arg-type]


def _watch_takeovers(ctx, backend: str, monkeypatch) -> Callable[[int], Awaitable[bool]]:
    """Returns `waits_for_turn(cid)`: whether an agent's handler change is blocked waiting for its turn on the
    conversation: on PostgreSQL an ungranted advisory lock on the conversation's turn, on SQLite the request's
    task waiting for the write lock. Call before anything writes (it swaps SQLite's lock)."""
    takeovers: set[asyncio.Task[Any]] = set()
    real_run = api_conversations._run

    async def run(request, fn, *args, **kwargs):
        if fn is conv_svc.do_set_handler:
            takeovers.add(asyncio.current_task())  # type: ignore[arg-type]
        return await real_run(request, fn, *args, **kwargs)

    monkeypatch.setattr(api_conversations, "_run", run)
    if backend == "sqlite":
        lock = _WatchedWriteLock()
        monkeypatch.setattr(ctx.db, "_write_lock", lock)

        async def sqlite_waits(cid: int) -> bool:
            return bool(takeovers & lock.waiting)

        return sqlite_waits

    async def pg_waits(cid: int) -> bool:
        key = TURNS | cid
        async with ctx.db.session() as s:
            return bool(await s.scalar(text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                " AND classid::bigint = :hi AND objid::bigint = :lo"), {"hi": key >> 32, "lo": key & 0xFFFFFFFF}))

    return pg_waits


async def test_a_message_is_acknowledged_while_the_bot_answers_that_conversation(client, ctx, backend, monkeypatch):
    if backend == "sqlite":
        pytest.skip("SQLite has one writer: a bot round in progress holds it, so ingest waits there by design")
    inbox, cid = await _start(client, ctx)
    before = await bot_replies(ctx, cid)
    entered, gate = _hold_rounds(monkeypatch)
    r = await post_signed(client, inbox, api_message("turn-1", sender="cust-1", text="运费怎么收？"))
    assert r.status == 200
    await asyncio.wait_for(entered.wait(), 10)  # the bot is halfway through its answer to it
    try:
        r = await asyncio.wait_for(
            post_signed(client, inbox, api_message("turn-2", sender="cust-1", text="几天能到？")), 5)
    finally:
        gate.set()
    assert r.status == 200 and (await r.json())["results"][0]["conversation_id"] == cid
    await settle(ctx)
    # Each message got its one answer, and the conversation shows the latest answer and waits for nobody.
    replies = await bot_replies(ctx, cid)
    assert len(replies) == len(before) + 2 and "满 99 元包邮" in replies[len(before)]["text"]
    conv = await conversation(ctx, cid)
    assert conv.waiting_since is None and conv.last_message_preview == replies[-1]["text"][:len(conv.last_message_preview)]


async def test_an_agent_takeover_waits_for_the_bot_round_in_progress(client, ctx, backend, admin_headers, monkeypatch):
    waits_for_turn = _watch_takeovers(ctx, backend, monkeypatch)
    inbox, cid = await _start(client, ctx)
    waits_for_turn = functools.partial(waits_for_turn, cid)
    entered, gate = _hold_rounds(monkeypatch)
    r = await post_signed(client, inbox, api_message("turn-3", sender="cust-1", text="运费怎么收？"))
    assert r.status == 200
    await asyncio.wait_for(entered.wait(), 10)
    takeover = asyncio.create_task(client.post(f"/api/v1/conversations/{cid}/handler", json={"handler": "human"},
                                               headers=admin_headers))
    # The round goes on only once the takeover is seen waiting for its turn; a takeover that does not wait
    # answers first instead (however slow it is), and is caught.
    waiting = asyncio.create_task(wait_for(lambda: waits_for_turn(), timeout=10))
    try:
        await asyncio.wait({takeover, waiting}, return_when=asyncio.FIRST_COMPLETED)
        held = not takeover.done()
    finally:
        gate.set()
    assert (await takeover).status == 200
    assert held and await waiting, "the takeover must wait for the bot's turn on the conversation"
    await settle(ctx)
    async with ctx.db.session() as s:
        thread = [(m.sender_kind, m.text) for m in (await s.scalars(
            select(Message).where(Message.conversation_id == cid).order_by(Message.id))).all()]
    answer = next(i for i, (kind, text) in enumerate(thread) if kind == "bot" and "满 99 元包邮" in (text or ""))
    note = next(i for i, (kind, text) in enumerate(thread) if kind == "system" and "接管" in (text or ""))
    assert answer < note  # the bot finished its answer, then the agent took over; nothing from the bot after
    assert all(kind != "bot" for kind, _ in thread[note:])


async def test_a_reply_does_not_hide_a_later_customer_message(client, ctx):
    """Ingest takes no turn: a message it stored while a reply was being written stays the latest
    and keeps the conversation waiting."""
    set_clock(ctx, TUESDAY_MORNING)
    inbox_id = (await make_inbox(ctx)).id
    cid = await say(client, ctx, inbox_id, "你好")
    async with unit_of_work(ctx) as tx:  # nothing later: the reply is the latest and answers
        conv = await tx.session.get(Conversation, cid)
        await enqueue_message(tx, inbox=await tx.session.get(Inbox, inbox_id), conversation=conv,
                              identity=await tx.session.get(ContactIdentity, conv.identity_id), sender_kind="bot",
                              text="请问有什么可以帮您？")
    conv = await conversation(ctx, cid)
    assert conv.last_message_preview == "请问有什么可以帮您？" and conv.waiting_since is None

    later = utcnow() + timedelta(seconds=30)
    async with unit_of_work(ctx) as tx:
        conv = await tx.session.get(Conversation, cid)
        inbox = await tx.session.get(Inbox, inbox_id)
        identity = await tx.session.get(ContactIdentity, conv.identity_id)
        # What ingest writes for a message stored meanwhile (the object above does not see it).
        await tx.session.execute(update(Conversation).where(Conversation.id == cid).values(
            last_activity_at=later, last_message_preview="还在吗？", waiting_since=later)
            .execution_options(synchronize_session=False))
        await enqueue_message(tx, inbox=inbox, conversation=conv, identity=identity, sender_kind="bot", text="您好！")
    conv = await conversation(ctx, cid)
    assert (conv.last_message_preview, conv.last_activity_at, conv.waiting_since) == ("还在吗？", later, later)
