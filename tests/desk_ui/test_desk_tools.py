"""Audit log query and CSV, bulk actions, agent-started conversations, snooze wake-up, e-mail signature,
China's holidays, the rule dry run and the webhook test send."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

from aiohttp import web
from sqlalchemy import select

from scrm.db.models import Conversation, ConversationLabel, Message, utcnow
from scrm.periodic import JOBS
from scrm.services.desk import snooze
from tests.conftest import api_message, login, make_agent, make_inbox, post_signed


async def _conv(client, ctx, inbox, mid: str, sender: str, text: str = "你好") -> int:
    r = await post_signed(client, inbox.id, api_message(mid, sender=sender, text=text, name="张三"))
    return (await r.json())["results"][0]["conversation_id"]


async def test_audit_log_filters_and_exports_csv(client, ctx, admin, admin_headers):
    inbox = await make_inbox(ctx)
    cid = await _conv(client, ctx, inbox, "m-1", "u1")
    await client.post(f"/api/v1/conversations/{cid}/status", json={"status": "resolved"}, headers=admin_headers)
    await client.post(f"/api/v1/conversations/{cid}/messages", json={"text": "=HYPERLINK(\"x\")", "private": True},
                      headers=admin_headers)
    data = await (await client.get(f"/api/v1/audit?target_type=conversation&target_id={cid}", headers=admin_headers)).json()
    actions = [a["action"] for a in data["items"]]
    assert actions == ["conversation.note", "conversation.status"] and data["items"][0]["agent"] == "Root"
    assert "conversation.status" in data["actions"]
    prefix = await (await client.get("/api/v1/audit?action=conversation.", headers=admin_headers)).json()
    assert len(prefix["items"]) == 2
    resp = await client.get(f"/api/v1/audit.csv?agent_id={admin['id']}", headers=admin_headers)
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO((await resp.read()).decode("utf-8-sig"))))
    assert rows[0][:5] == ["id", "created_at", "agent_id", "agent", "action"]
    assert [r[4] for r in rows[1:]] == ["conversation.note", "conversation.status", "agent.login"]
    bad = await client.get("/api/v1/audit?from=yesterday", headers=admin_headers)
    assert bad.status == 400
    await make_agent(ctx, "li", "agent")
    headers = await login(client, "li", "password-123")
    assert (await client.get("/api/v1/audit", headers=headers)).status == 403


async def test_bulk_actions_change_each_conversation_and_report_failures(client, ctx, admin, admin_headers):
    inbox = await make_inbox(ctx)
    ids = [await _conv(client, ctx, inbox, f"m-{i}", f"u{i}") for i in range(3)]
    r = await client.post("/api/v1/conversations/bulk", json={"ids": [*ids, 99999], "action": "label", "label": "跟进"},
                          headers=admin_headers)
    body = await r.json()
    assert body["done"] == ids and body["failed"][0]["id"] == 99999 and body["failed"][0]["code"] == "not_found"
    until = (utcnow() + timedelta(hours=4)).isoformat()
    r = await client.post("/api/v1/conversations/bulk", json={"ids": ids[:2], "action": "snooze", "snoozed_until": until},
                          headers=admin_headers)
    assert (await r.json())["done"] == ids[:2]
    r = await client.post("/api/v1/conversations/bulk", json={"ids": ids, "action": "assign", "assignee_id": admin["id"]},
                          headers=admin_headers)
    assert (await r.json())["done"] == ids
    async with ctx.db.session() as s:
        convs = {c.id: c for c in (await s.scalars(select(Conversation))).all()}
        labels = (await s.scalars(select(ConversationLabel.conversation_id).where(ConversationLabel.label == "跟进"))).all()
    assert sorted(labels) == ids and [convs[i].status for i in ids] == ["snoozed", "snoozed", "open"]
    assert {convs[i].assignee_id for i in ids} == {admin["id"]}
    bad = await client.post("/api/v1/conversations/bulk", json={"ids": ids, "action": "snooze"}, headers=admin_headers)
    assert bad.status == 400 and "snoozed_until" in (await bad.json())["error"]["message"]


async def test_snoozed_conversation_wakes_at_its_time(client, ctx, admin, admin_headers):
    assert ("scrm.services.desk.snooze.run_snooze_waker", snooze.run_snooze_waker) in JOBS  # one process cluster-wide runs it
    inbox = await make_inbox(ctx)
    cid = await _conv(client, ctx, inbox, "m-1", "u1")
    until = utcnow() + timedelta(minutes=30)
    await client.post(f"/api/v1/conversations/{cid}/status", json={"status": "snoozed", "snoozed_until": until.isoformat()},
                      headers=admin_headers)
    assert await snooze.wake_due(ctx, utcnow()) == []
    assert await snooze.wake_due(ctx, until + timedelta(seconds=1)) == [cid]
    async with ctx.db.session() as s:
        conv = await s.get(Conversation, cid)
        note = (await s.scalars(select(Message).where(Message.conversation_id == cid, Message.sender_kind == "system")
                                .order_by(Message.id.desc()))).first()
    assert conv.status == "open" and conv.snoozed_until is None and "Snooze ended" in note.text
    assert await snooze.wake_due(ctx, until + timedelta(hours=1)) == []  # once


async def test_agent_starts_conversations_where_the_channel_allows(client, ctx, admin, admin_headers):
    api_inbox = await make_inbox(ctx)
    cid = await _conv(client, ctx, api_inbox, "m-1", "u1")
    async with ctx.db.session() as s:
        contact_id = (await s.get(Conversation, cid)).contact_id
    other = await make_inbox(ctx, name="API 2")
    r = await client.post("/api/v1/conversations", json={"contact_id": contact_id, "inbox_id": other.id, "text": "您好"},
                          headers=admin_headers)
    assert r.status == 409 and "never written" in (await r.json())["error"]["message"]
    r = await client.post("/api/v1/conversations", json={"contact_id": contact_id, "inbox_id": api_inbox.id, "text": "您好，跟进一下"},
                          headers=admin_headers)
    assert r.status == 201, await r.text()
    started = await r.json()
    assert started["conversation_id"] == cid and started["message"]["text"] == "您好，跟进一下"  # the open chat continues
    email = await make_inbox(ctx, "email", name="Mail", settings={"address": "help@shop.example"})
    r = await client.post("/api/v1/conversations", json={"contact_id": contact_id, "inbox_id": email.id, "text": "x"},
                          headers=admin_headers)
    assert r.status == 409 and (await r.json())["error"]["code"] == "no_address"
    await client.patch(f"/api/v1/contacts/{contact_id}", json={"email": "zhang@example.com"}, headers=admin_headers)
    # The agent's signature goes under e-mail replies (and not under chat replies).
    await client.put("/api/v1/me/preferences", json={"signature": "王小明\n售后部"}, headers=admin_headers)
    r = await client.post("/api/v1/conversations", json={"contact_id": contact_id, "inbox_id": email.id, "text": "您好",
                                                        "subject": "您的退款"}, headers=admin_headers)
    assert r.status == 201, await r.text()
    mail = await r.json()
    assert mail["conversation_id"] != cid and mail["message"]["text"] == "您好\n\n-- \n王小明\n售后部"
    async with ctx.db.session() as s:
        conv = await s.get(Conversation, mail["conversation_id"])
    assert conv.subject == "您的退款" and conv.assignee_id == admin["id"] and conv.handler == "human"
    chat = await client.post(f"/api/v1/conversations/{cid}/messages", json={"text": "好的"}, headers=admin_headers)
    assert (await chat.json())["text"] == "好的"
    prefs = await (await client.get("/api/v1/me/preferences", headers=admin_headers)).json()
    assert prefs["signature"] == "王小明\n售后部" and prefs["notify"] == {"sound": False, "browser": False}


async def test_china_holidays_for_business_hours(client, admin_headers):
    r = await client.get("/api/v1/desk/holidays/cn?year=2026", headers=admin_headers)
    data = await r.json()
    holidays = {d["date"]: d for d in data["holidays"]}
    assert holidays["2026-10-01"]["name_zh"] == "国庆节" and holidays["2026-02-17"]["name"] == "Spring Festival"
    assert {"date": "2026-02-14", "name": "Spring Festival", "name_zh": "春节"} in data["workdays"]
    assert data["source"].startswith("chinesecalendar")
    missing = await client.get("/api/v1/desk/holidays/cn?year=2099", headers=admin_headers)
    assert missing.status == 404 and "enter the days by hand" in (await missing.json())["error"]["message"]
    # The imported days work in the business-hours settings: a make-up Saturday is a working day.
    body = {"timezone": "Asia/Shanghai", "weekly": {d: "09:00-18:00" for d in ("mon", "tue", "wed", "thu", "fri")},
            "holidays": [d for d in holidays if not holidays[d]["weekend"]],
            "special_days": {d["date"]: "09:00-18:00" for d in data["workdays"]}}
    assert (await client.put("/api/v1/desk/settings/business_hours", json=body, headers=admin_headers)).status == 200


async def test_rule_dry_run_shows_which_recent_conversations_would_match(client, ctx, admin_headers):
    inbox = await make_inbox(ctx)
    hit = await _conv(client, ctx, inbox, "m-1", "u1", text="我要退款")
    miss = await _conv(client, ctx, inbox, "m-2", "u2", text="发货了吗")
    rule = {"name": "退款", "event": "message.created", "conditions": {"text_contains": ["退款"], "direction": "in"},
            "actions": [{"type": "add_label", "label": "退款"}]}
    r = await client.post("/api/v1/desk/rules/dry-run", json={"rule": rule}, headers=admin_headers)
    assert r.status == 200, await r.text()
    data = await r.json()
    matched = {c["conversation_id"]: c["matched"] for c in data["conversations"]}
    assert matched == {hit: True, miss: False} and data["matched"] == 1
    async with ctx.db.session() as s:  # nothing ran
        assert (await s.scalars(select(ConversationLabel))).first() is None
    bad = await client.post("/api/v1/desk/rules/dry-run", json={"rule": {**rule, "event": "nope"}}, headers=admin_headers)
    assert bad.status == 400 and "event must be one of" in (await bad.json())["error"]["message"]


async def test_webhook_test_send_reports_the_endpoint_answer(client, ctx, admin_headers, aiohttp_server):
    got = []

    async def receiver(request: web.Request) -> web.Response:
        got.append((request.headers.get("X-SCRM-Event"), await request.json()))
        return web.Response(status=204 if len(got) == 1 else 500)

    app = web.Application()
    app.router.add_post("/hook", receiver)
    server = await aiohttp_server(app)
    hook = await (await client.post("/api/v1/desk/webhooks", json={"name": "CRM", "url": str(server.make_url("/hook")),
                                                                   "events": ["ticket.opened"]}, headers=admin_headers)).json()
    wid = hook["webhook"]["id"]
    r = await client.post(f"/api/v1/desk/webhooks/{wid}/test", headers=admin_headers)
    delivery = (await r.json())["delivery"]
    assert delivery["status"] == "delivered" and delivery["response_status"] == 204
    assert got[0][0] == "webhook.test" and got[0][1]["data"]["webhook"] == "CRM"
    failed = (await (await client.post(f"/api/v1/desk/webhooks/{wid}/test", headers=admin_headers)).json())["delivery"]
    assert failed["status"] == "failed" and failed["last_error"] == "HTTP 500"  # a test is not retried
    log = await (await client.get(f"/api/v1/desk/webhooks/{wid}/deliveries", headers=admin_headers)).json()
    assert [d["status"] for d in log["deliveries"]] == ["failed", "delivered"]
    assert (await client.post("/api/v1/desk/webhooks/999/test", headers=admin_headers)).status == 404
