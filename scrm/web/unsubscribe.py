"""The public unsubscribe page: the email List-Unsubscribe target, with RFC 8058 one-click POST."""

from __future__ import annotations

import html

from aiohttp import web
from sqlalchemy import select

from scrm import events as ev
from scrm.db.models import utcnow
from scrm.db.models_marketing import BroadcastRecipient
from scrm.services.marketing.optout import opt_out
from scrm.services.uow import unit_of_work
from scrm.web.keys import CTX

PAGE = ("<!doctype html><meta charset='utf-8'><meta name='viewport' content='width=device-width'>"
        "<title>退订 / Unsubscribe</title><body style='font-family:sans-serif;max-width:32em;margin:3em auto'>{}</body>")


async def _recipient(request: web.Request) -> BroadcastRecipient | None:
    token = request.match_info.get("token", "")
    if not token or len(token) > 64:
        return None
    async with request.app[CTX].db.session() as s:
        return await s.scalar(select(BroadcastRecipient).where(BroadcastRecipient.unsubscribe_token == token))


async def unsubscribe_page(request: web.Request) -> web.Response:
    """GET shows a confirmation button (link scanners must not unsubscribe anyone)."""
    if await _recipient(request) is None:
        return web.Response(status=404, text=PAGE.format("<p>链接无效 / This link is not valid.</p>"),
                            content_type="text/html")
    action = html.escape(request.path)
    body = (f"<form method='post' action='{action}'><p>不再通过电子邮件接收我们的群发消息？<br>"
            "Stop receiving our broadcast emails?</p><button type='submit'>退订 / Unsubscribe</button></form>")
    return web.Response(text=PAGE.format(body), content_type="text/html")


async def unsubscribe_post(request: web.Request) -> web.Response:
    """One-click unsubscribe (mail clients POST List-Unsubscribe=One-Click here)."""
    r = await _recipient(request)
    if r is None:
        return web.Response(status=404, text=PAGE.format("<p>链接无效 / This link is not valid.</p>"),
                            content_type="text/html")
    async with unit_of_work(request.app[CTX]) as tx:
        if await opt_out(tx, r.contact_id, r.channel or "email", via=f"link:{r.id}"):
            tx.emit(ev.CONTACT_UPDATED, contact_id=r.contact_id, change="opt_out")
        rec = await tx.session.get(BroadcastRecipient, r.id)
        if rec is not None and rec.opted_out_at is None:
            rec.opted_out_at = utcnow()
    return web.Response(text=PAGE.format("<p>您已退订。/ You are unsubscribed.</p>"), content_type="text/html")
