"""Web chat visitor endpoints without a browser: sessions, identity, origins, messages, limits, blocking."""

from __future__ import annotations

import asyncio

from aiohttp import FormData, WSMsgType
from sqlalchemy import func, select

from channels.web.tokens import identifier_hash, sign_visitor
from scrm.db.models import Contact, ContactIdentity, Delivery, Inbox, Message
from scrm.delivery.worker import OutboxWorker
from scrm.services.webchat.push import hub_for
from tests.channels.web.conftest import SITE, Visitor, make_web_inbox
from tests.conftest import make_inbox

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + b"\x00" * 64


async def test_anonymous_visitor_keeps_their_identity_with_the_token(visitor: Visitor, ctx):
    first = await visitor.session()
    assert first["token"] and not first["identified"] and first["messages"] == []
    await visitor.send("你好，在吗？", status=201)
    again = await visitor.session()
    assert [m["text"] for m in again["messages"] if m["from"] == "visitor"] == ["你好，在吗？"]
    stranger = Visitor(visitor.client, visitor.inbox)
    stranger.token = first["token"][:-4] + "AAAA"  # forged: a new anonymous visitor, not the first one
    assert (await stranger.session())["messages"] == []
    async with ctx.db.session() as s:
        assert await s.scalar(select(func.count()).select_from(ContactIdentity)
                              .where(ContactIdentity.inbox_id == visitor.inbox.id)) == 1


async def test_a_client_message_id_is_stored_once(visitor: Visitor, ctx):
    await visitor.session()
    a = await visitor.send("resent after a reconnect", client_id="c-0000001", status=201)
    b = await visitor.send("resent after a reconnect", client_id="c-0000001", status=200)
    assert b["duplicate"] and b["id"] == a["id"]
    other = Visitor(visitor.client, visitor.inbox)
    await other.session()
    c = await other.send("same client id, another visitor", client_id="c-0000001", status=201)
    assert c["id"] != a["id"] and c["conversation_id"] != a["conversation_id"]


async def test_identity_verification_accepts_a_valid_hash_and_refuses_a_forged_one(client, web_inbox: Inbox, ctx):
    secret = web_inbox.secrets["hmac_secret"]
    good = Visitor(client, web_inbox)
    data = await good.session(identifier="user-42", identifier_hash=identifier_hash(secret, "user-42"),
                              name="张三", email="zhang@example.com", attributes={"plan": "pro"})
    assert data["identified"] and data["visitor"]["name"] == "张三"
    await good.send("from my laptop", status=201)
    await ctx.bus.drain(5)  # the bot's answers are part of the history too, whenever they commit
    on_laptop = await good.session(identifier="user-42", identifier_hash=identifier_hash(secret, "user-42"))
    phone = Visitor(client, web_inbox)  # another device, same user: same contact and history
    again = await phone.session(identifier="user-42", identifier_hash=identifier_hash(secret, "user-42"))
    assert [m["text"] for m in again["messages"]][0] == "from my laptop"
    assert again["messages"] == on_laptop["messages"]
    bad = Visitor(client, web_inbox)
    refused = await bad.session(401, identifier="user-42", identifier_hash=identifier_hash("wrong-secret-xxxxxx", "user-42"))
    assert refused["error"]["code"] == "bad_identity"
    async with ctx.db.session() as s:
        contact = await s.scalar(select(Contact).join(ContactIdentity).where(ContactIdentity.external_id == "u:user-42"))
    assert contact.email == "zhang@example.com" and contact.attributes["plan"] == "pro"


async def test_an_inbox_that_requires_identity_refuses_anonymous_visitors(client, ctx):
    inbox = await make_web_inbox(ctx, require_identity=True)
    data = await Visitor(client, inbox).session(401)
    assert data["error"]["code"] == "identity_required"


async def test_a_site_that_is_not_allowed_gets_no_config_session_or_socket(client, web_inbox: Inbox):
    r = await client.get(f"/chat/{web_inbox.id}/config", headers={"Origin": "https://evil.example"})
    refused = await r.json()  # readable by the refused page's loader (so it can say why), with no settings in it
    assert r.status == 403 and refused["error"]["code"] == "origin_not_allowed" and "title" not in refused
    r = await client.get(f"/chat/{web_inbox.id}/config?lang=zh", headers={"Origin": SITE})
    assert r.status == 200 and r.headers["Access-Control-Allow-Origin"] == SITE
    assert (await r.json())["title"] == "在线客服"
    assert (await Visitor(client, web_inbox, origin="https://evil.example").session(403))["error"]["code"] == "origin_not_allowed"
    r = await client.get(f"/chat/{web_inbox.id}/ws", headers={"Origin": "https://evil.example", "Connection": "Upgrade",
                                                            "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                                                            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
    assert r.status == 403
    page = await client.get(f"/chat/{web_inbox.id}/widget")
    csp = page.headers["Content-Security-Policy"]
    assert f"frame-ancestors 'self' {SITE}" in csp and "script-src 'self'" in csp


async def test_messages_need_a_valid_token_and_respect_the_limits(client, ctx):
    inbox = await make_web_inbox(ctx, messages_per_minute=3, max_message_chars=20)
    v = Visitor(client, inbox)
    assert (await v.send("no session yet", status=401))["error"]["code"] == "bad_visitor_token"
    v.token = sign_visitor("k" * 48, inbox.id, "v:someone-else")  # signed with another key
    await v.send("forged", status=401)
    v.token = None
    await v.session()
    assert (await v.send("x" * 21, status=413))["error"]["code"] == "too_long"
    for n in range(3):
        await v.send(f"hello {n}", status=201)
    assert (await v.send("one too many", status=429))["error"]["code"] == "rate_limited"
    r = await client.post(f"/chat/{inbox.id}/messages", headers=v.headers(), data=b"{" + b" " * 70000 + b"}",
                          )
    assert r.status == 413
    r = await client.post(f"/chat/{inbox.id}/messages", headers=v.headers(), data=b"{not json")
    assert r.status == 400


async def test_the_address_limit_counts_every_visitor_behind_it(client, ctx):
    inbox = await make_web_inbox(ctx, messages_per_minute=2, messages_per_minute_per_ip=3)
    first, second = Visitor(client, inbox), Visitor(client, inbox)
    await first.session()
    await second.session()
    await first.send("one", status=201)
    await first.send("two", status=201)
    assert "messages;" in (await first.send("three", status=429))["error"]["message"]  # the visitor's own limit
    # ... which counted against the address too: the other visitor there has no room left.
    assert "from this address" in (await second.send("four", status=429))["error"]["message"]


async def test_bot_answer_reaches_a_long_poll(visitor: Visitor, client, ctx):
    await visitor.session()
    sent = await visitor.send("下单后多久发货？", status=201)
    await ctx.bus.drain(5)
    await OutboxWorker(ctx).run_until_idle()
    r = await client.get(f"/chat/{visitor.inbox.id}/poll?after={sent['id']}", headers=visitor.headers())
    data = await r.json()
    bot = [m for m in data["messages"] if m["from"] == "bot"]
    assert any("48 小时" in (m["text"] or "") for m in bot)
    assert any(c["label"] == "查看订单状态" for m in bot for c in m.get("choices", []))


async def test_socket_gets_the_bot_answer_and_a_resend_is_acknowledged_once(visitor: Visitor, client, ctx):
    await visitor.session()
    ws = await client.ws_connect(f"/chat/{visitor.inbox.id}/ws")
    await ws.send_json({"type": "auth", "token": visitor.token, "after": 0})
    assert (await ws.receive_json(timeout=5))["type"] == "hello"
    frame = {"type": "message", "client_id": "client-msg-1", "text": "下单后多久发货？"}
    await ws.send_json(frame)
    await ws.send_json(frame)  # the widget resends what was not acknowledged before a reconnect
    acks, items = [], {}
    worker = asyncio.create_task(_deliver(ctx))
    try:
        while not any(m["from"] == "bot" and "48 小时" in (m["text"] or "") for m in items.values()):
            msg = await ws.receive_json(timeout=10)
            if msg["type"] == "ack":
                acks.append(msg)
            elif msg["type"] == "messages":
                for m in msg["items"]:
                    assert m["id"] not in items, "a message was pushed twice"
                    items[m["id"]] = m
    finally:
        worker.cancel()
    assert len({a["id"] for a in acks}) == 1
    await ws.close()
    async with ctx.db.session() as s:
        assert await s.scalar(select(func.count()).select_from(Message).where(
            Message.inbox_id == visitor.inbox.id, Message.direction == "in")) == 1


async def _deliver(ctx) -> None:
    while True:
        await ctx.bus.drain(2)
        await OutboxWorker(ctx).run_until_idle(timeout=2)
        await asyncio.sleep(0.05)


async def test_socket_auth_is_required(client, web_inbox: Inbox):
    ws = await client.ws_connect(f"/chat/{web_inbox.id}/ws")
    await ws.send_json({"type": "auth", "token": "v1.bad.token"})
    msg = await ws.receive(timeout=5)
    assert msg.type == WSMsgType.CLOSE and msg.data == 4401


async def test_uploads_are_size_and_type_checked_and_served_by_signed_link(visitor: Visitor, client, ctx):
    await visitor.session()
    form = FormData()
    form.add_field("client_id", "upload-0001")
    form.add_field("file", PNG, filename="../../etc/photo.png", content_type="image/png")
    r = await client.post(f"/chat/{visitor.inbox.id}/upload", data=form, headers=visitor.headers())
    assert r.status == 201, await r.text()
    item = (await visitor.history())["messages"][0]
    att = item["attachments"][0]
    assert att["kind"] == "image" and att["filename"] == "photo.png" and att["mime_type"] == "image/png"
    got = await client.get(att["url"])
    assert got.status == 200 and await got.read() == PNG and got.headers["Content-Security-Policy"] == "sandbox"
    assert (await client.get(att["url"].replace("s=", "s=x"))).status == 403
    html = FormData()
    html.add_field("client_id", "upload-0002")
    html.add_field("file", b"<html><script>alert(1)</script></html>", filename="pic.png", content_type="image/png")
    r = await client.post(f"/chat/{visitor.inbox.id}/upload", data=html, headers=visitor.headers())
    assert r.status == 415  # claimed to be a PNG; it is text
    exe = FormData()
    exe.add_field("client_id", "upload-0003")
    exe.add_field("file", b"MZ\x90\x00" + b"\x00" * 100, filename="setup.exe", content_type="application/octet-stream")
    assert (await client.post(f"/chat/{visitor.inbox.id}/upload", data=exe, headers=visitor.headers())).status == 415


async def test_an_oversize_upload_is_refused(client, ctx):
    inbox = await make_web_inbox(ctx, max_attachment_bytes=2048)
    v = Visitor(client, inbox)
    await v.session()
    form = FormData()
    form.add_field("client_id", "upload-big1")
    form.add_field("file", PNG + b"\x00" * 5000, filename="big.png", content_type="image/png")
    r = await client.post(f"/chat/{inbox.id}/upload", data=form, headers=v.headers())
    assert r.status == 413 and (await r.json())["error"]["code"] == "too_large"


async def test_an_agent_blocks_a_visitor(visitor: Visitor, client, ctx, admin_headers):
    await visitor.session()
    sent = await visitor.send("spam spam", status=201)
    ws = await client.ws_connect(f"/chat/{visitor.inbox.id}/ws")
    await ws.send_json({"type": "auth", "token": visitor.token})
    assert (await ws.receive_json(timeout=5))["type"] == "hello"
    r = await client.post(f"/api/v1/webchat/conversations/{sent['conversation_id']}/block", headers=admin_headers)
    assert r.status == 200, await r.text()
    while True:  # the open socket is told and closed
        msg = await ws.receive(timeout=5)
        if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED):
            break
    assert (await visitor.send("again", status=403))["error"]["code"] == "blocked"
    assert (await visitor.session(403))["error"]["code"] == "blocked"
    r = await client.post(f"/api/v1/webchat/conversations/{sent['conversation_id']}/unblock", headers=admin_headers)
    assert r.status == 200
    await visitor.send("sorry", status=201)


async def test_visitor_read_receipts_mark_the_agents_messages_read(visitor: Visitor, client, ctx, admin_headers):
    await visitor.session()
    sent = await visitor.send("human", status=201)
    cid = sent["conversation_id"]
    r = await client.post(f"/api/v1/conversations/{cid}/messages", json={"text": "我来帮您"}, headers=admin_headers)
    assert r.status in (200, 201), await r.text()
    await OutboxWorker(ctx).run_until_idle()
    items = (await visitor.history())["messages"]
    agent = [m for m in items if m["from"] == "agent"][0]
    assert agent["status"] == "sent"
    r = await client.post(f"/chat/{visitor.inbox.id}/read", json={"upto": agent["id"]}, headers=visitor.headers())
    assert (await r.json())["marked"] >= 1
    async with ctx.db.session() as s:
        assert (await s.get(Message, agent["id"])).delivery_status == "read"


async def test_prechat_fields_are_checked_and_fill_the_contact(client, ctx):
    inbox = await make_web_inbox(ctx, prechat_enabled=True, prechat_fields=[
        {"name": "name"}, {"name": "email", "type": "email", "required": True}, {"name": "order_no", "required": True}])
    v = Visitor(client, inbox)
    assert (await v.session())["prechat_needed"]
    r = await client.post(f"/chat/{inbox.id}/prechat", json={"fields": {"name": "李雷"}}, headers=v.headers())
    assert r.status == 400 and (await r.json())["error"]["field"] == "email"
    r = await client.post(f"/chat/{inbox.id}/prechat", json={"fields": {"email": "not-an-email", "order_no": "1"}},
                          headers=v.headers())
    assert (await r.json())["error"]["code"] == "invalid_email"
    r = await client.post(f"/chat/{inbox.id}/prechat", headers=v.headers(), json={
        "fields": {"name": "李雷", "email": "lilei@example.com", "order_no": "A-1"}, "source": "wechat-qr"})
    assert r.status == 200
    assert not (await v.session())["prechat_needed"]
    async with ctx.db.session() as s:
        identity = await s.scalar(select(ContactIdentity).where(ContactIdentity.inbox_id == inbox.id))
        contact = await s.get(Contact, identity.contact_id)
    assert (contact.name, contact.email, contact.attributes["order_no"]) == ("李雷", "lilei@example.com", "A-1")
    assert identity.source == "wechat-qr" and contact.attributes["source"] == "wechat-qr"


async def test_transcript_and_unread_replies_go_out_through_the_email_inbox(client, ctx, admin_headers):
    from datetime import timedelta

    from scrm.db.models import utcnow
    from scrm.services.webchat.email import email_unread_replies

    email = await make_inbox(ctx, "email", name="Mail", settings={"address": "support@shop.example.com"})
    inbox = await make_web_inbox(ctx, email_inbox_id=email.id, email_after_seconds=60)
    v = Visitor(client, inbox)
    await v.session()
    r = await client.post(f"/chat/{inbox.id}/prechat", json={"fields": {"email": "amy@example.com"}, "offline": True},
                          headers=v.headers())
    assert r.status == 200, await r.text()
    sent = await v.send("human", status=201)
    r = await client.post(f"/api/v1/conversations/{sent['conversation_id']}/messages", json={"text": "Here is your answer"},
                          headers=admin_headers)
    await OutboxWorker(ctx).run_until_idle()
    r = await client.post(f"/chat/{inbox.id}/transcript", json={"email": "amy@example.com", "lang": "en"}, headers=v.headers())
    assert r.status == 202, await r.text()
    assert await email_unread_replies(ctx) == 0  # not due yet
    assert await email_unread_replies(ctx, now=utcnow() + timedelta(minutes=5)) == 1
    assert await email_unread_replies(ctx, now=utcnow() + timedelta(minutes=6)) == 0  # once
    async with ctx.db.session() as s:
        mails = (await s.scalars(select(Delivery).where(Delivery.inbox_id == email.id).order_by(Delivery.id))).all()
    assert [m.recipient_id for m in mails] == ["amy@example.com", "amy@example.com"]
    assert "human" in mails[0].payload["text"] and "Here is your answer" in mails[0].payload["text"]
    assert "transcript" in mails[0].payload["metadata"]["subject"]
    assert "Here is your answer" in mails[1].payload["text"]


async def test_broadcasts_skip_web_identities(ctx):
    from datetime import UTC, datetime

    from scrm.services.marketing.broadcast_rules import IdentityInfo, InboxInfo, check_identity

    ident = IdentityInfo.__new__(IdentityInfo)
    fields = {f: None for f in IdentityInfo.__dataclass_fields__}  # type: ignore[attr-defined]
    fields.update(id=1, inbox_id=1, reachable=True, subscribed=True)
    ident = IdentityInfo(**fields)
    inbox_fields = {f: None for f in InboxInfo.__dataclass_fields__}  # type: ignore[attr-defined]
    inbox_fields.update(id=1, channel_type="web", active=True)
    decision = check_identity({}, ident, InboxInfo(**inbox_fields), datetime.now(UTC), ctx.adapters.capabilities("web"))
    assert decision.reason == "web_chat"


async def test_adapter_send_pushes_to_the_visitor_and_refuses_broadcasts(ctx, web_inbox: Inbox):
    from channels.web.adapter import visitor_topic
    from scrm.domain import OutboundMessage, PermanentSendError
    from scrm.services.webchat.push import hub_for

    adapter = ctx.adapters.for_inbox(web_inbox)
    got: list[dict] = []

    class Conn:
        topic = visitor_topic(web_inbox.id, "v:abc")
        conversations: set[int] = set()

        def notify(self, push: dict) -> None:
            got.append(push)

    hub = hub_for(ctx)
    hub.add(Conn())
    await asyncio.wait_for(hub.ready.wait(), 5)
    got.clear()  # the catch-up nudge on subscribing
    result = await adapter.send(OutboundMessage(delivery_id=1, idempotency_key="k", inbox_id=web_inbox.id,
                                                recipient_id="v:abc", text="hi", conversation_id=7, message_id=9))
    assert result.external_id == "web-1"
    for _ in range(100):
        if got:
            break
        await asyncio.sleep(0.02)
    assert {"t": "m", "c": 7, "m": 9} in got
    try:
        await adapter.send(OutboundMessage(delivery_id=2, idempotency_key="k2", inbox_id=web_inbox.id, recipient_id="v:abc",
                                           text="sale!"))
        raise AssertionError("a broadcast to a web visitor must fail")
    except PermanentSendError as exc:
        assert exc.code == "not_supported"
    await hub.close()


async def test_agent_typing_reaches_the_visitor_and_visitor_typing_reaches_the_agent(visitor: Visitor, client, ctx,
                                                                                    admin_headers):
    await visitor.session()
    sent = await visitor.send("human", status=201)
    vws = await client.ws_connect(f"/chat/{visitor.inbox.id}/ws")
    await vws.send_json({"type": "auth", "token": visitor.token})

    async def next_of(ws, kind: str, key: str = "type") -> dict:
        while True:
            msg = await ws.receive_json(timeout=5)
            if msg.get(key) == kind:
                return msg

    await next_of(vws, "conversation")  # the socket now follows the visitor's conversation
    agent = await client.ws_connect("/ws")
    assert (await agent.receive_json(timeout=5))["type"] == "hello"
    await agent.send_json({"type": "typing", "conversation_id": sent["conversation_id"]})
    assert (await next_of(vws, "typing"))["name"] == "Root"
    await agent.send_json({"type": "typing", "conversation_id": sent["conversation_id"], "private": True})
    await vws.send_json({"type": "typing"})
    while not (frame := await next_of(agent, "conversation.typing", "name"))["data"].get("contact"):
        pass  # the agent's own typing comes back first
    assert frame["data"]["agent_id"] is None
    await vws.close()
    await agent.close()


async def test_socket_shows_a_reply_that_commits_below_what_it_already_showed(visitor: Visitor, client, ctx):
    """Ids are drawn before the commit: a bot reply can commit after a later message was shown."""
    await visitor.session()
    ws = await client.ws_connect(f"/chat/{visitor.inbox.id}/ws")
    await ws.send_json({"type": "auth", "token": visitor.token, "after": 0})
    assert (await ws.receive_json(timeout=5))["type"] == "hello"
    worker = asyncio.create_task(_deliver(ctx))  # the bot answers meanwhile; its reply is shown as it commits
    try:
        await _late_commit_case(ws, visitor, ctx)
    finally:
        worker.cancel()
    await ws.close()


async def _late_commit_case(ws, visitor: Visitor, ctx) -> None:
    await ws.send_json({"type": "message", "client_id": "late-commit-1", "text": "在吗"})
    shown: dict[int, dict] = {}
    first = 0
    while not first:
        msg = await ws.receive_json(timeout=10)
        if msg["type"] == "ack":
            first = msg["id"]
        elif msg["type"] == "messages":
            shown.update((m["id"], m) for m in msg["items"])
    async with ctx.db.transaction() as s:
        visitor_msg = await s.get(Message, first)
        conv_id = visitor_msg.conversation_id
        base = await s.scalar(select(func.max(Message.id)))
        # The customer's next message (a high id) is committed and shown first ...
        s.add(Message(id=base + 200, conversation_id=conv_id, inbox_id=visitor.inbox.id, direction="in",
                      sender_kind="contact", text="还有一个问题", external_id="late-2", content_type="text"))
    hub = hub_for(ctx)
    topic = next(iter(hub.by_topic))
    hub.dispatch(topic, {"t": "m", "c": conv_id, "m": base + 200})
    while base + 200 not in shown:
        msg = await ws.receive_json(timeout=10)
        if msg["type"] == "messages":
            shown.update((m["id"], m) for m in msg["items"])
    # ... then the bot's reply to the first one commits with the lower id it drew earlier.
    async with ctx.db.transaction() as s:
        s.add(Message(id=base + 100, conversation_id=conv_id, inbox_id=visitor.inbox.id, direction="out",
                      sender_kind="bot", text="在的，请问有什么可以帮您？", content_type="text",
                      delivery_status="sent"))
    hub.dispatch(topic, {"t": "m", "c": conv_id, "m": base + 100})
    while base + 100 not in shown:
        msg = await ws.receive_json(timeout=10)
        if msg["type"] == "messages":
            for m in msg["items"]:
                assert m["id"] not in shown, "a message was pushed twice"
                shown[m["id"]] = m
    assert shown[base + 100]["text"] == "在的，请问有什么可以帮您？"
