"""The HTTP API channel: any system posts signed JSON messages in and receives signed callbacks.

Inbound: POST /webhooks/api/{inbox} with X-SCRM-Timestamp and X-SCRM-Signature
(`sha256=` HMAC-SHA256 of "<timestamp>.<body>" with the inbox secret). The body is one message
or {"messages": [...]}. Outbound: POST to the inbox's callback_url, signed the same way, with an
Idempotency-Key header the receiver must use to drop repeats (we may resend after a crash).
"""

from __future__ import annotations

import json
import logging
import secrets
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Annotated, Any, Literal

import aiohttp
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from channels import safejson, signing
from channels.base import AdapterSettings, Capabilities, ChannelAdapter, IngestSink, OutboundRefused
from channels.registry import register
from scrm.domain import (
    Attachment,
    ChannelEvent,
    ChannelEventKind,
    ContactProfile,
    InboundMessage,
    OutboundMessage,
    PermanentSendError,
    SendResult,
    TransientSendError,
    WebhookError,
    WebhookRequest,
    WebhookResponse,
)

log = logging.getLogger("scrm.channels.api")
_ENCODER = json.JSONEncoder(ensure_ascii=False)  # built once: json.dumps with options builds one per call
MAX_BATCH = 100


class ApiSettings(AdapterSettings):
    callback_url: str | None = None
    callback_timeout: float = Field(10.0, gt=0)
    timestamp_tolerance_seconds: int = Field(300, ge=1)

    @field_validator("callback_url")
    @classmethod
    def _http_only(cls, v: str | None) -> str | None:
        if v and not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v or None


class ApiSecrets(AdapterSettings):
    secret: str = Field(min_length=16)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=False)


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL (\\u0000) characters")
    return value


def _without_nul(value: str) -> str:
    return value.replace("\x00", "")


# Identifiers (ids, addresses, URLs) with a NUL are refused: stripping it would silently name
# something else. In free text (message text, names, file names) NUL characters are removed.
Ident = Annotated[str, AfterValidator(_no_nul)]
FreeText = Annotated[str, AfterValidator(_without_nul)]
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)


class SenderIn(_Strict):
    id: Ident = Field(min_length=1, max_length=255)
    name: FreeText | None = Field(None, max_length=255)
    email: Ident | None = Field(None, max_length=255)
    phone: Ident | None = Field(None, max_length=64)
    language: Ident | None = Field(None, max_length=16)
    avatar_url: Ident | None = Field(None, max_length=2048)
    attributes: dict[str, Any] = Field(default_factory=dict)


class AttachmentIn(_Strict):
    url: Ident = Field(max_length=2048)
    kind: Literal["image", "file", "audio", "voice", "video"] = "file"
    filename: FreeText | None = Field(None, max_length=255)
    mime_type: Ident | None = Field(None, max_length=255)
    size: int | None = Field(None, ge=0, le=2**53)


class MessageIn(_Strict):
    type: Literal["message", "delivery_status", "unsubscribe"] = "message"
    id: Ident = Field(min_length=1, max_length=255)
    sender: SenderIn
    text: FreeText | None = Field(None, max_length=65536)
    content_type: Literal["text", "image", "file", "audio", "video", "location", "postback"] = "text"
    choice: Ident | None = Field(None, max_length=1024)  # postback payload of a button the user clicked
    attachments: list[AttachmentIn] = Field(default_factory=list, max_length=20)
    sent_at: datetime | None = None
    reply_to: Ident | None = Field(None, max_length=255)
    status: Literal["delivered", "failed"] | None = None  # for type=delivery_status
    error: FreeText | None = Field(None, max_length=4096)

    @field_validator("sent_at")
    @classmethod
    def _storable_time(cls, value: datetime | None) -> datetime | None:
        """A time with an offset must convert to UTC and be from 1970 on (year 1 at +14:00 has no UTC)."""
        if value is None or value.tzinfo is None:
            return value  # a time without an offset is ignored by ingest, as before
        try:
            utc = value.astimezone(UTC)
        except (OverflowError, ValueError):
            raise ValueError("is out of range") from None
        if utc < EARLIEST:
            raise ValueError("is out of range (before 1970)")
        return utc


class BatchIn(_Strict):
    messages: list[MessageIn] = Field(min_length=1, max_length=MAX_BATCH)


def _to_item(m: MessageIn) -> InboundMessage | ChannelEvent:
    if m.type == "delivery_status":
        return ChannelEvent(ChannelEventKind.DELIVERY_STATUS, sender_id=m.sender.id, external_id=m.id,
                            data={"status": m.status or "delivered", "error": m.error})
    if m.type == "unsubscribe":
        return ChannelEvent(ChannelEventKind.CONTACT_UNSUBSCRIBED, sender_id=m.sender.id, external_id=m.id)
    s = m.sender
    return InboundMessage(
        external_id=m.id,
        sender_id=s.id,
        text=m.text,
        content_type=m.content_type,
        attachments=tuple(
            Attachment(kind=a.kind, filename=a.filename, mime_type=a.mime_type, size=a.size, url=a.url) for a in m.attachments
        ),
        profile=ContactProfile(name=s.name, email=s.email, phone=s.phone, language=s.language,
                               avatar_url=s.avatar_url, attributes=s.attributes),
        sent_at=m.sent_at,
        reply_to_external_id=m.reply_to,
        payload={"choice": m.choice} if m.choice else {},
    )


@register
class ApiChannelAdapter(ChannelAdapter):
    channel_type = "api"
    display_name = "HTTP API"
    capabilities = Capabilities(buttons=True, max_buttons=10, idempotent_send=True)
    settings_model = ApiSettings
    secrets_model = ApiSecrets

    @classmethod
    def init_secrets(cls, secrets_: Any) -> dict[str, Any]:
        out = dict(secrets_)
        out.setdefault("secret", secrets.token_urlsafe(32))
        return out

    async def handle_webhook(self, request: WebhookRequest, sink: IngestSink) -> WebhookResponse:
        if request.method != "POST":
            raise WebhookError(405, "use POST", code="method_not_allowed")
        problem = signing.check(
            self.secrets.secret,  # type: ignore[attr-defined]
            request.headers.get(signing.TIMESTAMP_HEADER.lower()),
            request.headers.get(signing.SIGNATURE_HEADER.lower()),
            request.body,
            self.settings.timestamp_tolerance_seconds,  # type: ignore[attr-defined]
        )
        if problem:
            status, reason = problem
            raise WebhookError(status, reason, code="bad_signature" if status == 401 else "bad_header")
        try:
            data = safejson.loads(request.body)
        except safejson.UnsafeJSON as exc:
            raise WebhookError(400, str(exc), code="malformed_json") from None
        try:
            if isinstance(data, dict) and "messages" in data:
                messages = BatchIn.model_validate(data).messages
            else:
                messages = [MessageIn.model_validate(data)]
        except ValidationError as exc:
            raise WebhookError(400, _validation_message(exc), code="invalid_message") from None
        outcomes = await sink([_to_item(m) for m in messages])
        body = {
            "results": [
                {"id": m.id, "message_id": o.message_id, "conversation_id": o.conversation_id,
                 "duplicate": o.duplicate, **({"ignored": o.ignored_reason} if o.ignored_reason else {})}
                for m, o in zip(messages, outcomes, strict=True)
            ]
        }
        return WebhookResponse(200, json.dumps(body).encode(), "application/json")

    async def send(self, message: OutboundMessage) -> SendResult:
        url = self.settings.callback_url  # type: ignore[attr-defined]
        if not url:
            raise PermanentSendError("this API inbox has no callback_url configured", code="no_callback")
        body = _ENCODER.encode(
            {
                "delivery_id": message.delivery_id,
                "idempotency_key": message.idempotency_key,
                "inbox_id": message.inbox_id,
                "conversation_id": message.conversation_id,
                "message_id": message.message_id,
                "recipient": {"id": message.recipient_id},
                "message": {
                    "text": message.text,
                    "content_type": message.content_type,
                    "choices": [{"label": c.label, "payload": c.payload} for c in message.choices],
                    "attachments": [
                        {"kind": a.kind, "filename": a.filename, "mime_type": a.mime_type, "url": a.url}
                        for a in message.attachments
                    ],
                    "reply_to": message.reply_to_external_id,
                    "automatic": message.automatic,
                },
            },
        ).encode()
        headers = {"Content-Type": "application/json", "Idempotency-Key": message.idempotency_key}
        headers |= signing.signed_headers(self.secrets.secret, body)  # type: ignore[attr-defined]
        try:
            # No redirects: a callback that answers 3xx is misconfigured, and following it would let the
            # receiver point the server somewhere else (scrm/outbound.py checks every request it sends).
            async with self.runtime.http.post(
                url, data=body, headers=headers, allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self.settings.callback_timeout),  # type: ignore[attr-defined]
            ) as resp:
                text = await resp.text(errors="replace") if 200 <= resp.status < 300 else ""
                status = resp.status
                retry_after = resp.headers.get("Retry-After")
        except OutboundRefused as exc:
            raise PermanentSendError(f"callback_url refused: {exc.reason}", code="outbound_refused") from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TransientSendError(f"callback unreachable: {type(exc).__name__}", code="network") from None
        if 200 <= status < 300:
            external_id = None
            try:
                external_id = (json.loads(text) or {}).get("id")
            except (ValueError, AttributeError):
                pass
            return SendResult(external_id=str(external_id) if external_id else None)
        # Status only: the receiver's body is its own text (possibly an internal page) and agents read this.
        reason = f"callback answered {short_reason(status)}"
        if status == 429 or status == 408 or status >= 500:
            after = float(retry_after) if retry_after and retry_after.isdigit() else None
            raise TransientSendError(reason, code=str(status), retry_after=after)
        raise PermanentSendError(reason, code=str(status))


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{loc}: {err['msg']}")
    return "invalid message: " + "; ".join(parts)


def short_reason(status: int) -> str:
    """What an agent may read about a failed request: the status and its standard phrase. Never the
    body or the receiver's own reason text (both are the receiver's words, e.g. an internal page)."""
    try:
        return f"HTTP {status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"HTTP {status}"
