"""The live feed (/ws) and the small endpoints the inbox pages use, without a browser."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import WSMsgType

from tests.conftest import api_message, login, make_agent, make_inbox, post_signed


async def _next_event(ws: Any, name: str, timeout: float = 10.0) -> dict[str, Any]:
    async def read() -> dict[str, Any]:
        while True:
            msg = await ws.receive()
            assert msg.type == WSMsgType.TEXT, msg
            frame = json.loads(msg.data)
            if frame.get("type") == "event" and frame["name"] == name:
                return frame
    return await asyncio.wait_for(read(), timeout)


async def test_socket_refuses_a_caller_without_a_session(client):
    r = await client.get("/ws")
    assert r.status == 401
    assert (await r.json())["error"]["code"] == "unauthenticated"


async def test_socket_refuses_a_foreign_page(client, admin_headers):
    r = await client.get("/ws", headers={"Origin": "https://evil.example", "Connection": "Upgrade",
                                         "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                                         "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
    assert r.status == 403


async def test_marketer_gets_no_live_inbox(client, ctx):
    await make_agent(ctx, "mkt", "marketer")
    await login(client, "mkt", "password-123")
    r = await client.get("/ws")
    assert r.status == 403


async def test_customer_message_reaches_the_agent_socket_with_its_content(client, ctx, admin_headers):
    inbox = await make_inbox(ctx)
    ws = await client.ws_connect("/ws")
    hello = json.loads((await ws.receive()).data)
    assert hello["type"] == "hello"
    await post_signed(client, inbox.id, api_message("m-1", text="<b>你好</b>", name="李雷"))
    created = await _next_event(ws, "message.created")
    assert created["data"]["message"]["text"] == "<b>你好</b>"
    assert created["data"]["message"]["sender_kind"] == "contact"
    updated = await _next_event(ws, "conversation.updated")
    conv = updated["data"]["conversation"]
    assert conv["contact"]["name"] == "李雷" and conv["unread_count"] == 1 and conv["channel_type"] == "api"
    await ws.close()


async def test_stopping_the_server_closes_agent_sockets_so_tabs_reconnect_elsewhere(client, ctx, admin_headers):
    ws = await client.ws_connect("/ws")
    assert json.loads((await ws.receive()).data)["type"] == "hello"
    # An open socket is a request in progress: without closing it, shutdown waits 60 s for the tab to hang up.
    await asyncio.wait_for(client.server.close(), 20)
    msg = await ws.receive(timeout=5)
    assert msg.type == WSMsgType.CLOSE and msg.data == 1001, msg  # going away: the desk's script reconnects
    assert msg.extra == "server shutting down"


async def test_broadcast_delivery_updates_do_not_flood_agent_sockets(client, ctx, admin_headers):
    from scrm import events as ev

    ws = await client.ws_connect("/ws")
    assert json.loads((await ws.receive()).data)["type"] == "hello"
    # 600 broadcast deliveries finishing (no conversation) would close a tab that is 500 frames behind.
    await ctx.bus.publish([ev.Event(ev.DELIVERY_UPDATED, {"delivery_id": i, "status": "sent", "conversation_id": None,
                                                          "kind": "broadcast"}) for i in range(600)])
    await ctx.bus.publish([ev.Event(ev.DELIVERY_UPDATED, {"delivery_id": 9999, "status": "failed", "conversation_id": 7,
                                                          "kind": "message"})])
    frame = await _next_event(ws, "delivery.updated")
    assert frame["data"]["delivery_id"] == 9999  # the conversation's delivery arrives; the broadcast's did not
    assert not ws.closed
    await ws.close()


async def test_typing_is_rebroadcast_to_other_agents(client, ctx, admin_headers):
    inbox = await make_inbox(ctx)
    r = await post_signed(client, inbox.id, api_message("m-1"))
    cid = (await r.json())["results"][0]["conversation_id"]
    first = await client.ws_connect("/ws")
    second = await client.ws_connect("/ws")
    await first.send_str(json.dumps({"type": "typing", "conversation_id": cid}))
    await first.send_str("not json")  # ignored, the socket stays open
    frame = await _next_event(second, "conversation.typing")
    assert frame["data"]["conversation_id"] == cid and frame["data"]["agent_name"] == "Root"
    await second.send_str(json.dumps({"type": "ping"}))
    while (frame := json.loads((await second.receive(timeout=2)).data))["type"] != "pong":
        pass
    await first.close()
    await second.close()


async def test_canned_responses_admin_manages_agents_search(client, ctx, admin_headers):
    r = await client.post("/api/v1/canned_responses", headers=admin_headers,
                          json={"shortcut": "thanks", "title": "Thanks", "text": "谢谢 {{name}}！"})
    assert r.status == 201, await r.text()
    cid = (await r.json())["id"]
    dup = await client.post("/api/v1/canned_responses", headers=admin_headers,
                            json={"shortcut": "thanks", "title": "x", "text": "y"})
    assert dup.status == 409 and "shortcut" in (await dup.json())["error"]["message"]
    bad = await client.post("/api/v1/canned_responses", headers=admin_headers,
                            json={"shortcut": "has space", "title": "x", "text": "y"})
    assert bad.status == 400
    await make_agent(ctx, "mei", "agent")
    client.session.cookie_jar.clear()
    agent_headers = await login(client, "mei", "password-123")
    found = await (await client.get("/api/v1/canned_responses?q=/tha")).json()
    assert [c["shortcut"] for c in found["items"]] == ["thanks"]
    denied = await client.patch(f"/api/v1/canned_responses/{cid}", headers=agent_headers, json={"title": "x"})
    assert denied.status == 403


async def test_simulator_shows_what_the_customer_received_but_no_private_notes(client, ctx, admin_headers):
    inbox = await make_inbox(ctx, "memory", name="Simulator")
    r = await client.post(f"/webhooks/memory/{inbox.id}", json={"id": "s-1", "sender": "sim-user-1", "text": "hi"})
    assert r.status == 200
    conv = (await (await client.get("/api/v1/conversations")).json())["items"][0]
    await client.post(f"/api/v1/conversations/{conv['id']}/messages", json={"text": "internal", "private": True},
                      headers=admin_headers)
    await client.post(f"/api/v1/conversations/{conv['id']}/messages", json={"text": "hello!"}, headers=admin_headers)
    got = await (await client.get(f"/api/v1/simulator/{inbox.id}/messages?sender=sim-user-1")).json()
    seen = [(m["direction"], m["text"]) for m in got["items"]]
    assert seen[0] == ("in", "hi") and seen[-1] == ("out", "hello!")  # the bot's greeting may sit between
    assert all(text != "internal" for _, text in seen)
    other = await client.get(f"/api/v1/simulator/{inbox.id + 99}/messages?sender=sim-user-1")
    assert other.status == 404


async def test_pages_answer_the_app_and_upload_gives_an_attachment(client, admin_headers):
    for path in ("/", "/login", "/conversations/12", "/admin/agents", "/simulator"):
        r = await client.get(path)
        assert r.status == 200 and r.content_type == "text/html", path
        if path != "/":  # "/" is served by app.py's index
            assert "default-src 'self'" in r.headers["Content-Security-Policy"]
    from aiohttp import FormData

    form = FormData()
    form.add_field("file", b"\x89PNG\r\n\x1a\nfake", filename="shot.png", content_type="image/png")
    r = await client.post("/api/v1/uploads", data=form, headers=admin_headers)
    assert r.status == 201, await r.text()
    att = await r.json()
    assert att["kind"] == "image" and att["filename"] == "shot.png"
    assert (await client.get(f"/files/{att['storage_key']}")).status == 200
