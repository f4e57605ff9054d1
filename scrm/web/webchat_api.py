"""Visitor message endpoints (used by the widget when WebSockets are blocked, and for files and forms).

    GET  /chat/{inbox}/messages?after=N|before=N   history
    GET  /chat/{inbox}/poll?cursor=C|after=N       long poll (waits up to 25 s for something new)
    POST /chat/{inbox}/messages                    {"client_id", "text"} or {"client_id", "choice", "text": label}
    POST /chat/{inbox}/upload                      multipart: client_id, file, text (caption)
    POST /chat/{inbox}/read                        {"upto": message id}
    POST /chat/{inbox}/prechat                     {"fields": {"name": ..., "email": ...}}
    POST /chat/{inbox}/transcript                  {"email"}: email the conversation
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from aiohttp import web

from channels.web.adapter import WebChatAdapter, visitor_topic
from scrm.db.models import Inbox, utcnow
from scrm.domain import Attachment, ChannelEvent, ChannelEventKind, ContactProfile, InboundMessage
from scrm.services.conversations.ingest import ingest
from scrm.services.webchat import email as webchat_email
from scrm.services.webchat import visitors as chat_svc
from scrm.services.webchat.push import hub_for, publish_soon
from scrm.services.webchat.shown import Shown
from scrm.web.keys import CTX
from scrm.web.routing import ApiError, ok
from scrm.web.webchat_common import (
    check_origin,
    client_ip,
    message_id,
    rate_limit,
    read_json,
    require_visitor,
    web_inbox,
)
from scrm.web.webchat_files import read_upload

log = logging.getLogger("scrm.webchat")
CLIENT_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
EMAIL = re.compile(r"^[^@\s<>\"']{1,64}@[^@\s<>\"']{1,190}\.[^@\s<>\"']{2,}$")
PHONE = re.compile(r"^\+?[0-9 ()-]{5,32}$")
POLL_SECONDS = 25.0


def _client_id(data: dict[str, Any]) -> str:
    value = data.get("client_id")
    if not isinstance(value, str) or not CLIENT_ID.match(value):
        raise ApiError(400, "client_id must be 8-64 letters, digits, - or _ (one per message, reused on resend)",
                       "invalid_request")
    return value


def _profile(data: dict[str, Any]) -> ContactProfile | None:
    source = data.get("source")
    lang = data.get("lang")
    attrs = {"source": source.strip()[:64]} if isinstance(source, str) and source.strip() else {}
    language = lang if lang in ("zh", "en") else None
    return ContactProfile(language=language, attributes=attrs) if attrs or language else None


async def accept_message(ctx: Any, inbox: Inbox, adapter: WebChatAdapter, visitor: str, data: dict[str, Any],
                         ip: str, *, attachments: tuple[Attachment, ...] = (), blocked_checked: bool = False,
                         ) -> dict[str, Any]:
    """Store one visitor message through the ingest sink (deduplicated by the widget's client id)."""
    st: Any = adapter.settings
    client_id = _client_id(data)
    text = data.get("text")
    if text is not None and not isinstance(text, str):
        raise ApiError(400, "text must be a string", "invalid_request")
    text = (text or "").strip()
    if len(text) > st.max_message_chars:
        raise ApiError(413, f"message longer than {st.max_message_chars} characters", "too_long")
    choice = data.get("choice")
    if choice is not None and (not isinstance(choice, str) or not 0 < len(choice) <= 200):
        raise ApiError(400, "choice must be the payload of a button (1-200 characters)", "invalid_request")
    if not text and not choice and not attachments:
        raise ApiError(400, "the message is empty", "empty_message")
    await rate_limit_message(ctx, inbox, adapter, visitor, ip)
    if not blocked_checked and chat_svc.is_blocked(await chat_svc.identity_of(ctx, inbox.id, visitor)):
        raise ApiError(403, "this chat is not available to you", "blocked")
    content_type = "postback" if choice else (attachments[0].kind if attachments else "text")
    item = InboundMessage(external_id=chat_svc.message_external_id(visitor, client_id), sender_id=visitor,
                          text=text or None, content_type=content_type, attachments=attachments,
                          payload={"choice": choice} if choice else {}, profile=_profile(data))
    outcome = (await ingest(ctx, inbox, [item]))[0]
    if outcome.message_id is not None:
        # The visitor's other tabs and devices show it too (best effort: they catch up on their next push);
        # the acknowledgement does not wait for it. The socket that sent it knows it before the echo can
        # come back (VisitorSocket.wrote, called as this returns).
        publish_soon(ctx, visitor_topic(inbox.id, visitor),
                     json.dumps({"t": "m", "c": outcome.conversation_id, "m": outcome.message_id}))
    return {"client_id": client_id, "id": outcome.message_id, "conversation_id": outcome.conversation_id,
            "duplicate": outcome.duplicate}


async def rate_limit_message(ctx: Any, inbox: Inbox, adapter: WebChatAdapter, visitor: str, ip: str) -> None:
    """Per-visitor and per-address message limits (429)."""
    st: Any = adapter.settings
    # Both counted in one step: a visitor's attempts past their own limit count against their address too.
    await rate_limit(ctx, f"msg:v:{inbox.id}:{visitor}", st.messages_per_minute, "messages",
                     (f"msg:ip:{inbox.id}:{ip}", st.messages_per_minute_per_ip, "messages from this address"))


async def _visitor(request: web.Request) -> tuple[Any, Inbox, WebChatAdapter, str]:
    inbox, adapter = await web_inbox(request)
    check_origin(request, adapter)
    return request.app[CTX], inbox, adapter, require_visitor(request, inbox, adapter)


def _int(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw in (None, ""):
        return None
    try:
        value = int(raw)  # type: ignore[arg-type]
    except ValueError:
        raise ApiError(400, f"{name} must be a message id", "bad_query") from None
    if not 0 <= value < 2**62:
        raise ApiError(400, f"{name} must be a message id", "bad_query")
    return value


async def history(request: web.Request) -> web.Response:
    """The visitor's messages after or before a message id (oldest first)."""
    ctx, inbox, adapter, visitor = await _visitor(request)
    identity = await chat_svc.identity_of(ctx, inbox.id, visitor)
    if identity is None:
        return ok({"messages": [], "conversation": None})
    key = adapter.secrets.token_key  # type: ignore[attr-defined]
    before = _int(request, "before")
    items = await chat_svc.messages(ctx, inbox.id, key, identity.id, after=_int(request, "after") or 0, before=before)
    return ok({"messages": items, "conversation": await chat_svc.conversation_state(ctx, identity.id)})


def _shown(request: web.Request) -> Shown:
    """Where the long-polling client is: its `cursor` (from the last poll), else `after` alone."""
    raw = request.query.get("cursor")
    if raw:
        try:
            return Shown.parse(raw)
        except ValueError:
            raise ApiError(400, "cursor must be the cursor of the last poll", "bad_query") from None
    return Shown(_int(request, "after") or 0)


async def poll(request: web.Request) -> web.Response:
    """Long polling: answer at once when there is something the client was not shown, else wait for a
    push. Like the socket it looks back for replies that committed below its cursor (see shown.py);
    the answer's `cursor` goes with the next poll so that nothing is shown twice."""
    ctx, inbox, adapter, visitor = await _visitor(request)
    shown = _shown(request)
    key = adapter.secrets.token_key  # type: ignore[attr-defined]
    hub = hub_for(ctx)
    # Listening before reading: a push between the read and the wait is not missed.
    async with hub.listening(visitor_topic(inbox.id, visitor)) as pushed:
        for attempt in range(2):
            identity = await chat_svc.identity_of(ctx, inbox.id, visitor)
            if identity is not None:
                if chat_svc.is_blocked(identity):
                    raise ApiError(403, "this chat is not available to you", "blocked")
                found = await chat_svc.messages(ctx, inbox.id, key, identity.id, after=shown.after, limit=200,
                                                recent_since=utcnow() - chat_svc.LATE_COMMIT)
                items = shown.take(found)
                if items or attempt:
                    return ok({"messages": items, "cursor": shown.cursor(),
                               "conversation": await chat_svc.conversation_state(ctx, identity.id)})
            if attempt == 0 and not await hub.wait_for(pushed, POLL_SECONDS):
                break
    return ok({"messages": [], "conversation": None, "cursor": shown.cursor()})


async def post_message(request: web.Request) -> web.Response:
    """Send a visitor message over HTTP (long-polling clients)."""
    ctx, inbox, adapter, visitor = await _visitor(request)
    result = await accept_message(ctx, inbox, adapter, visitor, await read_json(request), client_ip(request))
    return ok(result, 200 if result["duplicate"] else 201)


async def upload(request: web.Request) -> web.Response:
    """An attachment (image or file), size- and type-checked, stored, then sent as a message."""
    ctx, inbox, adapter, visitor = await _visitor(request)
    fields, attachment = await read_upload(request, adapter, check_fields=_client_id)
    result = await accept_message(ctx, inbox, adapter, visitor, fields, client_ip(request), attachments=(attachment,))
    return ok(result, 200 if result["duplicate"] else 201)


async def read(request: web.Request) -> web.Response:
    """Read receipt: the visitor has seen the messages up to `upto`."""
    ctx, inbox, _adapter, visitor = await _visitor(request)
    upto = message_id((await read_json(request)).get("upto"))
    if not upto:
        raise ApiError(400, "upto must be a message id", "invalid_request")
    identity = await chat_svc.identity_of(ctx, inbox.id, visitor)
    marked = await chat_svc.mark_read(ctx, inbox.id, identity.id, upto) if identity else 0
    return ok({"marked": marked})


def check_fields(adapter: WebChatAdapter, given: Any, *, offline: bool = False) -> ContactProfile:
    """Validate a pre-chat (or offline) form against the inbox's fields; name/email/phone go to the contact."""
    st: Any = adapter.settings
    if not isinstance(given, dict):
        raise ApiError(400, "fields must be an object", "invalid_request")
    spec = {f.name: f for f in st.prechat_fields}
    if offline:  # the offline form always asks for an email (and may take a name)
        spec.setdefault("email", None)
        spec.setdefault("name", None)
    values: dict[str, str] = {}
    for name, value in given.items():
        if name not in spec:
            raise ApiError(400, f"unknown field {name!r}", "invalid_request", field=name)
        if value is None or value == "":
            continue
        if not isinstance(value, str) or len(value) > 500:
            raise ApiError(400, f"{name} must be a text of at most 500 characters", "invalid_request", field=name)
        values[name] = value.strip()
    for name, f in spec.items():
        needed = (f is not None and f.required and not offline) or (offline and name == "email")
        if needed and not values.get(name):
            raise ApiError(400, f"{name} is required", "field_required", field=name)
    if values.get("email") and not EMAIL.match(values["email"]):
        raise ApiError(400, "email is not a valid address", "invalid_email", field="email")
    if values.get("phone") and not PHONE.match(values["phone"]):
        raise ApiError(400, "phone is not a valid number", "invalid_phone", field="phone")
    attrs = {k: v for k, v in values.items() if k not in ("name", "email", "phone")}
    return ContactProfile(name=values.get("name"), email=values.get("email"), phone=values.get("phone"),
                          attributes=attrs)


async def prechat(request: web.Request) -> web.Response:
    """The pre-chat (or offline) form: fills the visitor's contact before or instead of a live chat."""
    ctx, inbox, adapter, visitor = await _visitor(request)
    data = await read_json(request)
    await rate_limit(ctx, f"form:{inbox.id}:{visitor}", 10, "form submissions")
    profile = check_fields(adapter, data.get("fields"), offline=bool(data.get("offline")))
    base = _profile(data)
    if base is not None:
        profile = ContactProfile(name=profile.name, email=profile.email, phone=profile.phone, language=base.language,
                                 attributes={**base.attributes, **profile.attributes})
    identity = await chat_svc.identity_of(ctx, inbox.id, visitor)
    if chat_svc.is_blocked(identity):
        raise ApiError(403, "this chat is not available to you", "blocked")
    outcome = (await ingest(ctx, inbox, [ChannelEvent(ChannelEventKind.CONTACT_UPDATED, sender_id=visitor,
                                                      profile=profile)]))[0]
    if profile.email and outcome.contact_id is not None:
        await webchat_email.link_email(ctx, adapter, outcome.contact_id, profile.email)
    return ok({"ok": True})


async def transcript(request: web.Request) -> web.Response:
    """Email the visitor's latest conversation to them (through the inbox's email inbox)."""
    ctx, inbox, adapter, visitor = await _visitor(request)
    data = await read_json(request)
    await rate_limit(ctx, f"transcript:{inbox.id}:{visitor}", 3, "transcript requests")
    email = data.get("email")
    if not isinstance(email, str) or not EMAIL.match(email.strip()):
        raise ApiError(400, "email is not a valid address", "invalid_email", field="email")
    identity = await chat_svc.identity_of(ctx, inbox.id, visitor)
    if identity is None:
        raise ApiError(409, "there is no conversation to send yet", "no_conversation")
    lang = "en" if data.get("lang") == "en" else "zh"
    try:
        await webchat_email.send_transcript(ctx, inbox, adapter, identity.id, email.strip(), lang)
    except webchat_email.TranscriptError as exc:
        raise ApiError(409, str(exc), exc.code) from None
    return ok({"ok": True}, 202)


def add_routes(app: web.Application) -> None:
    """Register the visitor message endpoints."""
    base = "/chat/{inbox:\\d+}"
    app.router.add_get(base + "/messages", history)
    app.router.add_get(base + "/poll", poll)
    app.router.add_post(base + "/messages", post_message)
    app.router.add_post(base + "/upload", upload)
    app.router.add_post(base + "/read", read)
    app.router.add_post(base + "/prechat", prechat)
    app.router.add_post(base + "/transcript", transcript)
