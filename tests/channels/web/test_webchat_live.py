"""Web chat sockets: the bot's answer is shown as soon as it is stored, once, to every tab of the visitor."""

from __future__ import annotations

import asyncio
import contextlib
from types import SimpleNamespace

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy import func, select

from scrm.db.models import ContactIdentity, Conversation, Delivery, Message
from scrm.delivery.worker import OutboxWorker
from scrm.services.webchat.facts import facts_lookup
from scrm.services.webchat.push import hub_for, publish, publish_soon
from tests.channels.web.conftest import Visitor


async def _open(client, visitor: Visitor):
    ws = await client.ws_connect(f"/chat/{visitor.inbox.id}/ws")
    await ws.send_json({"type": "auth", "token": visitor.token, "after": 0})
    assert (await ws.receive_json(timeout=5))["type"] == "hello"
    return ws


async def _until_bot(ws, items: dict[int, dict]) -> dict:
    while True:
        msg = await ws.receive_json(timeout=10)
        if msg["type"] == "messages":
            for m in msg["items"]:
                assert m["id"] not in items, "a message was shown twice"
                items[m["id"]] = m
                if m["from"] == "bot":
                    return m


async def test_the_bot_answer_reaches_every_tab_once_stored_and_not_again_when_delivered(visitor: Visitor, client, ctx):
    await visitor.session()
    await visitor.send("发票怎么开？", status=201)  # the visitor is known before the tabs open
    await ctx.bus.drain(5)
    await OutboxWorker(ctx).run_until_idle()
    tabs = [await _open(client, visitor) for _ in range(2)]
    shown: list[dict[int, dict]] = [{}, {}]
    for ws, items in zip(tabs, shown, strict=True):
        await _until_bot(ws, items)  # the history so far

    await tabs[0].send_json({"type": "message", "client_id": "live-question-1", "text": "下单后多久发货？"})
    while (msg := await tabs[0].receive_json(timeout=10))["type"] != "ack":
        if msg["type"] == "messages":
            shown[0].update((m["id"], m) for m in msg["items"])
    await ctx.bus.drain(5)  # the bot answers; the outbox worker has not run
    async with ctx.db.session() as s:
        assert "queued" in set(await s.scalars(select(Delivery.status)))
    answers = [await asyncio.wait_for(_until_bot(ws, items), 10) for ws, items in zip(tabs, shown, strict=True)]
    assert all("48 小时" in (a["text"] or "") for a in answers)

    await OutboxWorker(ctx).run_until_idle()  # the delivery's own push: already shown, nothing is sent again
    for ws, items in zip(tabs, shown, strict=True):
        with contextlib.suppress(TimeoutError):
            while True:
                msg = await ws.receive_json(timeout=0.5)
                assert msg["type"] != "messages" or all(m["id"] not in items for m in msg["items"])
    for ws in tabs:
        await ws.close()


async def test_a_reply_that_commits_below_the_cursor_while_the_tab_reconnects_is_shown_once(visitor: Visitor, client, ctx):
    await visitor.session()
    sent = await visitor.send("在吗", status=201)
    await ctx.bus.drain(5)
    ws = await _open(client, visitor)
    had: dict[int, dict] = {}
    while sent["id"] not in had:
        msg = await ws.receive_json(timeout=10)
        if msg["type"] == "messages":
            had.update((m["id"], m) for m in msg["items"])
    await ws.close()
    async with ctx.db.transaction() as s:
        base = await s.scalar(select(func.max(Message.id)))
        # The tab had the customer's next message (a high id) when the network dropped ...
        s.add(Message(id=base + 200, conversation_id=sent["conversation_id"], inbox_id=visitor.inbox.id,
                      direction="in", sender_kind="contact", text="还有一个问题", external_id="late-2", content_type="text"))
    had[base + 200] = {}
    # ... and while it was away the bot's reply committed with the lower id it drew earlier.
    async with ctx.db.transaction() as s:
        s.add(Message(id=base + 100, conversation_id=sent["conversation_id"], inbox_id=visitor.inbox.id,
                      direction="out", sender_kind="bot", text="在的，请问有什么可以帮您？", content_type="text",
                      delivery_status="sent"))
    ws = await client.ws_connect(f"/chat/{visitor.inbox.id}/ws")
    await ws.send_json({"type": "auth", "token": visitor.token, "after": base + 200, "shown": sorted(had, reverse=True)})
    got: list[int] = []
    with contextlib.suppress(TimeoutError):
        while True:
            msg = await ws.receive_json(timeout=1)
            if msg["type"] == "messages":
                got += [m["id"] for m in msg["items"]]
    assert got == [base + 100]
    await ws.close()


async def test_a_message_sent_over_the_socket_is_shown_on_it_when_the_push_is_lost(visitor: Visitor, client, ctx,
                                                                                    monkeypatch):
    # After a handoff the bot is silent: no later push brings the visitor's own message. Its echo to the
    # visitor's connections is a best-effort pub/sub message, which a busy Redis (the forced reconnect of
    # bench/web_chat.py) can fail to take: the connection that sent it must show it all the same.
    await visitor.session()
    await visitor.send("怎么联系人工客服", status=201)
    await ctx.bus.drain(5)  # the bot hands the conversation to the agents' queue
    async with ctx.db.session() as s:
        assert await s.scalar(select(Conversation.handler)) == "queue"
    ws = await _open(client, visitor)
    shown: dict[int, int] = {}
    with contextlib.suppress(TimeoutError):
        while True:  # the history so far
            msg = await ws.receive_json(timeout=1)
            if msg["type"] == "messages":
                shown.update((m["id"], shown.get(m["id"], 0) + 1) for m in msg["items"])
    assert len(shown) >= 2

    def lost(*_args, **_kwargs) -> None:  # Redis did not take the push
        pass
    monkeypatch.setattr("scrm.web.webchat_api.publish_soon", lost)
    await ws.send_json({"type": "message", "client_id": "after-handoff-1", "text": "还有一个问题"})
    acked = None
    with contextlib.suppress(TimeoutError):
        while True:
            msg = await ws.receive_json(timeout=2)
            if msg["type"] == "ack":
                acked = msg["id"]
            elif msg["type"] == "messages":
                for m in msg["items"]:
                    shown[m["id"]] = shown.get(m["id"], 0) + 1
    assert acked is not None
    assert shown.get(acked) == 1, f"the visitor's own message {acked} was shown {shown.get(acked, 0)} times"
    await ws.close()


async def test_a_push_redis_refuses_still_reaches_the_connections_of_this_process():
    class Refusing:  # redis-py past its pool: "Too many connections", raised before anything is sent
        async def publish(self, *_args: object) -> None:
            raise RedisConnectionError("Too many connections")

    ctx = SimpleNamespace(redis=Refusing(), extras={})
    hub = hub_for(ctx)  # type: ignore[arg-type]
    woken = asyncio.Event()
    hub.polls["webchat:1:v:x"] = {woken}
    with pytest.raises(RedisConnectionError):  # the caller still hears that the push failed
        await publish(ctx, "webchat:1:v:x", '{"t": "m", "c": 1, "m": 2}')  # type: ignore[arg-type]
    assert woken.is_set()


async def test_echo_pushes_queued_while_one_is_in_flight_go_to_redis_together():
    """One round trip per visitor message (the echo to the visitor's other tabs): those queued meanwhile go
    in the next round trip, a pipeline."""
    sent: list[list[str]] = []
    gate, entered = asyncio.Event(), asyncio.Event()

    class Pipeline:
        def __init__(self) -> None:
            self.messages: list[str] = []

        def publish(self, _channel: str, message: str) -> None:
            self.messages.append(message)

        async def execute(self) -> None:
            sent.append(self.messages)

    class Redis:
        async def publish(self, _channel: str, message: str) -> None:
            entered.set()
            await gate.wait()  # the first round trip is slow
            sent.append([message])

        def pipeline(self, transaction: bool = True) -> Pipeline:
            assert not transaction
            return Pipeline()

    ctx = SimpleNamespace(redis=Redis(), extras={})
    publish_soon(ctx, "1:v:a", '{"t": "m", "c": 1, "m": 1}')  # type: ignore[arg-type]
    await asyncio.wait_for(entered.wait(), 2)
    publish_soon(ctx, "1:v:b", '{"t": "m", "c": 2, "m": 2}')  # type: ignore[arg-type]
    publish_soon(ctx, "1:v:c", '{"t": "m", "c": 3, "m": 3}')  # type: ignore[arg-type]
    await asyncio.sleep(0)
    assert not sent
    gate.set()
    for _ in range(20):
        await asyncio.sleep(0)
    assert sent == [['1:v:a\n{"t": "m", "c": 1, "m": 1}'],
                    ['1:v:b\n{"t": "m", "c": 2, "m": 2}', '1:v:c\n{"t": "m", "c": 3, "m": 3}']]


async def test_sockets_opening_together_look_their_visitors_up_in_one_statement(visitor: Visitor, ctx, monkeypatch):
    await visitor.session()
    sent = await visitor.send("在吗", status=201)
    async with ctx.db.session() as s:
        known = await s.scalar(select(Conversation.identity_id).where(Conversation.id == sent["conversation_id"]))
        external = await s.scalar(select(ContactIdentity.external_id).where(ContactIdentity.id == known))
    statements = []
    hot_read = ctx.db.hot_read

    async def counted(*args, **kwargs):
        statements.append(args)
        return await hot_read(*args, **kwargs)
    monkeypatch.setattr(ctx.db, "hot_read", counted)
    lookup = facts_lookup(ctx)
    first = asyncio.ensure_future(lookup.get(visitor.inbox.id, "v:nobody-yet"))
    await asyncio.sleep(0)  # its lookup is in flight: the next sockets wait for one together
    found = await asyncio.gather(first, *[lookup.get(visitor.inbox.id, v) for v in (external, "v:nobody-2", external)])
    assert found == [None, (known, False), None, (known, False)]
    assert len(statements) == 2


async def test_the_socket_shows_each_message_as_the_history_does(visitor: Visitor, client, ctx):
    """The socket's batched reads (straight through asyncpg on PostgreSQL) and the history endpoint
    (SQLAlchemy) show the same messages, field for field: text, sender, time, the bot's buttons."""
    await visitor.session()
    await visitor.send("发票怎么开？", status=201)
    await ctx.bus.drain(5)
    await OutboxWorker(ctx).run_until_idle()
    history = {m["id"]: m for m in (await visitor.history())["messages"]}
    assert any(m.get("choices") for m in history.values())  # the bot's buttons are among them
    ws = await _open(client, visitor)
    shown: dict[int, dict] = {}
    async with asyncio.timeout(10):
        while len(shown) < len(history):
            msg = await ws.receive_json()
            if msg["type"] == "messages":
                for m in msg["items"]:
                    assert m["id"] not in shown, "a message was shown twice"
                    shown[m["id"]] = m
    assert shown == history
    await ws.close()


async def test_a_message_sent_over_the_socket_is_shown_there_when_no_answer_follows(visitor: Visitor, client, ctx):
    """With an agent on the chat the bot stays quiet: the visitor's own message still comes back over the
    socket (its server copy, once), without waiting for another push."""
    await visitor.session()
    ws = await _open(client, visitor)
    await ws.send_json({"type": "message", "client_id": "human-please-1", "text": "怎么联系人工客服"})
    shown: dict[int, dict] = {}
    acked = None
    async with asyncio.timeout(10):
        while acked is None or acked not in shown:
            msg = await ws.receive_json()
            if msg["type"] == "ack":
                acked = msg["id"]
            elif msg["type"] == "messages":
                for m in msg["items"]:
                    assert m["id"] not in shown, "a message was shown twice"
                    shown[m["id"]] = m
    assert shown[acked]["from"] == "visitor" and shown[acked]["client_id"] == "human-please-1"
    await ws.close()


async def test_a_closed_visitor_socket_is_freed_without_the_cyclic_collector(visitor: Visitor, client, monkeypatch):
    """aiohttp's connection keeps the socket's heartbeat callback after it is lost: unbroken, every closed socket
    left ~27 objects in reference cycles for the collector (a reconnect of 2,000: one ~200 ms pass)."""
    import gc
    import weakref

    from scrm.web import webchat_ws

    released: list[weakref.ref] = []
    real = webchat_ws.release_socket

    def spy(request, ws) -> None:
        real(request, ws)
        released.append(weakref.ref(ws))

    monkeypatch.setattr(webchat_ws, "release_socket", spy)
    await visitor.session()
    ws = await _open(client, visitor)
    gc.collect()
    gc.disable()
    try:
        await ws.close()
        for _ in range(100):
            if released and released[0]() is None:
                break
            await asyncio.sleep(0.02)
        assert released and released[0]() is None, "the closed socket waits for the cyclic collector"
    finally:
        gc.enable()


async def test_stopping_the_server_closes_every_visitor_tab_at_once_so_they_reconnect_elsewhere(visitor: Visitor, client):
    await visitor.session()
    tabs = [await _open(client, visitor) for _ in range(3)]
    await asyncio.wait_for(client.server.close(), 20)  # open sockets would hold shutdown for its whole timeout
    for ws in tabs:
        msg = await ws.receive(timeout=5)
        assert msg.data == 1001 and msg.extra == "server shutting down", msg  # the widget reconnects
