"""The channel adapter protocol: what every channel implements and what the application lends it.

An adapter translates only: platform payload -> [InboundMessage | ChannelEvent] (handed to the
ingest sink), and OutboundMessage -> platform API call. It never writes the database; the web layer
calls `handle_webhook`, the outbox worker alone calls `send`.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar, Protocol

import aiohttp
from pydantic import BaseModel, ConfigDict

from scrm.domain import (
    Attachment,
    Choice,
    Inbound,
    IngestOutcome,
    OutboundMessage,
    SendResult,
    WebhookRequest,
    WebhookResponse,
)


@dataclass(frozen=True)
class Capabilities:
    """What a channel can do; the application degrades gracefully where it cannot."""

    buttons: bool = False  # inline buttons / quick replies; otherwise numbered text
    max_buttons: int = 0
    max_text_length: int | None = None
    attachments: bool = True
    # Customer-service window after the contact's last message (WeChat: 48 h); None = always open.
    reply_window: timedelta | None = None
    # The receiver deduplicates by our idempotency key, so a delivery whose outcome is unknown
    # after a worker crash may be sent again safely. Otherwise it is failed as "outcome unknown".
    idempotent_send: bool = False
    polling: bool = False  # the adapter can pull messages itself (IMAP, getUpdates)
    # Conversations follow explicit thread references (email): an unreferenced message opens a new
    # conversation instead of continuing the contact's latest one.
    threaded: bool = False
    # At most this many messages per reply window (WeCom 微信客服: 5 within 48 h of the customer's
    # last message); None = no count limit.
    max_replies_in_window: int | None = None
    # Broadcasts are handed to staff who confirm them in their own client (WeCom 群发助手), grouped
    # per sender, instead of being sent one delivery at a time.
    staff_confirmed_broadcast: bool = False
    # The channel carries the satisfaction survey in the message that ends its session (WeCom 微信客服:
    # after the end only the session's closing code reaches the customer, kf/send_msg answers 95018),
    # so the desk does not queue a survey of its own when a conversation is resolved.
    survey_on_close: bool = False


@dataclass(frozen=True)
class RateLimit:
    """`rate` sends per `per` seconds for all deliveries sharing `key`, across every worker."""

    key: str
    rate: float
    per: float = 1.0


@dataclass(frozen=True)
class InboxConfig:
    """An inbox as the adapter sees it: one connected channel account."""

    id: int
    name: str
    channel_type: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    secrets: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FetchedFile:
    data: bytes
    filename: str | None = None
    mime_type: str | None = None


class FileStorage(Protocol):
    """Where attachments live (a local directory by default)."""

    async def save(self, data: bytes, *, filename: str | None, mime_type: str | None) -> str:
        """Store bytes and return the storage key."""
        ...

    async def load(self, key: str) -> bytes:
        """Return the bytes stored under key (KeyError if missing)."""
        ...


class SharedCache(Protocol):
    """A key/value cache with locks shared by every process (Redis) or this process (memory)."""

    async def get(self, key: str) -> str | None: ...

    async def set(self, key: str, value: str, ttl: float | None = None) -> None: ...

    async def delete(self, key: str) -> None: ...

    def lock(self, key: str, timeout: float = 30.0) -> AbstractAsyncContextManager[None]:
        """Hold an exclusive lock on key (across processes when Redis is configured)."""
        ...


class DurableState(Protocol):
    """Small JSON state per inbox kept in the database (poll offsets, IMAP UIDs); survives restarts."""

    async def get(self, key: str) -> Any | None: ...

    async def set(self, key: str, value: Any) -> None: ...


class OutboundRefused(aiohttp.ClientConnectionError):
    """The runtime's `http` refused a destination (the server's outbound policy, scrm/outbound.py).

    The message names the host and why, never a response body.
    """

    def __init__(self, host: str, reason: str) -> None:
        super().__init__(f"outbound request to {host} refused: {reason}")
        self.host = host
        self.reason = reason


class ChannelRuntime(Protocol):
    """What the application lends an adapter: HTTP client, storage, shared cache, settings."""

    @property
    def http(self) -> Any:  # aiohttp.ClientSession
        ...

    @property
    def storage(self) -> FileStorage: ...

    @property
    def cache(self) -> SharedCache: ...

    @property
    def state(self) -> DurableState:
        """Durable state of this inbox."""
        ...

    @property
    def public_url(self) -> str | None:
        """The server's public base URL (for registering webhooks), if configured."""
        ...

    def expects_passive_reply(self) -> bool:
        """Whether a callback arriving now may wait for the bot's answer (False when overloaded).

        The adapter asks before storing the message, and marks it so the worker leaves its answer
        to the callback (see `passive_reply`) while the callback waits.
        """
        ...

    async def request_pull(self, data: Mapping[str, Any]) -> None:
        """The platform says new items wait to be pulled (WeCom's kf_msg_or_event): record that durably
        before the webhook is answered; the application pulls after the answer, in one process."""
        ...

    async def push(self, topic: str, payload: str) -> None:
        """Live-push `payload` to the clients listening on `topic` in any process (web chat visitors).

        Best effort: Redis pub/sub when configured, this process otherwise."""
        ...

    async def passive_reply(
        self,
        outcome: IngestOutcome,
        timeout: float,
        accept: Callable[[OutboundMessage], bool] | None = None,
    ) -> OutboundMessage | None:
        """Wait up to `timeout` s for the bot's first answer to the stored message `outcome`.

        A reply for which `accept(reply)` is False (too long, attachments) is left to the worker.
        If it is ready, its delivery is claimed (the worker will not send it) and returned so the
        adapter can answer it in the webhook response (WeChat passive reply). For a duplicate
        (platform retry) it returns the answer given the first time. None when nothing came in time.
        """
        ...


IngestSink = Callable[[Sequence[Inbound]], Awaitable[list[IngestOutcome]]]
"""The single sink: stores items in one committed transaction and returns one outcome each."""


class AdapterSettings(BaseModel):
    """Base for an adapter's validated `settings` / `secrets` of an inbox."""

    model_config = ConfigDict(extra="forbid")


class ChannelAdapter(abc.ABC):
    """Base class of channel adapters. Subclasses register themselves in channels.registry."""

    channel_type: ClassVar[str]
    display_name: ClassVar[str]
    capabilities: ClassVar[Capabilities] = Capabilities()
    settings_model: ClassVar[type[AdapterSettings]] = AdapterSettings
    secrets_model: ClassVar[type[AdapterSettings]] = AdapterSettings

    @classmethod
    def init_secrets(cls, secrets: Mapping[str, Any]) -> dict[str, Any]:
        """Fill generated secrets (webhook secret tokens, ...) when an inbox is created."""
        return dict(secrets)

    def __init__(self, inbox: InboxConfig, runtime: ChannelRuntime) -> None:
        self.inbox = inbox
        self.runtime = runtime
        self.settings = self.settings_model.model_validate(dict(inbox.settings))
        self.secrets = self.secrets_model.model_validate(dict(inbox.secrets))

    @abc.abstractmethod
    async def handle_webhook(self, request: WebhookRequest, sink: IngestSink) -> WebhookResponse:
        """Verify and parse a platform request, hand the items to `sink`, then answer.

        Raise WebhookError to refuse (nothing stored). Call the sink before answering: the
        platform is acknowledged only after its message is committed.
        """

    @abc.abstractmethod
    async def send(self, message: OutboundMessage) -> SendResult:
        """Deliver one outbound message; raise TransientSendError / PermanentSendError."""

    def rate_limits(self, message: OutboundMessage) -> Sequence[RateLimit]:
        """The rate limits this delivery counts against (applied by the worker before send)."""
        return ()

    @classmethod
    def reply_blocked(cls, identity_attributes: Mapping[str, Any], last_inbound_at: datetime | None = None) -> str | None:
        """Why the platform would refuse a reply to this identity now (its session rules), or None.

        `last_inbound_at`: the contact's last message (a session the platform ended may restart with it)."""
        return None

    async def setup(self) -> None:
        """Register with the platform (e.g. setWebhook) when the inbox is created or the server starts."""

    async def test_connection(self) -> str:
        """Check credentials with the platform; return a human-readable status or raise SendError."""
        return "ok"

    async def fetch_attachment(self, attachment: Attachment) -> FetchedFile:
        """Download an inbound attachment described by `attachment.source`."""
        raise NotImplementedError(f"{self.channel_type} does not fetch attachments")

    def wants_polling(self) -> bool:
        """Whether the application should run `poll` for this inbox now (a Telegram bot with a
        registered webhook must not: getUpdates would delete it)."""
        return self.capabilities.polling

    async def poll(self, sink: IngestSink) -> AsyncIterator[None]:
        """Pull new messages forever (only for capabilities.polling), yielding after each batch.

        The application runs at most one poller per inbox across processes.
        """
        raise NotImplementedError(f"{self.channel_type} does not poll")
        yield  # pragma: no cover

    async def close(self) -> None:
        """Release resources (HTTP sessions, SDK clients)."""


def choices_as_text(text: str | None, choices: Sequence[Choice]) -> str:
    """Graceful degradation for channels without buttons: numbered options under the text."""
    lines = [text] if text else []
    lines += [f"{i}. {c.label}" for i, c in enumerate(choices, start=1)]
    if choices:
        lines.append("请回复序号选择 / Reply with a number")
    return "\n".join(lines)


def split_text(text: str, limit: int) -> list[str]:
    """Split text into chunks of at most `limit` characters, preferring line then word breaks."""
    if len(text) <= limit:
        return [text]
    chunks: list[str] = []
    rest = text
    while len(rest) > limit:
        cut = rest.rfind("\n", 0, limit)
        if cut < limit // 2:
            cut = rest.rfind(" ", 0, limit)
        if cut < limit // 2:
            cut = limit
        chunks.append(rest[:cut])
        rest = rest[cut:].lstrip("\n") if rest[cut:cut + 1] == "\n" else rest[cut:]
    if rest:
        chunks.append(rest)
    return chunks
