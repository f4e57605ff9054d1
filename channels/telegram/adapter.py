"""The Telegram channel adapter: webhook or long polling in, Bot API calls out."""

from __future__ import annotations

import hmac
import logging
import mimetypes
import re
import secrets as pysecrets
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, ClassVar

from pydantic import ConfigDict, Field, field_validator
from telegram import Bot, Update
from telegram.error import TelegramError

from channels import safejson
from channels.base import (
    AdapterSettings,
    Capabilities,
    ChannelAdapter,
    ChannelRuntime,
    FetchedFile,
    InboxConfig,
    IngestSink,
    RateLimit,
)
from channels.registry import register
from channels.telegram.inbound import ParsedUpdate, parse_update
from channels.telegram.lenient import repair, with_unsupported
from channels.telegram.outbound import chat_id_of, deliver, map_error
from channels.telegram.polling import poll_updates
from channels.telegram.redact import install as install_log_redaction
from channels.telegram.redact import redact
from channels.telegram.request import AiohttpRequest
from scrm.domain import (
    Attachment,
    OutboundMessage,
    PermanentSendError,
    SendResult,
    WebhookError,
    WebhookRequest,
    WebhookResponse,
)

log = logging.getLogger(__name__)
install_log_redaction()

SECRET_HEADER = "x-telegram-bot-api-secret-token"
DEFAULT_API = "https://api.telegram.org"
DEFAULT_ALLOWED_UPDATES = ["message", "edited_message", "callback_query", "my_chat_member"]
GROUP_UPDATES = ["channel_post", "edited_channel_post"]
UPDATE_ID_RE = re.compile(rb'"update_id"\s*:\s*(\d+)')  # to name a broken update in the log


class TelegramSettings(AdapterSettings):
    """Per-inbox options of a Telegram bot."""

    api_base_url: str | None = None  # a self-hosted Bot API server, or a fake one in tests
    accept_groups: bool = False  # group and channel posts are ignored unless set
    max_file_bytes: int = Field(default=20 * 1024 * 1024, gt=0)  # the cloud Bot API's getFile limit
    allowed_updates: list[str] = Field(default_factory=lambda: list(DEFAULT_ALLOWED_UPDATES))
    poll_timeout: int = Field(default=30, ge=0, le=50)  # getUpdates long-poll seconds


class TelegramSecrets(AdapterSettings):
    """The bot token and the secret Telegram echoes in every webhook request."""

    # Never echo a malformed token back in a validation error.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    bot_token: str
    webhook_secret: str | None = None

    @field_validator("bot_token")
    @classmethod
    def _token_shape(cls, value: str) -> str:
        bot_id, sep, rest = value.partition(":")
        if not (bot_id.isdigit() and sep and rest):
            raise ValueError("bot_token must look like '123456789:AA...' (from @BotFather)")
        return value


class FileTooLargeError(ValueError):
    """An inbound file exceeds the inbox's max_file_bytes."""


class FileFetchError(RuntimeError):
    """Telegram did not hand out a file (expired file_id, network); never contains the token."""


@register
class TelegramAdapter(ChannelAdapter):
    """A Telegram bot as an inbox."""

    channel_type: ClassVar[str] = "telegram"
    display_name: ClassVar[str] = "Telegram"
    capabilities: ClassVar[Capabilities] = Capabilities(
        buttons=True, max_buttons=8, max_text_length=4096, attachments=True,
        idempotent_send=False, polling=True,
    )
    settings_model: ClassVar[type[AdapterSettings]] = TelegramSettings
    secrets_model: ClassVar[type[AdapterSettings]] = TelegramSecrets
    settings: TelegramSettings
    secrets: TelegramSecrets
    poll_backoff: float = 1.0  # first wait after a failed getUpdates, doubled up to 30 s

    @classmethod
    def init_secrets(cls, secrets: Mapping[str, Any]) -> dict[str, Any]:
        """Generate the webhook secret token when the inbox is created."""
        filled = dict(secrets)
        if not filled.get("webhook_secret"):
            filled["webhook_secret"] = pysecrets.token_urlsafe(32)
        return filled

    def __init__(self, inbox: InboxConfig, runtime: ChannelRuntime) -> None:
        super().__init__(inbox, runtime)
        self._bot: Bot | None = None

    @property
    def bot_id(self) -> str:
        """The bot's numeric id (the public part of the token)."""
        return self.secrets.bot_token.split(":", 1)[0]

    @property
    def bot(self) -> Bot:
        """The PTB Bot, talking through the runtime's aiohttp session."""
        if self._bot is None:
            base = (self.settings.api_base_url or DEFAULT_API).rstrip("/")
            self._bot = Bot(
                self.secrets.bot_token,
                base_url=f"{base}/bot",
                base_file_url=f"{base}/file/bot",
                request=AiohttpRequest(lambda: self.runtime.http),
                get_updates_request=AiohttpRequest(lambda: self.runtime.http),
            )
        return self._bot

    def _allowed_updates(self) -> list[str]:
        extra = [u for u in GROUP_UPDATES if self.settings.accept_groups and u not in self.settings.allowed_updates]
        return [*self.settings.allowed_updates, *extra]

    # -- inbound -----------------------------------------------------------------------------
    async def handle_webhook(self, request: WebhookRequest, sink: IngestSink) -> WebhookResponse:
        """Check the secret token, parse the update, store it through the sink, then answer 200."""
        if request.method.upper() != "POST":
            raise WebhookError(405, "Telegram webhooks are POST requests", code="method_not_allowed")
        given = request.headers.get(SECRET_HEADER, "")
        expected = self.secrets.webhook_secret or ""
        if not expected or not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode()):
            raise WebhookError(401, "Wrong or missing X-Telegram-Bot-Api-Secret-Token", code="unauthorized")
        try:
            data = safejson.loads(request.body)  # NaN, 5,000-deep nesting, ...: 400 like malformed JSON
        except (ValueError, UnicodeDecodeError):
            found = UPDATE_ID_RE.search(request.body)
            log.warning("telegram inbox %s: update %s is not valid JSON (%d bytes)", self.inbox.id,
                        found.group(1).decode() if found else "(no update_id)", len(request.body))
            raise WebhookError(400, "Body is not valid JSON", code="malformed_json") from None
        parsed = self._parse(data)
        if parsed is None:
            raise WebhookError(400, "Not a valid Telegram update", code="malformed_update")
        await self._ingest([parsed], sink)
        return WebhookResponse(200)

    def _parse(self, data: Any) -> ParsedUpdate | None:
        """Update JSON -> items; None (logged with its update_id) when it cannot be parsed."""
        update_id = data.get("update_id") if isinstance(data, dict) else None
        if not isinstance(update_id, int):
            log.warning("telegram inbox %s: update without an integer update_id", self.inbox.id)
            return None
        try:
            update = Update.de_json(data, self.bot)
            parsed = parse_update(update, accept_groups=self.settings.accept_groups)
        except Exception as exc:  # noqa: BLE001 - any update we cannot read is repaired or answered 400, never 500
            try:
                repaired = repair(data, self.bot)
                reparsed = parse_update(repaired.update, accept_groups=self.settings.accept_groups) if repaired else None
            except Exception:  # noqa: BLE001 - hostile input the repair cannot read either
                repaired, reparsed = None, None
            if repaired is None or reparsed is None:
                log.warning("telegram inbox %s: update %s failed to parse: %s: %s", self.inbox.id,
                            update_id, type(exc).__name__, exc)
                return None
            # An older or partial update: keep what can be read rather than refuse the message.
            log.info("telegram inbox %s: update %s stored without its unreadable parts: %s", self.inbox.id,
                     update_id, ", ".join(repaired.dropped))
            parsed = with_unsupported(reparsed, repaired)
        if parsed.ignored:
            log.info("telegram inbox %s: update %s ignored: %s (keys: %s)", self.inbox.id, update_id,
                     parsed.ignored, ",".join(k for k in data if k != "update_id"))
        return parsed

    async def _ingest(self, parsed: Sequence[ParsedUpdate], sink: IngestSink) -> None:
        """Store every item in one sink call, then answer the callback queries (stops the spinner)."""
        items = [item for p in parsed for item in p.items]
        if items:
            await sink(items)
        for p in parsed:
            if p.callback_query_id is None:
                continue
            try:
                await self.bot.answer_callback_query(p.callback_query_id)
            except TelegramError as exc:  # an old or already answered query: harmless
                log.info("answerCallbackQuery for update %s failed: %s", p.update_id, exc.message)

    async def _ingest_raw(self, updates: list[dict[str, Any]], sink: IngestSink) -> None:
        parsed = [p for p in (self._parse(u) for u in updates) if p is not None]
        await self._ingest(parsed, sink)

    def wants_polling(self) -> bool:
        """Webhook mode when the server has a public URL (setup() registered it), polling otherwise.

        Every process decides the same from the same setting, so no poller ever calls getUpdates
        (which deletes the webhook) while the webhook is meant to stay."""
        return not self.runtime.public_url

    async def poll(self, sink: IngestSink) -> AsyncIterator[None]:
        """Long-poll getUpdates forever, persisting the offset after each stored batch."""

        async def ingest(updates: list[dict[str, Any]]) -> None:
            await self._ingest_raw(updates, sink)

        async for _ in poll_updates(self.bot, self.runtime.state, ingest,
                                    timeout=self.settings.poll_timeout,
                                    allowed_updates=self._allowed_updates(),
                                    backoff=self.poll_backoff):
            yield

    async def fetch_attachment(self, attachment: Attachment) -> FetchedFile:
        """getFile then download, refusing files above max_file_bytes."""
        file_id = attachment.source.get("file_id")
        if not file_id:
            raise FileFetchError("Attachment has no Telegram file_id")
        limit = self.settings.max_file_bytes
        self._check_size(attachment.source.get("file_size") or attachment.size, limit)
        try:
            tg_file = await self.bot.get_file(file_id)
            self._check_size(tg_file.file_size, limit)
            data = bytes(await tg_file.download_as_bytearray())
        except TelegramError as exc:
            # PTB messages name the method, never the URL; strip the token anyway to be safe.
            message = redact(exc.message.replace(self.secrets.bot_token, "<token>"))
            raise FileFetchError(f"Telegram file download failed: {message}") from None
        self._check_size(len(data), limit)
        filename = attachment.filename or (tg_file.file_path or "").rsplit("/", 1)[-1] or None
        mime_type = attachment.mime_type or (mimetypes.guess_type(filename)[0] if filename else None)
        return FetchedFile(data=data, filename=filename, mime_type=mime_type)

    @staticmethod
    def _check_size(size: int | None, limit: int) -> None:
        if size is not None and size > limit:
            raise FileTooLargeError(
                f"Telegram file is {size / 1048576:.1f} MB, above this inbox's limit of "
                f"{limit / 1048576:.1f} MB"
            )

    # -- outbound ----------------------------------------------------------------------------
    async def send(self, message: OutboundMessage) -> SendResult:
        """Deliver text, photos, documents and inline keyboards to the chat `recipient_id`."""
        return await deliver(self.bot, message, self.runtime.storage)

    def rate_limits(self, message: OutboundMessage) -> Sequence[RateLimit]:
        """30 msg/s per bot; 1 msg/s per private chat; 20 msg/min per group or channel."""
        chat = chat_id_of(message.recipient_id)
        prefix = f"telegram:{self.bot_id}"
        per_chat = (RateLimit(f"{prefix}:chat:{chat}", 1, 1.0) if isinstance(chat, int) and chat > 0
                    else RateLimit(f"{prefix}:chat:{chat}", 20, 60.0))
        return (RateLimit(f"{prefix}:global", 30, 1.0), per_chat)

    async def setup(self) -> None:
        """Register the webhook when a public URL is configured, else clear it for polling."""
        try:
            if self.runtime.public_url:
                if not self.secrets.webhook_secret:
                    raise PermanentSendError("Inbox has no webhook_secret; recreate its secrets",
                                             code="no_webhook_secret")
                url = f"{self.runtime.public_url.rstrip('/')}/webhooks/telegram/{self.inbox.id}"
                await self.bot.set_webhook(url=url, secret_token=self.secrets.webhook_secret,
                                           allowed_updates=self._allowed_updates())
            else:
                await self.bot.delete_webhook(drop_pending_updates=False)
        except TelegramError as exc:
            raise map_error(exc) from None

    async def test_connection(self) -> str:
        """getMe: proves the token works and names the bot."""
        try:
            me = await self.bot.get_me()
        except TelegramError as exc:
            raise map_error(exc) from None
        return f"@{me.username} (id {me.id})"
