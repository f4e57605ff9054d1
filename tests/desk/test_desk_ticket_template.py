"""Ticket notices on WeChat outside the 48 h window: a template message when the inbox has one for
ticket updates (sent through a fake WeChat API by the real outbox worker), a note in the thread otherwise."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from scrm.context import AppContext
from scrm.db.models import ContactIdentity, Conversation, Delivery, Inbox, Message, Ticket, utcnow
from scrm.delivery.worker import OutboxWorker
from tests.channels.wechat.fake_wechat_api import APP_ID, APP_SECRET, FakeWeChat, serving
from tests.channels.wechat.wechat_callbacks import AES_KEY, TOKEN
from tests.conftest import make_inbox
from tests.desk.conftest import say, settle

OPENID = "oTicketUser1"
TEMPLATE = {"template_id": "TPL-TICKET", "url": "https://shop.example.com/tickets",
            "fields": {"first": "text", "keyword1": "number", "keyword2": "status", "keyword3": "updated_at"}}


@pytest.fixture
async def fake_wechat() -> AsyncIterator[FakeWeChat]:
    async with serving() as fake:
        yield fake


async def _wechat_inbox(ctx: AppContext, fake: FakeWeChat) -> Inbox:
    return await make_inbox(ctx, "wechat_oa", name="公众号", settings={
        "app_id": APP_ID, "api_base_url": fake.base_url, "passive_reply_timeout": 0},  # type: ignore[attr-defined]
        secrets={"app_secret": APP_SECRET, "token": TOKEN, "encoding_aes_key": AES_KEY})


async def _ticket_after_window(ctx: AppContext, inbox: Inbox, sender: str = OPENID, number: int = 1042) -> int:
    """A ticket on a conversation whose customer last wrote 49 hours ago (the window is closed)."""
    cid = await say(ctx, inbox, "发票抬头错了", sender=sender)
    async with ctx.db.transaction() as s:
        conv = await s.get(Conversation, cid)
        assert conv is not None
        await s.execute(update(ContactIdentity).where(ContactIdentity.id == conv.identity_id)
                        .values(last_inbound_at=utcnow() - timedelta(hours=49)))
        await s.execute(update(Delivery).values(status="cancelled"))  # whatever was queued before
        t = Ticket(number=number, subject="发票抬头错误", status="open", priority="normal", conversation_id=cid,
                   contact_id=conv.contact_id, fields={})
        s.add(t)
        await s.flush()
        return t.id


async def _deliver(ctx: AppContext) -> None:
    await settle(ctx)
    worker = OutboxWorker(ctx, name="test-worker")
    try:
        await worker.run_until_idle(timeout=20)
    finally:
        await worker.shutdown(timeout=5)


async def _notes(ctx: AppContext) -> list[str]:
    async with ctx.db.session() as s:
        return [t or "" for t in (await s.scalars(select(Message.text).where(Message.private.is_(True))
                                                  .order_by(Message.id))).all()]


async def test_template_message_outside_the_window(desk: AppContext, client: Any, admin_headers: dict[str, str],
                                                   fake_wechat: FakeWeChat) -> None:
    inbox = await _wechat_inbox(desk, fake_wechat)
    tid = await _ticket_after_window(desk, inbox)
    resp = await client.put("/api/v1/desk/settings/tickets", headers=admin_headers,
                            json={"wechat_templates": {str(inbox.id): TEMPLATE}})
    assert resp.status == 200, await resp.text()
    resp = await client.post(f"/api/v1/desk/tickets/{tid}/status", json={"status": "solved"}, headers=admin_headers)
    assert resp.status == 200
    await _deliver(desk)
    [sent] = fake_wechat.template_sends
    assert sent["touser"] == OPENID and sent["template_id"] == "TPL-TICKET"
    assert sent["url"] == "https://shop.example.com/tickets"
    data = sent["data"]
    assert data["first"]["value"] == "您的工单 #1042 已解决。如仍有问题，请直接回复。"
    assert (data["keyword1"]["value"], data["keyword2"]["value"]) == ("#1042", "已解决")
    assert len(data["keyword3"]["value"]) == len("2025-03-04 10:00")
    assert fake_wechat.custom_sends == []  # the customer-service API would have failed with 45015
    async with desk.db.session() as s:
        notice = (await s.scalars(select(Message).where(Message.content_type == "template"))).one()
        assert notice.delivery_status == "sent" and "#1042" in (notice.text or "")  # agents see what went out
    assert not any("未通知客户" in n for n in await _notes(desk))


async def test_without_a_template_or_to_an_unsubscribed_contact_the_change_is_noted(
        desk: AppContext, client: Any, admin_headers: dict[str, str], fake_wechat: FakeWeChat) -> None:
    inbox = await _wechat_inbox(desk, fake_wechat)
    tid = await _ticket_after_window(desk, inbox)
    resp = await client.post(f"/api/v1/desk/tickets/{tid}/status", json={"status": "pending"}, headers=admin_headers)
    assert resp.status == 200
    await _deliver(desk)
    assert fake_wechat.template_sends == [] and fake_wechat.custom_sends == []
    assert any("未通知客户工单 #1042" in n and "48 h" in n for n in await _notes(desk))
    # A template is configured now, but the contact unsubscribed: a template may not reach them either.
    resp = await client.put("/api/v1/desk/settings/tickets", headers=admin_headers,
                            json={"wechat_templates": {str(inbox.id): TEMPLATE}})
    assert resp.status == 200
    async with desk.db.transaction() as s:
        await s.execute(update(ContactIdentity).values(subscribed=False))
    resp = await client.post(f"/api/v1/desk/tickets/{tid}/status", json={"status": "solved"}, headers=admin_headers)
    await _deliver(desk)
    assert fake_wechat.template_sends == []
    assert any("未通知客户工单 #1042" in n and "unsubscribed" in n for n in await _notes(desk))


async def test_template_settings_are_checked(desk: AppContext, client: Any, admin_headers: dict[str, str],
                                             fake_wechat: FakeWeChat) -> None:
    wechat = await _wechat_inbox(desk, fake_wechat)
    api = await make_inbox(desk)

    async def put(templates: Any) -> tuple[int, str]:
        resp = await client.put("/api/v1/desk/settings/tickets", json={"wechat_templates": templates},
                                headers=admin_headers)
        body = await resp.json()
        return resp.status, body.get("error", {}).get("message", "")

    status, msg = await put({str(api.id): TEMPLATE})
    assert status == 400 and "wechat_oa" in msg
    status, msg = await put({"9999": TEMPLATE})
    assert status == 400 and "no inbox with this id" in msg
    status, msg = await put({"公众号": TEMPLATE})
    assert status == 400 and "inbox ids" in msg
    status, msg = await put({str(wechat.id): {**TEMPLATE, "fields": {"first": "order_total"}}})
    assert status == 400 and "order_total" in msg and "number" in msg
    status, msg = await put({str(wechat.id): {**TEMPLATE, "template_id": ""}})
    assert status == 400 and "template_id" in msg
    status, msg = await put({str(wechat.id): {**TEMPLATE, "url": "javascript:alert(1)"}})
    assert status == 400 and "http" in msg
    assert (await put({str(wechat.id): TEMPLATE}))[0] == 200
    got = await (await client.get("/api/v1/desk/settings/tickets", headers=admin_headers)).json()
    assert got["tickets"]["wechat_templates"][str(wechat.id)]["template_id"] == "TPL-TICKET"
