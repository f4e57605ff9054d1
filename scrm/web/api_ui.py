"""Small endpoints the inbox pages need: attachment upload, channel settings forms, the customer simulator."""

from __future__ import annotations

import mimetypes
from typing import Any

from aiohttp import BodyPartReader, web
from sqlalchemy import select

from channels.registry import get_adapter_class
from scrm.db.models import ContactIdentity, Conversation, Inbox, Message
from scrm.serializers import iso
from scrm.services.agents.accounts import Principal
from scrm.services.agents.file_access import record_upload
from scrm.web.access import require_inbox
from scrm.web.api_inboxes import channel_types_for
from scrm.web.keys import CTX
from scrm.web.routing import ADMIN, SUPPORT, ApiError, api, ok, path_int, query_int

UPLOAD_LIMIT = 20 * 1024 * 1024


def _kind(mime: str) -> str:
    top = mime.split("/", 1)[0]
    return {"image": "image", "audio": "audio", "video": "video"}.get(top, "file")


@api("POST", "/uploads", roles=SUPPORT, tag="files",
     summary="Upload a file (multipart field 'file'); returns an attachment for a reply's attachments list")
async def upload(request: web.Request, principal: Principal) -> web.Response:
    ctx = request.app[CTX]
    if not request.content_type.startswith("multipart/"):
        raise ApiError(400, "send the file as multipart/form-data in the field 'file'", "bad_upload")
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader) or part.name != "file":
            continue
        filename = part.filename or "file"
        data = bytearray()
        while chunk := await part.read_chunk():
            data += chunk
            if len(data) > UPLOAD_LIMIT:
                raise ApiError(413, f"file larger than {UPLOAD_LIMIT // (1024 * 1024)} MB", "too_large")
        mime = part.headers.get("Content-Type") or mimetypes.guess_type(filename)[0] or "application/octet-stream"
        key = await ctx.storage.save(bytes(data), filename=filename, mime_type=mime)
        async with ctx.db.transaction() as s:
            await record_upload(s, principal.agent_id, key)
        return ok({"kind": _kind(mime), "filename": filename[:255], "mime_type": mime, "size": len(data),
                   "storage_key": key}, 201)
    raise ApiError(400, "no field named 'file' in the upload", "bad_upload")


def _fields(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """Flatten a pydantic JSON schema into form fields (name, type, required, default, description)."""
    required = set(schema.get("required", []))
    out = []
    for name, prop in (schema.get("properties") or {}).items():
        kind = prop.get("type")
        if kind is None and "anyOf" in prop:
            kinds = [p.get("type") for p in prop["anyOf"] if p.get("type") != "null"]
            kind = kinds[0] if kinds else "string"
        out.append({"name": name, "type": kind or "string", "required": name in required,
                    "default": prop.get("default"), "description": prop.get("description"),
                    "enum": prop.get("enum")})
    return out


@api("GET", "/channel_types", roles=ADMIN, tag="inboxes",
     summary="Channel types in this build with the settings and secrets each inbox form asks for")
async def channel_types(request: web.Request, principal: Principal) -> web.Response:
    items = []
    for name in channel_types_for(request.app[CTX].settings):
        try:
            cls = get_adapter_class(name)
        except (KeyError, ImportError):
            continue
        items.append({"channel_type": name, "display_name": getattr(cls, "display_name", name),
                      "settings": _fields(cls.settings_model.model_json_schema()),
                      "secrets": _fields(cls.secrets_model.model_json_schema())})
    return ok({"items": items})


@api("GET", "/simulator/{inbox_id}/messages", roles=SUPPORT, tag="demo",
     summary="The customer simulator's view of a chat in a memory inbox (what the customer sent and received)",
     query={"sender": "the simulated customer's id", "after": "only messages with a higher id", "limit": "1-200"})
async def simulator_messages(request: web.Request, principal: Principal) -> web.Response:
    ctx = request.app[CTX]
    inbox_id = path_int(request, "inbox_id")
    await require_inbox(request, principal, inbox_id)
    sender = (request.query.get("sender") or "").strip()
    if not sender:
        raise ApiError(400, "query parameter sender is required", "bad_query")
    after = query_int(request, "after", 0, 0, 2**62)
    limit = query_int(request, "limit", 100, 1, 200)
    async with ctx.db.session() as s:
        inbox = await s.get(Inbox, inbox_id)
        if inbox is None or inbox.channel_type != "memory":
            raise ApiError(404, "no simulator inbox with this id", "not_found")
        identity = await s.scalar(select(ContactIdentity).where(ContactIdentity.inbox_id == inbox_id,
                                                                ContactIdentity.external_id == sender))
        if identity is None:
            return ok({"items": []})
        # The customer sees what reached them: never private notes or system events.
        rows = (await s.scalars(
            select(Message).join(Conversation, Conversation.id == Message.conversation_id)
            .where(Conversation.identity_id == identity.id, Message.private.is_(False), Message.id > after)
            .order_by(Message.id.desc()).limit(limit)
        )).all()
    items = [{"id": m.id, "direction": m.direction, "sender_kind": m.sender_kind, "text": m.text,
              "choices": (m.payload or {}).get("choices", []), "delivery_status": m.delivery_status,
              "created_at": iso(m.created_at)} for m in reversed(rows)]
    return ok({"items": items})
