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

        def done(self, failed: bool = False) -> None:
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


async def test_a_second_push_of_a_message_whose_read_is_under_way_starts_no_read_of_its_own(visitor: Visitor, ctx,
                                                                                            monkeypatch):
    """Each reply is announced twice (the event bus right after its commit, then the outbox worker's push):
    the second announcement while the first one's read waits or runs starts no read of its own; a message
    announced only after that read started gets one (it may have committed after the read's snapshot), and
    so do the messages of a read that failed, a little later."""
    await visitor.session()
    catchup = catchup_for(ctx)
    added: list[Any] = []
    monkeypatch.setattr(catchup, "add", lambda conn, urgent=False: added.append(urgent))
    monkeypatch.setattr("scrm.web.webchat_ws.RETRY_READ", 0.01)
    ws = SimpleNamespace(closed=False)
    conn = VisitorSocket(ws, ctx, visitor.inbox.id, "key", "v:x", None, Shown(0, []))  # type: ignore[arg-type]
    conn.notify({"t": "m", "c": 1, "m": 42})  # the event bus: a read is queued
    conn.notify({"t": "m", "c": 1, "m": 42})  # the outbox worker's push while it waits
    conn.reading()  # the read starts
    conn.notify({"t": "m", "c": 1, "m": 42})  # ... or while it runs
    assert added == [True] and not conn._dirty
    conn.notify({"t": "m", "c": 1, "m": 43})  # announced after the read started
    assert conn._dirty
    conn.done()
    assert added == [True, True]  # one more read, for 43
    conn.reading()
    conn.done(failed=True)  # the database did not answer
    assert added == [True, True]
    await asyncio.sleep(0.05)
    assert added == [True, True, True]  # 43 is read again


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


async def test_a_catch_up_read_reads_its_visitors_rows_only_on_a_site_with_many_messages(visitor: Visitor, ctx):
    """A batched catch-up (200 sockets, some that have shown nothing yet: cursor 0) reads through the
    visitors' conversations, never the whole site's messages or conversations, even before PostgreSQL has
    statistics for the tables (a new install; autovacuum off): a scan per read made every answer of a busy
    site wait longer as the site grew, and the reconnect of every socket queue behind them."""
    import json

    import pytest

    from scrm.db.models import Contact, ContactIdentity
    from scrm.services.webchat import visitors as chat_svc

    if ctx.db.is_sqlite:
        pytest.skip("PostgreSQL's plan")
    inbox_id = visitor.inbox.id
    async with ctx.db.transaction() as s:
        contacts = [Contact(name=f"c{i}") for i in range(400)]
        s.add_all(contacts)
        await s.flush()
        identities = [ContactIdentity(inbox_id=inbox_id, external_id=f"v:{i}", contact_id=c.id)
                      for i, c in enumerate(contacts)]
        s.add_all(identities)
        await s.flush()
        conversations = [Conversation(inbox_id=inbox_id, contact_id=c.id, identity_id=i.id)
                         for c, i in zip(contacts, identities, strict=True)]
        s.add_all(conversations)
        await s.flush()
        s.add_all([Message(conversation_id=cv.id, inbox_id=inbox_id, direction="in" if n % 2 else "out",
                           sender_kind="contact" if n % 2 else "bot", text=f"m{n}", content_type="text",
                           delivery_status="sent") for cv in conversations for n in range(12)])
    wanted = [i.id for i in identities[:200]]
    afters = {identity_id: 0 if n % 10 == 0 else 2**40 for n, identity_id in enumerate(wanted)}
    params = {"ids": wanted, "afters": list(afters.values()), "after": 0, "since": chat_svc.recent(60), "limit": 5000}
    import asyncpg

    from scrm.db.fast_reads import _Compiled, _connect_kwargs

    dialect = ctx.db.engine.dialect
    conn = await asyncpg.connect(**_connect_kwargs(ctx.db.engine.url, dialect))
    try:
        plans = []
        for statement, values in ((chat_svc._many_select(False), params),  # noqa: SLF001 - the statements it runs
                                  (chat_svc._states_select(False), {"ids": wanted})):  # noqa: SLF001
            compiled = _Compiled(statement, dialect, values)
            plans.append(await conn.fetchval(f"EXPLAIN (FORMAT JSON) {compiled.sql}", *compiled.args(values)))
    finally:
        await conn.close()
    plan, state_plan = plans
    for found in (plan, state_plan):
        scans = found if isinstance(found, str) else json.dumps(found)
        assert '"Seq Scan"' not in scans and "Index Scan Backward" not in scans, scans
    rows = await chat_svc.messages_of_many(ctx, inbox_id, "key", afters, recent_since=chat_svc.recent(60), limit=5000)
    assert rows is not None and sum(len(v) for v in rows.values()) == 20 * 12 + 180 * 12  # all recent: the lookback


async def _hello(client: Any, visitor: Visitor, after: int = 0) -> Any:
    ws = await client.ws_connect(f"/chat/{visitor.inbox.id}/ws")
    await ws.send_json({"type": "auth", "token": visitor.token, "after": after})
    assert (await ws.receive_json(timeout=5))["type"] == "hello"
    return ws


async def test_a_socket_whose_answer_came_while_it_was_away_is_read_first_when_it_reconnects(
        visitor: Visitor, client, ctx, web_inbox, monkeypatch):
    """A reconnect storm: every socket of the site asks for a resync read at once. The visitor whose bot answer
    was stored while the socket was down (it asked just before the blip) gets that answer with the new
    messages' reads, not behind every other socket's resync; a visitor with nothing new waits its turn."""
    from scrm import events as ev
    from scrm.services.webchat.push import hub_for

    await visitor.session()
    sent = await visitor.send("在吗", status=201)
    await ctx.bus.drain(5)
    ws = await _hello(client, visitor)
    while not any(k in hub_for(ctx).by_conversation for k in (sent["conversation_id"],)):
        await asyncio.sleep(0.01)  # its first read shows the conversation: the socket watches it
    await ws.close()
    while hub_for(ctx).connections:
        await asyncio.sleep(0.01)
    other = Visitor(client, web_inbox)
    await other.session()
    # The answer is stored while the socket is down (its push finds no connection).
    await ctx.bus.publish([ev.Event(ev.MESSAGE_CREATED, {
        "conversation_id": sent["conversation_id"], "message_id": sent["id"] + 1000, "direction": "out"})])
    catchup = catchup_for(ctx)
    monkeypatch.setattr(catchup, "_start", lambda: None)  # the reads stay queued: their order is what is asked
    sockets = [await _hello(client, other), await _hello(client, visitor, after=sent["id"])]
    topics = {c.topic for c in catchup.urgent}  # type: ignore[attr-defined]
    waiting = {c.topic for c in catchup.waiting}  # type: ignore[attr-defined]
    assert any(t.endswith(visitor_of(visitor)) for t in topics)
    assert not any(t.endswith(visitor_of(other)) for t in topics) and any(t.endswith(visitor_of(other)) for t in waiting)
    assert not hub_for(ctx).take_missed(next(iter(topics)))  # asked once: a later reconnect is a plain resync
    for s in sockets:
        await s.close()


def visitor_of(visitor: Visitor) -> str:
    """The visitor id its token names (the push topic's end)."""
    from channels.web.tokens import verify_visitor

    return verify_visitor(visitor.inbox.secrets["token_key"], visitor.inbox.id, visitor.token) or "?"


def test_the_hub_forgets_the_oldest_missed_replies_beyond_its_bound(monkeypatch):
    """What a hub remembers for reconnects stays bounded, however many visitors go away."""
    from scrm.services.webchat import push

    monkeypatch.setattr(push, "MISSED_MAX", 2)
    hub = push.VisitorHub(SimpleNamespace())  # type: ignore[arg-type]
    for topic in ("a", "b", "c"):
        hub.note_missed(topic)
    assert list(hub.missed) == ["b", "c"]
    assert hub.take_missed("c") and not hub.take_missed("a")


async def test_a_new_message_pushed_to_a_visitor_not_connected_is_remembered_for_the_reconnect(ctx):
    """The outbox worker's push of a reply (any process, through Redis when configured) to a visitor whose
    sockets are all down marks the visitor's next connection for a first read with the new messages."""
    from scrm.services.webchat.push import hub_for, publish

    hub = hub_for(ctx)
    hub._start()
    await asyncio.wait_for(hub.ready.wait(), 5)
    await publish(ctx, "1:v:away", '{"t": "m", "c": 3, "m": 9}')
    await publish(ctx, "1:v:typing", '{"t": "typing", "c": 3}')  # a passing signal: nothing to read
    for _ in range(200):
        if "1:v:away" in hub.missed:
            break
        await asyncio.sleep(0.01)
    assert hub.take_missed("1:v:away") and not hub.take_missed("1:v:typing")


def test_serve_queues_a_whole_reconnect_storm_for_accept(monkeypatch):
    """Every socket of a site reconnects at once after a blip: the listen queue takes them all, so none waits
    for its client's SYN retry (a second or more; aiohttp's default queue of 128 dropped hundreds)."""
    import aiohttp.web

    from scrm import cli
    from scrm.settings import load_settings

    seen: dict[str, Any] = {}
    monkeypatch.setattr(aiohttp.web, "run_app", lambda _app, **kw: seen.update(kw))
    monkeypatch.setattr("scrm.web.app.create_app", lambda _settings: object())
    monkeypatch.setattr(cli, "_tune_gc", lambda: None)
    cli.serve(load_settings())
    assert seen["backlog"] >= 2000
