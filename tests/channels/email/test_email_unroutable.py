"""Mail without a sender is kept for admins (table, API, raw source), and an email's HTML is served only
sanitized and sandboxed to the agent's view."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select

from scrm.db.models import Message
from scrm.db.models_mail import UnroutableMail
from scrm.services.conversations.ingest import ingest
from tests.conftest import login, make_agent, make_inbox

FIXTURES = Path(__file__).parent / "fixtures"


async def _email_inbox(ctx):
    inbox = await make_inbox(ctx, "email", name="Mail", settings={"address": "support@example.com"})
    adapter = ctx.adapters.for_inbox(inbox)

    async def sink(items):
        return await ingest(ctx, inbox, items)

    return inbox, adapter, sink


async def test_unroutable_mail_is_stored_once_and_listed_for_admins(ctx, client, admin_headers):
    inbox, adapter, sink = await _email_inbox(ctx)
    raw = (FIXTURES / "sender__none.eml").read_bytes()
    await adapter.ingest_raw(raw, sink)
    await adapter.ingest_raw(raw, sink)  # IMAP fetched it again: still one row
    async with ctx.db.session() as s:
        assert await s.scalar(select(func.count()).select_from(UnroutableMail)) == 1
        assert await s.scalar(select(func.count()).select_from(Message)) == 0  # no contact, no conversation
    resp = await client.get("/api/v1/unroutable_mail", headers=admin_headers)
    assert resp.status == 200
    [item] = (await resp.json())["items"]
    assert item["subject"] == "Nobody sent this" and item["inbox_id"] == inbox.id
    assert item["headers"]["return-path"] == ["<>"] and "sender" in item["reason"]
    raw_resp = await client.get(f"/api/v1/unroutable_mail/{item['id']}/raw", headers=admin_headers)
    assert raw_resp.status == 200 and await raw_resp.read() == raw
    assert "attachment" in raw_resp.headers["Content-Disposition"]
    assert (await client.delete(f"/api/v1/unroutable_mail/{item['id']}", headers=admin_headers)).status == 200
    assert (await (await client.get("/api/v1/unroutable_mail", headers=admin_headers)).json())["items"] == []


async def test_agents_cannot_see_unroutable_mail(ctx, client):
    await make_agent(ctx, "agent7", "agent")
    headers = await login(client, "agent7", "password-123")
    resp = await client.get("/api/v1/unroutable_mail", headers=headers)
    assert resp.status == 403


async def test_html_is_served_sanitized_in_a_sandbox(ctx, client, admin_headers):
    inbox, adapter, sink = await _email_inbox(ctx)
    await adapter.ingest_raw((FIXTURES / "alternative__see_html_stub.eml").read_bytes(), sink)
    async with ctx.db.session() as s:
        message = (await s.scalars(select(Message))).one()
    listed = await client.get(f"/api/v1/conversations/{message.conversation_id}/messages", headers=admin_headers)
    [shown] = (await listed.json())["items"]
    assert shown["has_html"] is True and "stopped working" in shown["text"]
    assert any("stub" in w for w in shown["warnings"])
    resp = await client.get(f"/api/v1/messages/{message.id}/html", headers=admin_headers)
    assert resp.status == 200 and resp.content_type == "text/html"
    csp = resp.headers["Content-Security-Policy"]
    assert csp.startswith("sandbox") and "default-src 'none'" in csp and "script" not in csp
    body = await resp.text()
    assert "grinding noise" in body and "<script" not in body and "alert(1)" not in body


async def test_message_without_html_has_no_html_view(ctx, client, admin_headers):
    inbox, adapter, sink = await _email_inbox(ctx)
    await adapter.ingest_raw((FIXTURES / "header__mbox_from_line.eml").read_bytes(), sink)
    async with ctx.db.session() as s:
        message = (await s.scalars(select(Message))).one()
    resp = await client.get(f"/api/v1/messages/{message.id}/html", headers=admin_headers)
    assert resp.status == 404
