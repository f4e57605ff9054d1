"""Web chat for visitors: the H5 page and the widget's iframe page, their settings, the visitor session,
file links and the QR code. Public routes: the origin check, the visitor token and rate limits guard them.

    GET  /chat/{inbox}            the standalone H5 chat (WeChat's browser, app web views, QR codes)
    GET  /chat/{inbox}/widget     the same chat inside the widget's iframe
    GET  /chat/{inbox}/config     public settings for the loader (CORS for allowed sites only)
    POST /chat/{inbox}/session    start or resume a visitor session -> a fresh signed token
    GET  /chat/{inbox}/files/...  a signed, expiring link to a stored file
    GET  /chat/{inbox}/qr.svg     QR code of the H5 page
The message endpoints are in webchat_api, the WebSocket in webchat_ws.
"""

from __future__ import annotations

import html
import io
import json
import mimetypes
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from bot_flows.conditions import format_when
from channels.web.adapter import WebChatAdapter
from channels.web.tokens import (
    TOKEN_TTL,
    check_file,
    check_identifier,
    identified_visitor_id,
    new_visitor_id,
    sign_visitor,
    verify_visitor,
)
from scrm.db.models import Contact, Inbox
from scrm.domain import ChannelEvent, ChannelEventKind, ContactProfile
from scrm.services.conversations.ingest import ingest
from scrm.services.webchat import visitors as chat_svc
from scrm.web.keys import CTX
from scrm.web.routing import ApiError, json_error, ok
from scrm.web.webchat_common import (
    check_origin,
    client_ip,
    close_going_away,
    cookie_name,
    cors_headers,
    is_own_origin,
    page_csp,
    rate_limit,
    read_json,
    visitor_token,
    web_inbox,
)

MAX_ATTRS = 20


def pick_lang(request: web.Request) -> str:
    """zh or en: the page's language passed by the loader, else the browser's."""
    raw = (request.query.get("lang") or request.headers.get("Accept-Language") or "").lower()
    return "zh" if raw.startswith("zh") else "en"


async def public_config(request: web.Request, inbox: Inbox, adapter: WebChatAdapter, lang: str) -> dict[str, Any]:
    """What the loader and the chat page need to draw the widget (no secrets)."""
    ctx = request.app[CTX]
    st: Any = adapter.settings
    from scrm.services.desk.settings import business_hours

    async with ctx.db.session() as s:
        hours = await business_hours(s)
    now = datetime.now(UTC)
    is_open = hours.is_open(now)
    online = is_open and await chat_svc.agents_online(ctx)
    back = None if is_open else hours.next_open(now)
    return {
        "inbox": inbox.id, "lang": lang, "title": st.title.pick(lang), "color": st.color,
        "greeting": st.greeting.pick(lang), "away": st.away_message.pick(lang), "banner": st.hours_banner.pick(lang),
        "prechat": {"enabled": st.prechat_enabled, "fields": [
            {"name": f.name, "label": f.label.pick(lang) or f.name, "type": f.type, "required": f.required}
            for f in st.prechat_fields]},
        "online": online, "open": is_open, "back_at": back.isoformat() if back else None,
        "back_text": format_when(back, lang, now) if back else None,
        "offline_email": st.offline_email, "transcript": st.email_inbox_id is not None,
        "require_identity": st.require_identity, "max_chars": st.max_message_chars,
        "attachments": {"max_bytes": st.max_attachment_bytes, "types": list(st.attachment_types)},
    }


async def config(request: web.Request) -> web.StreamResponse:
    """The widget's public settings; a site that may not embed the chat gets 403 and no CORS grant."""
    inbox, adapter = await web_inbox(request)
    try:
        origin = check_origin(request, adapter)
    except ApiError as exc:  # readable by the refused page's loader, so it can say why (no data in it)
        refused = json_error(exc.status, exc.message, exc.code)
        refused.headers.update(cors_headers(request.headers.get("Origin")))
        return refused
    headers = cors_headers(origin)
    if request.method == "OPTIONS":
        return web.Response(status=204, headers=headers)
    resp = ok(await public_config(request, inbox, adapter, pick_lang(request)))
    resp.headers.update(headers)
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _script_json(data: Any) -> str:
    """JSON safe inside a <script type=application/json> element."""
    return (json.dumps(data, ensure_ascii=False).replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("&", "\\u0026"))


async def _page(request: web.Request, mode: str) -> web.StreamResponse:
    inbox, adapter = await web_inbox(request)
    lang = pick_lang(request)
    cfg = await public_config(request, inbox, adapter, lang)
    source = (request.query.get("source") or request.query.get("campaign") or "").strip()[:64]
    cfg |= {"mode": mode, "source": source or None}
    title = html.escape(cfg["title"] or "Chat")
    body = (f"<!doctype html><html lang='{'zh-CN' if lang == 'zh' else 'en'}'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1, viewport-fit=cover'>"
            f"<meta name='referrer' content='same-origin'><title>{title}</title>"
            "<link rel='stylesheet' href='/static/widget/chat.css'>"
            f"<script type='application/json' id='scrm-chat-config'>{_script_json(cfg)}</script>"
            "<script type='module' src='/static/widget/chat.js'></script></head>"
            f"<body class='mode-{mode}'><div id='chat' class='chat'></div>"
            "<noscript>请启用 JavaScript 后使用在线客服 / Please enable JavaScript to chat with us.</noscript>"
            "</body></html>")
    return web.Response(text=body, content_type="text/html", charset="utf-8", headers={
        "Content-Security-Policy": page_csp(adapter), "Cache-Control": "no-store",
        "Referrer-Policy": "same-origin", "X-Content-Type-Options": "nosniff"})


async def h5_page(request: web.Request) -> web.StreamResponse:
    """The standalone chat page (H5)."""
    return await _page(request, "page")


async def widget_page(request: web.Request) -> web.StreamResponse:
    """The chat inside the widget's iframe."""
    return await _page(request, "widget")


def _text(data: dict[str, Any], name: str, limit: int = 255) -> str | None:
    value = data.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise ApiError(400, f"{name} must be a text of at most {limit} characters", "invalid_request")
    return value.strip() or None


def _attributes(data: dict[str, Any]) -> dict[str, Any]:
    attrs = data.get("attributes") or {}
    if not isinstance(attrs, dict) or len(attrs) > MAX_ATTRS:
        raise ApiError(400, f"attributes must be an object with at most {MAX_ATTRS} keys", "invalid_request")
    out: dict[str, Any] = {}
    for key, value in attrs.items():
        if not isinstance(key, str) or not 0 < len(key) <= 64 or key in ("blocked", "source"):
            raise ApiError(400, f"attribute name {key!r} is not allowed", "invalid_request")
        if not isinstance(value, str | int | float | bool) or len(str(value)) > 500:
            raise ApiError(400, f"attribute {key} must be a short text, number or boolean", "invalid_request")
        out[key] = value
    return out


async def session(request: web.Request) -> web.StreamResponse:
    """Start or resume a visitor session: a signed token bound to one visitor (and so one contact)."""
    ctx = request.app[CTX]
    inbox, adapter = await web_inbox(request)
    origin = check_origin(request, adapter)
    st: Any = adapter.settings
    await rate_limit(ctx, f"session:ip:{inbox.id}:{client_ip(request)}", st.sessions_per_minute_per_ip,
                     "new chat sessions from this address")
    data = await read_json(request)
    identifier = _text(data, "identifier", 128)
    profile: ContactProfile | None = None
    if identifier is not None:
        if not check_identifier(adapter.secrets.hmac_secret, identifier, _text(data, "identifier_hash", 128)):  # type: ignore[attr-defined]
            raise ApiError(401, "identity verification failed: identifier_hash does not match", "bad_identity")
        visitor = identified_visitor_id(identifier)
        anonymous = verify_visitor(adapter.secrets.token_key, inbox.id, _text(data, "token", 1024)  # type: ignore[attr-defined]
                                   or visitor_token(request, inbox.id))
        if anonymous and anonymous.startswith("v:"):  # signed in after chatting anonymously in this browser
            await chat_svc.claim_anonymous(ctx, inbox.id, anonymous, visitor)
        fields = {k: _text(data, k) for k in ("name", "email", "phone")}
        attrs = _attributes(data)
        if any(fields.values()) or attrs:  # vouched for by the website's signature
            profile = ContactProfile(name=fields["name"], email=fields["email"], phone=fields["phone"], attributes=attrs)
    elif st.require_identity:
        raise ApiError(401, "this chat is for signed-in users: the website must pass identifier and identifier_hash",
                       "identity_required")
    else:
        known = verify_visitor(adapter.secrets.token_key, inbox.id, _text(data, "token", 1024)  # type: ignore[attr-defined]
                               or visitor_token(request, inbox.id))
        visitor = known if known and known.startswith("v:") else new_visitor_id()
    identity = await chat_svc.identity_of(ctx, inbox.id, visitor)
    if chat_svc.is_blocked(identity):
        raise ApiError(403, "this chat is not available to you", "blocked")
    if profile is not None and await _profile_changed(ctx, identity, profile):
        await ingest(ctx, inbox, [ChannelEvent(ChannelEventKind.CONTACT_UPDATED, sender_id=visitor, profile=profile)])
        identity = await chat_svc.identity_of(ctx, inbox.id, visitor)
    token = sign_visitor(adapter.secrets.token_key, inbox.id, visitor)  # type: ignore[attr-defined]
    contact = None
    if identity is not None:
        async with ctx.db.session() as s:
            contact = await s.get(Contact, identity.contact_id)
    body: dict[str, Any] = {
        "token": token, "identified": visitor.startswith("u:"),
        "visitor": {"name": contact.name if contact else None, "email": contact.email if contact else None},
        "prechat_needed": bool(st.prechat_enabled and identity is None and not visitor.startswith("u:")),
        "conversation": await chat_svc.conversation_state(ctx, identity.id) if identity else None,
        "messages": await chat_svc.latest_messages(ctx, inbox.id, adapter.secrets.token_key, identity.id)  # type: ignore[attr-defined]
        if identity else [],
    }
    h5 = data.get("mode") == "page" and (origin is None or is_own_origin(request, origin))
    if h5:
        body["token"] = None  # first-party page: the token lives in an HttpOnly cookie, out of script's reach
    resp = ok(body)
    if h5:
        resp.set_cookie(cookie_name(inbox.id), token, httponly=True, samesite="Lax", max_age=TOKEN_TTL,
                        secure=ctx.settings.security.cookie_secure, path=f"/chat/{inbox.id}")
    resp.headers["Cache-Control"] = "no-store"
    return resp


async def _profile_changed(ctx: Any, identity: Any, profile: ContactProfile) -> bool:
    if identity is None:
        return True
    async with ctx.db.session() as s:
        contact = await s.get(Contact, identity.contact_id)
    if contact is None:
        return True
    same = all(getattr(profile, k) in (None, getattr(contact, k)) for k in ("name", "email", "phone"))
    return not (same and all((contact.attributes or {}).get(k) == v for k, v in profile.attributes.items()))


async def file(request: web.Request) -> web.StreamResponse:
    """A stored file behind a signed, expiring link (the visitor's and the agents' attachments)."""
    ctx = request.app[CTX]
    inbox, adapter = await web_inbox(request)
    key = request.match_info["key"]
    if not check_file(adapter.secrets.token_key, key, request.query.get("e"), request.query.get("s")):  # type: ignore[attr-defined]
        raise ApiError(403, "this file link is invalid or has expired", "bad_link")
    try:
        path = ctx.storage.path_for(key)
    except KeyError:
        raise ApiError(404, "file not found", "not_found") from None
    if not path.is_file():
        raise ApiError(404, "file not found", "not_found")
    ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    headers = {"Content-Type": ctype, "X-Content-Type-Options": "nosniff", "Cache-Control": "private, max-age=3600",
               "Content-Security-Policy": "sandbox", "Cross-Origin-Resource-Policy": "same-origin"}
    if not ctype.startswith("image/") or ctype == "image/svg+xml":
        headers["Content-Disposition"] = "attachment"
    return web.FileResponse(path, headers=headers)


def chat_url(request: web.Request, inbox_id: int) -> str:
    """The H5 page's absolute URL (server.public_url when set)."""
    base = request.app[CTX].settings.server.public_url or f"{request.scheme}://{request.host}"
    return f"{base.rstrip('/')}/chat/{inbox_id}"


async def qr_code(request: web.Request) -> web.StreamResponse:
    """An SVG QR code of the H5 page (print it, or show it in the admin page)."""
    import segno

    inbox, _ = await web_inbox(request)
    url = chat_url(request, inbox.id)
    source = (request.query.get("source") or "").strip()[:64]
    if source:
        from urllib.parse import quote

        url += "?source=" + quote(source)
    out = io.BytesIO()
    segno.make_qr(url, error="m").save(out, kind="svg", scale=6, border=2, xmldecl=False)
    return web.Response(body=out.getvalue(), content_type="image/svg+xml",
                        headers={"Cache-Control": "private, max-age=300", "Content-Security-Policy": "sandbox"})


def add_routes(app: web.Application) -> None:
    """Register the visitor routes (pages, session, files, WebSocket, message API) and the demo page."""
    from scrm.web import webchat_api, webchat_demo, webchat_ws

    app.router.add_get("/chat/{inbox:\\d+}", h5_page)
    app.router.add_get("/chat/{inbox:\\d+}/widget", widget_page)
    app.router.add_route("GET", "/chat/{inbox:\\d+}/config", config)
    app.router.add_route("OPTIONS", "/chat/{inbox:\\d+}/config", config)
    app.router.add_post("/chat/{inbox:\\d+}/session", session)
    app.router.add_get("/chat/{inbox:\\d+}/files/{key:.+}", file)
    app.router.add_get("/chat/{inbox:\\d+}/qr.svg", qr_code)
    webchat_ws.add_routes(app)
    webchat_api.add_routes(app)
    webchat_demo.add_routes(app)
    app.on_shutdown.append(_close_hub)


async def _close_hub(app: web.Application) -> None:
    from scrm.services.webchat.push import HUB_KEY

    hub = app[CTX].extras.get(HUB_KEY) if CTX in app else None
    if hub is not None:
        await hub.close()
        await close_going_away([conn.ws for group in hub.by_topic.values() for conn in group])
