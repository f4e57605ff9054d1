"""OutboundMessage -> kf/send_msg bodies, and WeCom errors -> what the outbox worker does with a delivery.

Our delivery's idempotency key becomes the `msgid` of the first part (a derived one for later parts):
WeCom refuses a msgid it has seen, so a resend after a worker crash cannot reach the customer twice.
Bot choices become a `msgmenu` (buttons the customer taps; the click comes back as text with menu_id).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

from channels.base import FileStorage, split_text
from channels.wecom.api import WeComAPIError, WeComClient, WeComNetworkError
from scrm.domain import (
    Attachment,
    ContentType,
    OutboundMessage,
    PermanentSendError,
    SendError,
    TransientSendError,
)

MAX_TEXT_BYTES = 2048
MAX_MENU_ITEMS = 10
THROTTLE_RETRY_AFTER = 60.0
UPLOAD_KINDS = {"image": "image", "sticker": "image", "voice": "voice", "audio": "voice", "video": "video",
                "file": "file"}
_MSGID = re.compile(r"^[0-9A-Za-z_-]{1,32}$")
# Permanent refusals with a reason an agent can act on (branch on errcode only).
REASONS = {
    95000: "invalid open_kfid (check the inbox settings)",
    95004: "the kf account (open_kfid) does not exist",
    95011: "the kf account is already used inside WeCom",
    95012: "the kf account is not used in WeCom",
    95017: "API access to this kf account is switched off (enable 「通过API管理微信客服账号」)",
    95018: "WeCom refuses API messages in this session state (人工 / ended): reply from the WeCom client",
    95001: "WeCom's limit of 5 messages within 48 h of the customer's last message is reached",
    40201: "the kf account is banned",
    95014: "the WeCom servicer is not activated or not receiving",
    40096: "invalid external_userid",
    41051: "another app already sent the welcome message",
    40001: "the app secret is wrong (check the inbox secrets)",
    48002: "this API is not authorised for the app (wrong secret or missing permission)",
    60020: "this server's IP address is not in the app's trusted IPs (企业可信IP)",
}


def part_msgid(key: str, index: int) -> str:
    """The msgid of part `index` of a delivery: its key when that fits WeCom's rule, else a digest."""
    if index == 0 and _MSGID.match(key):
        return key
    return hashlib.md5(f"{key}:{index}".encode()).hexdigest()


def send_error(exc: WeComAPIError | WeComNetworkError) -> SendError:
    """Map a WeCom failure to the worker's decision: retry later, or fail with the reason shown."""
    if isinstance(exc, WeComNetworkError):
        return TransientSendError(str(exc), code="network")
    code = exc.errcode
    if code in (45009, 45033):
        return TransientSendError(f"WeCom rate limit ({code})", code=str(code), retry_after=THROTTLE_RETRY_AFTER)
    if code in (-1, 40014, 42001):
        return TransientSendError(f"WeCom is busy or the token expired ({code})", code=str(code))
    reason = REASONS.get(code) or f"WeCom refused the message ({code})"
    return PermanentSendError(f"{reason} [{code}]", code=str(code), contact_unreachable=False)


def split_utf8(text: str, max_bytes: int = MAX_TEXT_BYTES) -> list[str]:
    """Chunks of at most `max_bytes` UTF-8 bytes (Chinese takes 3 bytes a character)."""
    limit = max_bytes
    while True:
        chunks = split_text(text, limit)
        if all(len(c.encode("utf-8")) <= max_bytes for c in chunks):
            return [c for c in chunks if c]
        limit = max(1, limit * 3 // 4)


def menu_body(text: str | None, message: OutboundMessage) -> dict[str, Any]:
    """A msgmenu: the text as its head and one click item per choice (id = the choice's payload)."""
    items = [{"type": "click", "click": {"id": c.payload[:128], "content": c.label[:1024]}}
             for c in message.choices[:MAX_MENU_ITEMS]]
    body: dict[str, Any] = {"list": items}
    if text:
        body["head_content"] = text
    return body


def card_body(message: OutboundMessage) -> tuple[str, dict[str, Any]] | None:
    """A link / miniprogram / location message described in the metadata (or content type)."""
    meta = message.metadata
    for kind in ("miniprogram", "location", "link"):
        spec = meta.get(kind)
        if isinstance(spec, Mapping):
            return kind, {k: v for k, v in spec.items() if v is not None}
    if message.content_type == ContentType.LINK and meta.get("url"):
        return "link", {"title": message.text or str(meta["url"]), "url": str(meta["url"]),
                        "desc": str(meta.get("description") or "")}
    return None


async def build_parts(message: OutboundMessage, client: WeComClient, storage: FileStorage) -> list[dict[str, Any]]:
    """The message bodies to send (without touser/open_kfid/msgid), attachments uploaded first."""
    parts: list[dict[str, Any]] = []
    card = card_body(message)
    text = message.text or ""
    if card is not None:
        kind, body = card
        if kind in ("link", "miniprogram") and not body.get("thumb_media_id") and body.get("thumb_storage_key"):
            data = await storage.load(str(body.pop("thumb_storage_key")))
            body["thumb_media_id"] = await client.upload_media("image", data, filename="thumb.jpg",
                                                               mime_type="image/jpeg")
        parts.append({"msgtype": kind, kind: body})
    elif message.choices:
        chunks = split_utf8(text) if text else [""]
        parts += [{"msgtype": "text", "text": {"content": c}} for c in chunks[:-1]]
        parts.append({"msgtype": "msgmenu", "msgmenu": menu_body(chunks[-1], message)})
    elif text:
        parts += [{"msgtype": "text", "text": {"content": c}} for c in split_utf8(text)]
    for att in message.attachments:
        parts.append(await attachment_part(att, client, storage))
    if not parts:
        raise PermanentSendError("nothing to send: no text and no attachment", code="empty_message")
    return parts


async def attachment_part(att: Attachment, client: WeComClient, storage: FileStorage) -> dict[str, Any]:
    """Upload a stored file as temporary media and build its image / voice / video / file body."""
    kind = UPLOAD_KINDS.get(att.kind, "file")
    media_id = att.source.get("media_id") if att.source else None
    if not media_id:
        if att.storage_key:
            data = await storage.load(att.storage_key)
        else:
            raise PermanentSendError("attachment has no stored file", code="bad_message")
        media_id = await client.upload_media(kind, data, filename=att.filename, mime_type=att.mime_type)
    return {"msgtype": kind, kind: {"media_id": media_id}}
