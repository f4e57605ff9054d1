"""Ticket workflow: allowed transitions, customer notified, reopen when the customer writes, comments."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from scrm.context import AppContext
from scrm.db.models import Conversation, Delivery, Ticket
from tests.conftest import make_inbox
from tests.desk.conftest import say, settle


async def _ticket(ctx: AppContext, cid: int) -> int:
    async with ctx.db.transaction() as s:
        conv_row = await s.get(Conversation, cid)
        assert conv_row is not None
        t = Ticket(number=1042, subject="发票抬头错误", status="new", priority="normal", conversation_id=cid,
                   contact_id=conv_row.contact_id, fields={})
        s.add(t)
        await s.flush()
        return t.id


async def test_transitions_notification_reopen_and_comments(desk: AppContext, client: Any,
                                                            admin_headers: dict[str, str]) -> None:
    inbox = await make_inbox(desk)
    cid = await say(desk, inbox, "发票开错了")
    tid = await _ticket(desk, cid)
    resp = await client.post(f"/api/v1/desk/tickets/{tid}/status", json={"status": "solved"}, headers=admin_headers)
    assert resp.status == 200 and (await resp.json())["ticket"]["status"] == "solved"
    async with desk.db.session() as s:
        notice = (await s.scalars(select(Delivery).order_by(Delivery.id.desc()))).first()
    assert notice is not None and "#1042" in notice.payload["text"]
    assert notice.payload["metadata"]["subject"] == "[#1042] 发票抬头错误"  # e-mail replies thread back
    resp = await client.post(f"/api/v1/desk/tickets/{tid}/status", json={"status": "new"}, headers=admin_headers)
    assert resp.status == 409 and "solved ticket can move to open, closed" in (await resp.json())["error"]["message"]
    await say(desk, inbox, "还是不对")  # the customer writes within the reopen window
    await settle(desk)
    async with desk.db.session() as s:
        assert (await s.get(Ticket, tid)).status == "open"  # type: ignore[union-attr]
    resp = await client.post(f"/api/v1/desk/tickets/{tid}/comments", json={"text": "已联系财务重开"}, headers=admin_headers)
    assert resp.status == 201
    comments = (await (await client.get(f"/api/v1/desk/tickets/{tid}/comments", headers=admin_headers)).json())["comments"]
    assert [c["text"] for c in comments] == ["已联系财务重开"]
    resp = await client.post(f"/api/v1/desk/tickets/{tid}/comments", json={"text": ""}, headers=admin_headers)
    assert resp.status == 400
    resp = await client.post("/api/v1/desk/tickets/999/status", json={"status": "open"}, headers=admin_headers)
    assert resp.status == 404
