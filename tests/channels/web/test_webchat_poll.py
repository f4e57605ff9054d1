"""Long polling (the widget's fallback where WebSockets are blocked): a reply that commits below what the
client was already shown still reaches it, and nothing is shown twice."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select

from scrm.db.models import Message
from scrm.services.webchat.push import hub_for
from scrm.web import webchat_api
from tests.channels.web.conftest import Visitor


async def _poll(visitor: Visitor, query: str) -> dict:
    r = await visitor.client.get(f"/chat/{visitor.inbox.id}/poll?{query}", headers=visitor.headers())
    assert r.status == 200, await r.text()
    return await r.json()  # type: ignore[no-any-return]


async def _add(ctx, **row) -> None:
    async with ctx.db.transaction() as s:
        s.add(Message(content_type="text", **row))


async def test_long_poll_shows_a_reply_that_commits_below_its_cursor_once(visitor: Visitor, ctx, monkeypatch):
    monkeypatch.setattr(webchat_api, "POLL_SECONDS", 0.3)
    await visitor.session()
    sent = await visitor.send("在吗", status=201)
    await ctx.bus.drain(5)  # whatever the bot does with it is stored before the polls start
    first = await _poll(visitor, "after=0")
    assert sent["id"] in [m["id"] for m in first["messages"]]
    conv_id, inbox_id = sent["conversation_id"], visitor.inbox.id
    async with ctx.db.session() as s:
        base = await s.scalar(select(func.max(Message.id)))

    # The customer's next message (a high id) commits and is shown first ...
    await _add(ctx, id=base + 200, conversation_id=conv_id, inbox_id=inbox_id, direction="in", sender_kind="contact",
               text="还有一个问题", external_id="late-2")
    second = await _poll(visitor, f"cursor={first['cursor']}")
    assert [m["id"] for m in second["messages"]] == [base + 200]

    # ... then the bot's reply to the first one commits with the lower id it drew earlier, while a poll waits.
    monkeypatch.setattr(webchat_api, "POLL_SECONDS", 10.0)
    waiting = asyncio.create_task(_poll(visitor, f"cursor={second['cursor']}"))
    await asyncio.sleep(0.3)
    assert not waiting.done(), "nothing new yet: the poll waits"
    await _add(ctx, id=base + 100, conversation_id=conv_id, inbox_id=inbox_id, direction="out", sender_kind="bot",
               text="在的，请问有什么可以帮您？", delivery_status="sent")
    hub = hub_for(ctx)
    hub.dispatch(next(iter(hub.polls)), {"t": "m", "c": conv_id, "m": base + 100})  # the worker's push
    third = await asyncio.wait_for(waiting, 5)
    assert [(m["id"], m["text"]) for m in third["messages"]] == [(base + 100, "在的，请问有什么可以帮您？")]

    # Shown once: the next poll (and one after it) has nothing, however recent those rows are.
    monkeypatch.setattr(webchat_api, "POLL_SECONDS", 0.3)
    fourth = await _poll(visitor, f"cursor={third['cursor']}")
    assert fourth["messages"] == []
    assert (await _poll(visitor, f"cursor={fourth['cursor']}"))["messages"] == []


async def test_a_reconnecting_poller_without_a_cursor_gets_what_is_after_its_last_id(visitor: Visitor, ctx, monkeypatch):
    monkeypatch.setattr(webchat_api, "POLL_SECONDS", 0.3)
    await visitor.session()
    one = await visitor.send("第一条", status=201)
    two = await visitor.send("第二条", status=201)
    await ctx.bus.drain(5)  # the bot's answers committed too: the second poll then has nothing new to show
    data = await _poll(visitor, f"after={one['id']}")
    ids = [m["id"] for m in data["messages"]]
    assert two["id"] in ids and one["id"] not in ids
    assert (await _poll(visitor, f"cursor={data['cursor']}"))["messages"] == []


async def test_a_forged_cursor_is_refused(visitor: Visitor, monkeypatch):
    await visitor.session()
    for bad in ("abc", "1.-2", "9" * 30, ".".join(["1"] * 600)):
        r = await visitor.client.get(f"/chat/{visitor.inbox.id}/poll?cursor={bad}", headers=visitor.headers())
        assert r.status == 400
        assert (await r.json())["error"]["code"] == "bad_query"
