"""Web chat catch-up under a reconnect storm: a new message is read before the resyncs, and the visitors'
conversation states (with the agents' read receipts) are read in one statement."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from sqlalchemy import select, update

from scrm.db.models import Conversation, Message
from scrm.services.webchat.shown import Shown
from scrm.web import webchat_catchup
from scrm.web.webchat_catchup import CatchUp, catchup_for
from scrm.web.webchat_ws import VisitorSocket
from tests.channels.web.conftest import Visitor


async def test_a_new_message_is_read_before_the_sockets_that_only_resync(monkeypatch):
    """After a blip every socket reconnects and asks for a resync read: the bot's answer to one of them
    does not wait behind the others (one more reader takes it at once), nor does a socket whose resync is
    still waiting when its answer arrives."""
    monkeypatch.setattr(webchat_catchup, "BATCH", 1)
    catchup = CatchUp(SimpleNamespace())
    order: list[str] = []
    release: dict[str, asyncio.Event] = {}

    async def read(batch: list[Any]) -> None:
        for conn in batch:
            order.append(conn.name)
            release[conn.name] = asyncio.Event()
            await release[conn.name].wait()
    monkeypatch.setattr(catchup, "_read", read)
    class Conn:
        closed = False

        def __init__(self, name: str) -> None:
            self.name = name

        def done(self) -> None:
            pass
    conns = {name: Conn(name) for name in ("r1", "r2", "r3", "r4", "u1")}
    for name in ("r1", "r2", "r3", "r4"):  # four sockets reconnect
        catchup.add(conns[name])  # type: ignore[arg-type]
    await asyncio.sleep(0)
    assert order == ["r1", "r2"]  # both readers busy
    catchup.add(conns["u1"], urgent=True)  # type: ignore[arg-type]  # the bot's answer to another visitor
    await asyncio.sleep(0)
    assert order == ["r1", "r2", "u1"]  # not behind r3 and r4
    assert catchup.hurry(conns["r4"])  # type: ignore[arg-type]  # r4's answer arrives: its resync goes first
    assert not catchup.hurry(conns["r1"])  # type: ignore[arg-type]  # in flight: asks again when done
    release["u1"].set()
    await asyncio.sleep(0.01)
    assert order == ["r1", "r2", "u1", "r4"]
    for name in ("r1", "r2", "r4"):
        release[name].set()
    await asyncio.sleep(0.01)
    release["r3"].set()
    await asyncio.sleep(0.01)
    assert order == ["r1", "r2", "u1", "r4", "r3"]
    assert catchup._running == 0 and not catchup.waiting and not catchup.urgent


async def test_the_socket_hurries_its_waiting_resync_when_its_answer_arrives(visitor: Visitor, ctx, monkeypatch):
    """A socket that reconnected (a resync read waiting) and is then nudged about a new message."""
    await visitor.session()
    catchup = catchup_for(ctx)
    started: list[Any] = []
    monkeypatch.setattr(catchup, "_start", lambda: started.append(1))  # no reader runs: the reads stay queued
    ws = SimpleNamespace(closed=False)
    conn = VisitorSocket(ws, ctx, visitor.inbox.id, "key", "v:x", None, Shown(0, []))  # type: ignore[arg-type]
    conn.notify({"t": "sync"})
    assert conn in catchup.waiting and conn not in catchup.urgent
    conn.notify({"t": "m", "c": 1, "m": 42})
    assert conn in catchup.urgent and conn not in catchup.waiting


async def test_conversation_states_read_the_agents_read_receipts_with_the_states(visitor: Visitor, ctx, monkeypatch):
    """A visitor whose conversation an agent has: the read receipt (the customer message before the
    `unread_count` newest) comes with the state; on PostgreSQL in the same statement."""
    from scrm.services.webchat import visitors as chat_svc

    await visitor.session()
    sent = [await visitor.send(text, status=201) for text in ("在吗", "怎么联系人工客服", "还在吗", "人呢")]
    await ctx.bus.drain(5)
    cid = sent[0]["conversation_id"]
    async with ctx.db.transaction() as s:
        await s.execute(update(Conversation).where(Conversation.id == cid).values(handler="human", unread_count=2))
        identity = await s.scalar(select(Conversation.identity_id).where(Conversation.id == cid))
        ins = list(await s.scalars(select(Message.id).where(Message.conversation_id == cid, Message.direction == "in")
                                   .order_by(Message.id)))
    assert ins == [m["id"] for m in sent]
    statements: list[Any] = []
    for name in ("hot_read", "one_statement"):
        original = getattr(ctx.db, name)

        async def counted(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
            statements.append(args)
            return await _original(*args, **kwargs)
        monkeypatch.setattr(ctx.db, name, counted)
    found = await chat_svc.conversation_states(ctx, [identity])
    assert found[identity] == {"id": cid, "status": "open", "handler": "human", "agent_read_upto": ins[1]}
    if not ctx.db.is_sqlite:
        assert len(statements) == 1
    statements.clear()
    async with ctx.db.transaction() as s:  # the bot's: no read receipts
        await s.execute(update(Conversation).where(Conversation.id == cid).values(handler="bot", assignee_id=None))
    assert (await chat_svc.conversation_states(ctx, [identity]))[identity]["agent_read_upto"] is None
