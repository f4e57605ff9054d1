"""The agent REST API on conversations, with real delivery through the outbox worker."""

from __future__ import annotations

from sqlalchemy import select

from scrm.db.models import Delivery, Message
from scrm.delivery.worker import OutboxWorker
from tests.conftest import api_message, login, make_agent, make_inbox, post_signed


async def _setup(client, ctx, callback_url=None):
    inbox = await make_inbox(ctx, settings={"callback_url": callback_url} if callback_url else {})
    r = await post_signed(client, inbox.id, api_message("c-1", sender="cust-1", text="我要退货", name="王小明"))
    cid = (await r.json())["results"][0]["conversation_id"]
    return inbox, cid


async def test_reply_goes_through_the_outbox_to_the_signed_callback(client, ctx, admin_headers, callback_server):
    inbox, cid = await _setup(client, ctx, callback_server.url)
    r = await client.post(f"/api/v1/conversations/{cid}/messages", json={"text": "好的，已为您办理"}, headers=admin_headers)
    assert r.status == 201
    msg = await r.json()
    assert msg["delivery_status"] == "queued" and msg["sender_kind"] == "agent"
    assert await OutboxWorker(ctx).run_until_idle() == 1
    [got] = callback_server.received
    assert got["message"]["text"] == "好的，已为您办理" and got["recipient"]["id"] == "cust-1"
    detail = await (await client.get(f"/api/v1/conversations/{cid}")).json()
    out = [m for m in detail["messages"] if m["sender_kind"] == "agent"][-1]
    assert out["delivery_status"] == "sent" and out["external_id"] == f"ext-{got['delivery_id']}"
    assert detail["handler"] == "human" and detail["assignee"]["display_name"] == "Root"
    assert detail["first_reply_at"] is not None and detail["waiting_since"] is None


async def test_private_note_is_never_sent(client, ctx, admin_headers, callback_server):
    _, cid = await _setup(client, ctx, callback_server.url)
    r = await client.post(f"/api/v1/conversations/{cid}/messages", json={"text": "客户很着急", "private": True},
                          headers=admin_headers)
    assert r.status == 201 and (await r.json())["private"] is True
    assert await OutboxWorker(ctx).run_until_idle() == 0
    assert callback_server.received == []
    async with ctx.db.session() as s:
        assert (await s.scalars(select(Delivery))).all() == []


async def test_failed_delivery_shows_the_reason_and_can_be_retried(client, ctx, admin_headers, callback_server):
    _, cid = await _setup(client, ctx, callback_server.url)
    callback_server.fail_next = [422]
    r = await client.post(f"/api/v1/conversations/{cid}/messages", json={"text": "hello"}, headers=admin_headers)
    mid = (await r.json())["id"]
    await OutboxWorker(ctx).run_until_idle()
    detail = await (await client.get(f"/api/v1/conversations/{cid}")).json()
    failed = next(m for m in detail["messages"] if m["id"] == mid)
    assert failed["delivery_status"] == "failed" and "HTTP 422" in failed["delivery_error"]
    r = await client.post(f"/api/v1/messages/{mid}/retry", headers=admin_headers)
    assert r.status == 200 and (await r.json())["delivery_status"] == "queued"
    await OutboxWorker(ctx).run_until_idle()
    assert len(callback_server.received) == 1
    async with ctx.db.session() as s:
        assert (await s.get(Message, mid)).delivery_status == "sent"


async def test_empty_reply_and_unknown_conversation_are_clear_errors(client, ctx, admin_headers):
    _, cid = await _setup(client, ctx)
    r = await client.post(f"/api/v1/conversations/{cid}/messages", json={"text": "  "}, headers=admin_headers)
    assert r.status == 400 and (await r.json())["error"]["code"] == "empty_reply"
    r = await client.post("/api/v1/conversations/9999/messages", json={"text": "x"}, headers=admin_headers)
    assert r.status == 404
    r = await client.post(f"/api/v1/conversations/{cid}/status", json={"status": "closed-ish"}, headers=admin_headers)
    assert r.status == 400 and "status" in (await r.json())["error"]["message"]


async def test_list_tabs_filters_search_and_cursor(client, ctx, admin, admin_headers):
    inbox = await make_inbox(ctx)
    cids = []
    for i in range(7):
        r = await post_signed(client, inbox.id, api_message(f"l-{i}", sender=f"s{i}", text=f"问题{i}", name=f"客户{i}"))
        cids.append((await r.json())["results"][0]["conversation_id"])
    await client.post(f"/api/v1/conversations/{cids[0]}/assign", json={"assignee_id": admin["id"]}, headers=admin_headers)
    await client.post(f"/api/v1/conversations/{cids[1]}/status", json={"status": "resolved"}, headers=admin_headers)
    await client.patch(f"/api/v1/conversations/{cids[2]}", json={"labels": ["vip", "退款"]}, headers=admin_headers)

    async def ids(query: str) -> list[int]:
        data = await (await client.get(f"/api/v1/conversations?{query}")).json()
        return [c["id"] for c in data["items"]]

    assert await ids("tab=mine") == [cids[0]]
    assert cids[0] not in await ids("tab=unassigned")
    assert cids[1] not in await ids("") and await ids("status=resolved") == [cids[1]]
    assert await ids("label=vip") == [cids[2]]
    assert await ids("q=问题4") == [cids[4]]
    assert await ids("q=客户5") == [cids[5]]
    page1 = await (await client.get("/api/v1/conversations?limit=3&status=all")).json()
    page2 = await (await client.get(f"/api/v1/conversations?limit=3&status=all&cursor={page1['next_cursor']}")).json()
    page3 = await (await client.get(f"/api/v1/conversations?limit=3&status=all&cursor={page2['next_cursor']}")).json()
    seen = [c["id"] for p in (page1, page2, page3) for c in p["items"]]
    assert sorted(seen) == sorted(cids) and len(seen) == len(set(seen)) and page3["next_cursor"] is None
    counts = await (await client.get("/api/v1/conversations/counts")).json()
    assert counts == {"mine": 1, "unassigned": 5, "all": 6, "waiting": 0}
    r = await client.get("/api/v1/conversations?tab=everything")
    assert r.status == 400


async def test_take_over_hand_back_and_system_notes(client, ctx, admin_headers):
    _, cid = await _setup(client, ctx)
    r = await client.post(f"/api/v1/conversations/{cid}/handler", json={"handler": "human"}, headers=admin_headers)
    assert (await r.json())["handler"] == "human"
    r = await client.post(f"/api/v1/conversations/{cid}/handler", json={"handler": "bot"}, headers=admin_headers)
    assert (await r.json())["handler"] == "bot"
    msgs = (await (await client.get(f"/api/v1/conversations/{cid}")).json())["messages"]
    notes = [m["text"] for m in msgs if m["sender_kind"] == "system"]
    assert len(notes) == 2 and "接管" in notes[0] and "交还机器人" in notes[1]


async def test_assign_to_inactive_or_unknown_agent_is_refused(client, ctx, admin_headers):
    _, cid = await _setup(client, ctx)
    r = await client.post(f"/api/v1/conversations/{cid}/assign", json={"assignee_id": 424242}, headers=admin_headers)
    assert r.status == 400
    other = await make_agent(ctx, "mei", "agent")
    r = await client.post(f"/api/v1/conversations/{cid}/assign", json={"assignee_id": other}, headers=admin_headers)
    assert r.status == 200 and (await r.json())["assignee"]["id"] == other


async def test_snooze_needs_future_time_and_messages_page_backwards(client, ctx, admin_headers):
    inbox, cid = await _setup(client, ctx)
    r = await client.post(f"/api/v1/conversations/{cid}/status",
                          json={"status": "snoozed", "snoozed_until": "2001-01-01T00:00:00+08:00"}, headers=admin_headers)
    assert r.status == 400
    for i in range(5):
        await post_signed(client, inbox.id, api_message(f"pg-{i}", sender="cust-1", text=f"m{i}"))
    first = await (await client.get(f"/api/v1/conversations/{cid}/messages?limit=4")).json()
    older = await (await client.get(f"/api/v1/conversations/{cid}/messages?limit=4&before={first['older_cursor']}")).json()
    texts = [m["text"] for m in older["items"] + first["items"]]
    assert texts == ["我要退货", "m0", "m1", "m2", "m3", "m4"]


async def test_contacts_search_get_and_update(client, ctx, admin_headers):
    _, cid = await _setup(client, ctx)
    found = await (await client.get("/api/v1/contacts?q=王小")).json()
    contact_id = found["items"][0]["id"]
    r = await client.post("/api/v1/attribute-definitions", json={"key": "orders", "label": "订单数", "type": "number"},
                          headers=admin_headers)
    assert r.status in (200, 201), await r.text()
    r = await client.patch(f"/api/v1/contacts/{contact_id}", headers=admin_headers,
                           json={"phone": "+86 138 0013 8000", "attributes": {"orders": "12"}, "tags": ["老客户"]})
    data = await r.json()
    assert r.status == 200 and data["phone"] == "+86 138 0013 8000" and data["tags"] == ["老客户"]
    assert data["attributes"]["orders"] == 12  # typed as PUT /contacts/{id}/attributes types it
    # The profile edit validates attributes like the attributes API does (one write path): nothing half-saved.
    for bad, says in (({"orders": "many"}, "expected a number"), ({"vip": True}, "no such attribute")):
        r = await client.patch(f"/api/v1/contacts/{contact_id}", json={"name": "改名", "attributes": bad},
                               headers=admin_headers)
        assert r.status == 400 and says in (await r.json())["error"]["message"]
    unchanged = await (await client.get(f"/api/v1/contacts/{contact_id}")).json()
    assert unchanged["name"] != "改名" and unchanged["attributes"]["orders"] == 12
    assert data["identities"][0]["external_id"] == "cust-1" and data["conversations"][0]["id"] == cid
    r = await client.patch(f"/api/v1/contacts/{contact_id}", json={"email": "not-an-email"}, headers=admin_headers)
    assert r.status == 400 and "email" in (await r.json())["error"]["message"]


async def test_agent_role_may_reply_but_not_manage_inboxes(client, ctx):
    await make_agent(ctx, "mei", "agent")
    _, cid = await _setup(client, ctx)
    headers = await login(client, "mei", "password-123")
    r = await client.post(f"/api/v1/conversations/{cid}/messages", json={"text": "hi"}, headers=headers)
    assert r.status == 201
    r = await client.post("/api/v1/inboxes", json={"name": "x", "channel_type": "api"}, headers=headers)
    assert r.status == 403
