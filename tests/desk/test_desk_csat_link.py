"""Email CSAT: a signed, one-use, expiring rating link to a public page; the rating is recorded like the others."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from scrm.context import AppContext
from scrm.db.models import Delivery, Message, utcnow
from scrm.db.models_desk import CsatSurvey
from scrm.events import Event
from scrm.services.conversations import actions as conv_svc
from scrm.services.desk import csat_link, reports
from scrm.services.uow import unit_of_work
from tests.conftest import make_agent, make_inbox
from tests.desk.conftest import say, settle

PUBLIC = "https://crm.example.com"
LINK = re.compile(re.escape(PUBLIC) + r"/csat/(\S+)")


async def _resolved_email_conversation(ctx: AppContext, sender: str = "wang@example.com") -> int:
    agent = await make_agent(ctx, f"amy-{sender[:4]}", "agent")
    inbox = await make_inbox(ctx, "email", name="Mail 客服", settings={"address": "help@example.com"}, secrets={})
    cid = await say(ctx, inbox, "发票抬头开错了，麻烦重开", sender=sender)
    async with unit_of_work(ctx) as tx:
        await conv_svc.do_reply(tx, cid, agent, "已为您重开发票")
    async with unit_of_work(ctx) as tx:
        await conv_svc.do_set_status(tx, cid, agent, "resolved")
    await settle(ctx)
    return cid


async def _survey_mail(ctx: AppContext, cid: int) -> tuple[Message, Delivery]:
    async with ctx.db.session() as s:
        msg = (await s.scalars(select(Message).where(Message.conversation_id == cid, Message.sender_kind == "system",
                                                     Message.private.is_(False)).order_by(Message.id.desc()))).first()
        assert msg is not None
        delivery = await s.scalar(select(Delivery).where(Delivery.message_id == msg.id))
        assert delivery is not None
        return msg, delivery


async def _survey(ctx: AppContext) -> CsatSurvey:
    async with ctx.db.session() as s:
        (survey,) = (await s.scalars(select(CsatSurvey))).all()
        return survey


async def test_email_gets_a_link_whose_page_records_the_rating_once(desk: AppContext, client: Any,
                                                                     recorded: list[Event]) -> None:
    desk.settings.server.public_url = PUBLIC
    cid = await _resolved_email_conversation(desk)
    msg, delivery = await _survey_mail(desk, cid)
    m = LINK.search(msg.text or "")
    assert m is not None and "1-5" in (msg.text or "")  # a reply with a number still works too
    token = m.group(1)
    assert delivery.payload["metadata"]["csat_url"] == f"{PUBLIC}/csat/{token}"
    assert delivery.payload["metadata"]["subject"] and not delivery.payload["choices"]

    page = await client.get(f"/csat/{token}")  # no login, no cookie
    text = await page.text()
    assert page.status == 200 and page.headers["Cache-Control"] == "no-store"
    assert text.count("name='rating'") == 5 and "非常满意" in text and "Excellent" in text
    assert (await _survey(desk)).status == "asked"  # opening the link (a mail scanner) records nothing

    resp = await client.post(f"/csat/{token}", data={"rating": "4", "comment": "<script>alert(1)</script>物流有点慢"})
    assert resp.status == 200 and "4/5" in await resp.text()
    survey = await _survey(desk)
    assert (survey.status, survey.rating, survey.comment) == ("answered", 4, "<script>alert(1)</script>物流有点慢")
    assert survey.agent_id is not None and survey.inbox_id == msg.inbox_id
    await settle(desk)
    answered = [e for e in recorded if e.name == "csat.answered"]
    assert len(answered) == 1 and answered[0].data["rating"] == 4 and answered[0].data["via"] == "link"
    async with desk.db.session() as s:
        notes = (await s.scalars(select(Message.text).where(Message.conversation_id == cid,
                                                            Message.private.is_(True)))).all()
    assert any("4/5" in (n or "") for n in notes)  # the agent sees the rating in the thread

    # One use: a second submission and a second visit are refused.
    again = await client.post(f"/csat/{token}", data={"rating": "1"})
    assert again.status == 409 and "already rated" in await again.text()
    assert (await client.get(f"/csat/{token}")).status == 409
    assert (await _survey(desk)).rating == 4
    async with desk.db.session() as s:
        summary = await reports.csat(s, utcnow() - timedelta(days=1), utcnow() + timedelta(days=1), "none")
    assert (summary["all"]["csat_answers"], summary["all"]["csat_4"]) == (1, 1)


async def test_bad_tampered_and_expired_links(desk: AppContext, client: Any) -> None:
    desk.settings.server.public_url = PUBLIC
    cid = await _resolved_email_conversation(desk)
    msg, _ = await _survey_mail(desk, cid)
    m = LINK.search(msg.text or "")
    assert m is not None
    token = m.group(1)
    sid, expires, mac = token.split(".")
    # Another survey's id, a later expiry, a wrong signature, garbage: all "not valid", nothing recorded.
    for forged in (f"{int(sid) + 1}.{expires}.{mac}", f"{sid}.{int(expires) + 86400}.{mac}", f"{sid}.{expires}.{'A' * 43}",
                   "not-a-token", "1.2", "9" * 200):
        resp = await client.post(f"/csat/{forged}", data={"rating": "5"})
        assert resp.status == 404 and "not valid" in await resp.text(), forged
    # A rating out of range re-shows the form with the customer's comment kept (as text, not HTML).
    resp = await client.post(f"/csat/{token}", data={"rating": "7", "comment": "<b>还行</b>"})
    body = await resp.text()
    assert resp.status == 400 and "1 to 5" in body and "&lt;b&gt;还行&lt;/b&gt;" in body and "<b>还行" not in body
    resp = await client.post(f"/csat/{token}", data={"rating": "3", "comment": "长" * 2001})
    assert resp.status == 400 and "too long" in await resp.text()
    assert (await _survey(desk)).status == "asked"
    # A link past its expiry (signed with the real secret) is refused with 410.
    async with desk.db.session() as s:
        secret = await csat_link.signing_secret(s)
    old = csat_link.sign(secret, int(sid), utcnow() - timedelta(minutes=1))
    resp = await client.post(f"/csat/{old}", data={"rating": "5"})
    assert resp.status == 410 and "expired" in await resp.text()
    assert (await client.get(f"/csat/{old}")).status == 410
    assert (await _survey(desk)).status == "asked"
    # The real token still works.
    assert (await client.post(f"/csat/{token}", data={"rating": "５"})).status == 200  # full-width digit
    assert (await _survey(desk)).rating == 5


async def test_without_a_public_url_email_falls_back_to_numbered_text(desk: AppContext) -> None:
    desk.settings.server.public_url = None
    cid = await _resolved_email_conversation(desk)
    msg, _ = await _survey_mail(desk, cid)
    assert "/csat/" not in (msg.text or "") and "5 😄" in (msg.text or "")
