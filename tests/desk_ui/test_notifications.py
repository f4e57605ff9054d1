"""Notifications: @mentions recorded with the note, assignment / reply / SLA notifications recorded once,
per-agent delivery on the live socket (never to another agent), read state."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import WSMsgType
from sqlalchemy import select

from scrm.db.models_desk_ui import Notification
from scrm.events import Event
from scrm.listeners import notifications as listener
from scrm.services.desk.notifications import find_mentions
from tests.conftest import api_message, login, make_agent, make_inbox, post_signed

AGENTS = [(1, "li", "李雷"), (2, "lisa", "Lisa"), (3, "wang", "王小明"), (4, "wang2", "王小")]


def test_mentions_match_whole_names_longest_first() -> None:
    assert find_mentions("@lisa 请看", AGENTS) == [2]
    assert find_mentions("@li 和 @LISA", AGENTS) == [1, 2]
    assert find_mentions("@王小明请跟进", AGENTS) == [3]  # not also 王小
    assert find_mentions("@王小 处理一下", AGENTS) == [4]
    assert find_mentions("mail me at li@example.com", AGENTS) == []
    assert find_mentions("@李雷", AGENTS) == [1]
    assert find_mentions("no mention", AGENTS) == []


async def _frames(ws: Any, name: str, timeout: float = 3.0) -> dict[str, Any]:
    async def read() -> dict[str, Any]:
        while True:
            msg = await ws.receive()
            assert msg.type == WSMsgType.TEXT, msg
            frame = json.loads(msg.data)
            if frame.get("type") == "event" and frame["name"] == name:
                return frame
    return await asyncio.wait_for(read(), timeout)


async def test_mention_in_a_note_notifies_that_agent_only_and_live(client, ctx, admin, aiohttp_client):
    inbox = await make_inbox(ctx)
    li = await make_agent(ctx, "li", "agent")
    await make_agent(ctx, "wang", "agent")
    r = await post_signed(client, inbox.id, api_message("m-1", text="你好", name="张三"))
    cid = (await r.json())["results"][0]["conversation_id"]
    # Li and Wang each have a socket (own clients: own cookies).
    from scrm.web.app import create_app

    li_client = await aiohttp_client(create_app(ctx.settings, ctx=ctx, run_background=False))
    await login(li_client, "li", "password-123")
    li_ws = await li_client.ws_connect("/ws")
    wang_client = await aiohttp_client(create_app(ctx.settings, ctx=ctx, run_background=False))
    await login(wang_client, "wang", "password-123")
    wang_ws = await wang_client.ws_connect("/ws")
    for ws in (li_ws, wang_ws):
        assert json.loads((await ws.receive()).data)["type"] == "hello"

    headers = await login(client, "root", "correct-horse-1")
    resp = await client.post(f"/api/v1/conversations/{cid}/messages", json={"text": "@li 请跟进 <b>x</b>", "private": True},
                             headers=headers)
    assert resp.status == 201
    frame = await _frames(li_ws, "notification.created")
    n = frame["data"]["notification"]
    assert n["kind"] == "mention" and n["agent_id"] == li and n["conversation_id"] == cid
    assert n["data"]["by"] == "Root" and n["data"]["snippet"] == "@li 请跟进 <b>x</b>" and n["data"]["contact"] == "张三"
    # Wang's socket gets nothing about it.
    try:
        await _frames(wang_ws, "notification.created", timeout=0.5)
        raise AssertionError("another agent got the notification")
    except TimeoutError:
        pass

    listed = await (await li_client.get("/api/v1/notifications")).json()
    assert listed["unread"] == 1 and listed["items"][0]["kind"] == "mention"
    mentions = await (await li_client.get("/api/v1/notifications?kind=mention")).json()
    assert [x["id"] for x in mentions["items"]] == [n["id"]]
    li_headers = await login(li_client, "li", "password-123")
    marked = await (await li_client.post("/api/v1/notifications/read", json={"conversation_id": cid}, headers=li_headers)).json()
    assert marked == {"marked": 1, "unread": 0}
    bad = await li_client.post("/api/v1/notifications/read", json={}, headers=li_headers)
    assert bad.status == 400
    for ws in (li_ws, wang_ws):
        await ws.close()


async def test_assignment_reply_and_sla_notify_the_assignee_once(client, ctx, admin, admin_headers):
    inbox = await make_inbox(ctx)
    li = await make_agent(ctx, "li", "agent")
    r = await post_signed(client, inbox.id, api_message("m-1", text="转人工", name="张三"))
    cid = (await r.json())["results"][0]["conversation_id"]
    await ctx.bus.drain(3)
    # An agent takes it from the bot (the bot answers while it handles a conversation: no reply notices then).
    assert (await client.post(f"/api/v1/conversations/{cid}/handler", json={"handler": "human"},
                              headers=admin_headers)).status == 200
    assert (await client.post(f"/api/v1/conversations/{cid}/assign", json={"assignee_id": li},
                              headers=admin_headers)).status == 200
    await ctx.bus.drain(3)
    for i in range(2, 4):  # two more customer messages: one "replied" entry counting them
        await post_signed(client, inbox.id, api_message(f"m-{i}", text=f"还在吗 {i}", name="张三"))
        await ctx.bus.drain(3)
    event = Event("sla.breached", {"conversation_id": cid, "kind": "first_response", "due_at": "2026-01-01T00:00:00+00:00"})
    await listener.handle(ctx, event)
    await listener.handle(ctx, event)  # the same event again (a worker took over): no second row
    # Assigning to yourself notifies nobody.
    headers = await login(client, "li", "password-123")
    assert (await client.post(f"/api/v1/conversations/{cid}/assign", json={"assignee_id": li}, headers=headers)).status == 200
    await ctx.bus.drain(3)
    async with ctx.db.session() as s:
        rows = (await s.scalars(select(Notification).where(Notification.agent_id == li).order_by(Notification.id))).all()
    kinds = [(n.kind, n.data.get("count")) for n in rows]
    assert kinds == [("assigned", None), ("replied", 2), ("sla_breached", None)], kinds
    assert rows[1].data["snippet"] == "还在吗 3" and rows[2].data["sla_kind"] == "first_response"
    assert all(n.data["contact"] == "张三" for n in rows)


async def test_marketers_read_their_notifications_but_not_support_preferences(client, ctx):
    await make_agent(ctx, "mkt", "marketer")
    await login(client, "mkt", "password-123")
    # Marketers read their own notifications (the daily churn warning); the support preferences stay closed.
    listed = await client.get("/api/v1/notifications")
    assert listed.status == 200 and (await listed.json())["items"] == []
    assert (await client.get("/api/v1/me/preferences")).status == 403
