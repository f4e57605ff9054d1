"""OutboundMessage -> WeChat customer-service / template payloads, and WeChat errors -> SendError."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from channels.base import FileStorage, choices_as_text, split_text
from channels.wechat.api import WeChatClient
from channels.wechat.settings import TemplateSettings
from channels.wechat.transport import WeChatAPIError, WeChatNetworkError
from scrm.domain import (
    Attachment,
    ContentType,
    OutboundMessage,
    PermanentSendError,
    SendError,
    TransientSendError,
)

MAX_TEXT_BYTES = 2048  # customer-service text limit is counted in UTF-8 bytes
QUOTA_RETRY_AFTER = 3600.0  # 45009: the daily API quota is spent; retrying sooner is pointless
UPLOAD_KINDS = {"image": "image", "sticker": "image", "voice": "voice", "audio": "voice"}


def split_utf8(text: str, max_bytes: int = MAX_TEXT_BYTES) -> list[str]:
    """Split text into chunks of at most `max_bytes` UTF-8 bytes (Chinese is 3 bytes a character)."""
    limit = max_bytes
    while True:
        chunks = split_text(text, limit)
        if all(len(chunk.encode("utf-8")) <= max_bytes for chunk in chunks):
            return chunks
        limit = max(1, limit * 3 // 4)


def send_error(exc: WeChatAPIError | WeChatNetworkError) -> SendError:
    """Map a WeChat failure to what the outbox worker should do with the delivery."""
    if isinstance(exc, WeChatNetworkError):
        return TransientSendError(str(exc), code="network")
    code, msg = exc.errcode, exc.errmsg
    if code == 45015:
        return PermanentSendError(
            "outside the 48-hour customer-service window (or the user unsubscribed)", code="45015"
        )
    if code == 45047:
        return PermanentSendError("customer-service message quota for this user is used up", code="45047")
    if code == 48002:
        return PermanentSendError("the user refuses messages from this account", code="48002", contact_unreachable=True)
    if code == 43004:
        return PermanentSendError("the user does not follow the account", code="43004", contact_unreachable=True)
    if code == 45009:
        return TransientSendError("WeChat API call quota reached", code="45009", retry_after=QUOTA_RETRY_AFTER)
    if code == -1 or code in (40001, 42001, 40014):  # busy / token race that survived one refresh
        return TransientSendError(f"WeChat is busy: {msg}", code=str(code))
    return PermanentSendError(f"WeChat refused the message: {msg} ({code})", code=str(code))


def text_payloads(recipient: str, text: str) -> list[dict[str, Any]]:
    """One `text` customer-service message per chunk."""
    return [
        {"touser": recipient, "msgtype": "text", "text": {"content": chunk}}
        for chunk in split_utf8(text)
        if chunk
    ]


def news_payload(message: OutboundMessage) -> dict[str, Any] | None:
    """A single-article `news` message when metadata carries `news` or `link` (or type is link)."""
    meta = message.metadata
    spec = meta.get("news") or meta.get("link")
    if not isinstance(spec, Mapping):
        if message.content_type != ContentType.LINK or not meta.get("url"):
            return None
        spec = meta
    article = {
        "title": str(spec.get("title") or message.text or ""),
        "description": str(spec.get("description") or ""),
        "url": str(spec.get("url") or ""),
        "picurl": str(spec.get("picurl") or spec.get("image_url") or spec.get("thumb_url") or ""),
    }
    if not article["url"]:
        raise PermanentSendError("a news/link message needs a url", code="bad_message")
    return {"touser": message.recipient_id, "msgtype": "news", "news": {"articles": [article]}}


async def attachment_payload(
    recipient: str, att: Attachment, client: WeChatClient, storage: FileStorage
) -> dict[str, Any]:
    """Upload a stored file as temporary media and build its image/voice message."""
    kind = UPLOAD_KINDS.get(att.kind)
    if kind is None:
        if att.url:  # WeChat cannot send files: a link is the graceful fallback
            label = att.filename or att.url
            return {"touser": recipient, "msgtype": "text", "text": {"content": f"{label}\n{att.url}"}}
        raise PermanentSendError(f"WeChat cannot send {att.kind} attachments", code="unsupported_attachment")
    media_id = att.source.get("media_id") if att.source else None
    if not media_id:
        if att.storage_key:
            data = await storage.load(att.storage_key)
        elif att.url:
            data = (await client.download(att.url)).data
        else:
            raise PermanentSendError("attachment has neither a stored file nor a url", code="bad_message")
        media_id = await client.upload_media(kind, data, filename=att.filename, mime_type=att.mime_type)
    return {"touser": recipient, "msgtype": kind, kind: {"media_id": media_id}}


def message_text(message: OutboundMessage) -> str:
    """The text to send; buttons degrade to numbered options (WeChat OA has no inline buttons)."""
    return choices_as_text(message.text, message.choices) if message.choices else (message.text or "")


def template_payload(message: OutboundMessage, config: TemplateSettings | None) -> dict[str, Any]:
    """Build message/template/send from metadata (template_id, data, url) or the inbox mapping."""
    meta = message.metadata
    template_id = meta.get("template_id") or (config.template_id if config else None)
    if not template_id:
        raise PermanentSendError("no WeChat template configured for this inbox", code="no_template")
    raw = meta.get("data")
    if isinstance(raw, Mapping):
        data = {name: _template_value(value) for name, value in raw.items()}
    elif config is not None:
        data = {}
        for field_name, source in config.fields.items():
            value = message.text if source == "text" else meta.get(source)
            if value is not None:
                data[field_name] = _template_value(value)
    else:
        data = {"first": _template_value(message.text or "")}
    payload: dict[str, Any] = {"touser": message.recipient_id, "template_id": template_id, "data": data}
    url = meta.get("url") or (config.url if config else None)
    if url:
        payload["url"] = url
    return payload


def _template_value(value: Any) -> dict[str, Any]:
    if isinstance(value, Mapping):
        return {"value": str(value.get("value", "")), **{k: v for k, v in value.items() if k == "color"}}
    return {"value": str(value)}
