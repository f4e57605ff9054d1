"""Email in the web UI: the admins' list of unroutable mail, and the sandboxed HTML view of a mail.

A mail's HTML is untrusted: the SPA never inserts it into its own page. It is served sanitized
(nh3 at ingest) from its own URL with a CSP sandbox (no scripts, no same origin, no remote loads:
tracking pixels stay dark) and shown in an <iframe sandbox>.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web
from sqlalchemy import select

from scrm.db.models import Message
from scrm.db.models_mail import UnroutableMail
from scrm.services.agents.accounts import Principal
from scrm.services.conversations import unroutable
from scrm.services.conversations.unroutable import unroutable_json
from scrm.web.access import require_message
from scrm.web.keys import CTX
from scrm.web.routing import ADMIN, SUPPORT, ApiError, api, ok, path_int, query_int

HTML_VIEW_CSP = ("sandbox allow-popups allow-popups-to-escape-sandbox; default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; "
                 "font-src data:; frame-ancestors 'self'")
_CID_SRC = re.compile(r'src="cid:([^"]+)"', re.IGNORECASE)


@api("GET", "/unroutable_mail", roles=ADMIN, tag="email",
     summary="Received mail without a usable sender (kept with its raw source), newest first",
     query={"inbox_id": "only this inbox", "before": "only ids below this (next_cursor)", "limit": "1-200 (default 50)"})
async def list_unroutable(request: web.Request, principal: Principal) -> web.Response:
    limit = query_int(request, "limit", 50, 1, 200)
    stmt = select(UnroutableMail).order_by(UnroutableMail.id.desc()).limit(limit + 1)
    inbox_id = request.query.get("inbox_id")
    if inbox_id:
        stmt = stmt.where(UnroutableMail.inbox_id == query_int(request, "inbox_id", 0, 1, 2**62))
    if request.query.get("before"):
        stmt = stmt.where(UnroutableMail.id < query_int(request, "before", 0, 1, 2**62))
    async with request.app[CTX].db.session() as s:
        rows = list((await s.scalars(stmt)).all())
    page = rows[:limit]
    return ok({"items": [unroutable_json(r) for r in page], "next_cursor": page[-1].id if len(rows) > limit else None})


async def _unroutable(request: web.Request) -> UnroutableMail:
    async with request.app[CTX].db.session() as s:
        row = await s.get(UnroutableMail, path_int(request, "id"))
    if row is None:
        raise ApiError(404, "unroutable mail not found", "not_found")
    return row


@api("GET", "/unroutable_mail/{id}/raw", roles=ADMIN, tag="email", summary="The raw source (.eml) of an unroutable mail")
async def unroutable_raw(request: web.Request, principal: Principal) -> web.StreamResponse:
    row = await _unroutable(request)
    if not row.raw_storage_key:
        raise ApiError(404, "the raw source of this mail was not kept", "not_found")
    try:
        data = await request.app[CTX].storage.load(row.raw_storage_key)
    except KeyError:
        raise ApiError(404, "the raw source of this mail is missing from storage", "not_found") from None
    return web.Response(body=data, headers={
        "Content-Type": "message/rfc822", "Content-Disposition": f'attachment; filename="unroutable-{row.id}.eml"',
        "Content-Security-Policy": "sandbox", "Cache-Control": "private, no-store"})


@api("DELETE", "/unroutable_mail/{id}", roles=ADMIN, tag="email", summary="Dismiss an unroutable mail")
async def delete_unroutable(request: web.Request, principal: Principal) -> web.Response:
    row = await _unroutable(request)
    async with request.app[CTX].db.transaction() as s:
        await unroutable.discard(s, row.id)
    return ok({"ok": True})


def _inline_images(html: str, attachments: list[dict[str, Any]]) -> str:
    """cid: references of inline images point at the stored files (same origin, authenticated)."""
    keys = {str(a.get("source", {}).get("content_id")): a.get("storage_key") for a in attachments
            if isinstance(a, dict) and isinstance(a.get("source"), dict) and a.get("storage_key")}
    if not keys:
        return html

    def swap(match: re.Match[str]) -> str:
        key = keys.get(match.group(1))
        return f'src="/files/{key}"' if key else 'src=""'

    return _CID_SRC.sub(swap, html)


@api("GET", "/messages/{id}/html", roles=SUPPORT, tag="conversations",
     summary="The sanitized HTML of an email message, for a sandboxed frame (text/html, CSP sandbox)")
async def message_html(request: web.Request, principal: Principal) -> web.StreamResponse:
    await require_message(request, principal, path_int(request, "id"))
    async with request.app[CTX].db.session() as s:
        message = await s.get(Message, path_int(request, "id"))
    html = (message.payload or {}).get("html") if message is not None else None
    if not isinstance(html, str):
        raise ApiError(404, "this message has no HTML version", "not_found")
    body = _inline_images(html, list(message.attachments or []))  # type: ignore[union-attr]
    page = ('<!doctype html><html><head><meta charset="utf-8"><base target="_blank">'
            '<style>body{font:14px/1.5 system-ui,sans-serif;margin:8px;word-wrap:break-word}'
            'img{max-width:100%}</style></head><body>' + body + "</body></html>")
    return web.Response(text=page, content_type="text/html", charset="utf-8", headers={
        "Content-Security-Policy": HTML_VIEW_CSP, "X-Frame-Options": "SAMEORIGIN",
        "Cache-Control": "private, no-store", "Referrer-Policy": "no-referrer"})
