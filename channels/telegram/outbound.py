"""OutboundMessage -> Bot API calls, and Bot API errors -> the worker's retry decisions."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, InputFile, Message, ReplyParameters
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    InvalidToken,
    RetryAfter,
    TelegramError,
)

from channels.base import FileStorage, split_text
from scrm.domain import (
    Attachment,
    Choice,
    OutboundMessage,
    PermanentSendError,
    SendError,
    SendResult,
    TransientSendError,
)

log = logging.getLogger(__name__)

MAX_TEXT = 4096
MAX_CAPTION = 1024
MAX_CALLBACK_DATA = 64  # bytes, UTF-8
CHOICE_PROMPT = "请选择 / Please choose:"


def chat_id_of(recipient_id: str) -> int | str:
    """Numeric chat ids as int; "@channelname" stays a string."""
    try:
        return int(recipient_id)
    except ValueError:
        return recipient_id


def callback_data(choice: Choice) -> str:
    """The choice payload as callback data within Telegram's 1-64 byte limit (cut on a character)."""
    data = choice.payload or choice.label
    raw = data.encode("utf-8")
    if len(raw) <= MAX_CALLBACK_DATA:
        return data
    cut = raw[:MAX_CALLBACK_DATA].decode("utf-8", errors="ignore")
    log.warning("callback data of choice %r cut to %d bytes; keep flow payloads short",
                choice.label, MAX_CALLBACK_DATA)
    return cut


def inline_keyboard(choices: Sequence[Choice]) -> InlineKeyboardMarkup | None:
    """One button per row: labels of bot choices are often whole sentences."""
    if not choices:
        return None
    return InlineKeyboardMarkup([[InlineKeyboardButton(c.label, callback_data=callback_data(c))]
                                 for c in choices])


def retry_after_seconds(exc: RetryAfter) -> float:
    """RetryAfter.retry_after is an int or a timedelta depending on PTB settings; seconds either way."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value: Any = exc.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def map_error(exc: TelegramError) -> SendError:
    """Translate a Bot API error into a transient (retry) or permanent (shown to agent) failure."""
    if isinstance(exc, RetryAfter):
        seconds = retry_after_seconds(exc)
        return TransientSendError(f"Telegram rate limit: retry after {seconds:g} s",
                                  code="retry_after", retry_after=seconds)
    if isinstance(exc, Forbidden):
        return PermanentSendError(exc.message, code="forbidden", contact_unreachable=True)
    if isinstance(exc, ChatMigrated):
        return PermanentSendError(f"The group moved to chat {exc.new_chat_id}", code="chat_migrated")
    if isinstance(exc, BadRequest):
        return PermanentSendError(exc.message, code="bad_request")
    if isinstance(exc, InvalidToken):
        return PermanentSendError("Telegram rejected the bot token", code="invalid_token")
    # NetworkError, TimedOut, Conflict, 5xx and anything unknown: worth another try.
    return TransientSendError(exc.message, code=type(exc).__name__.lower())


async def deliver(bot: Bot, message: OutboundMessage, storage: FileStorage) -> SendResult:
    """Send text chunks and attachments; the keyboard goes on the last message sent."""
    chat_id = chat_id_of(message.recipient_id)
    keyboard = inline_keyboard(message.choices)
    text = message.text or ""
    attachments = list(message.attachments)
    if not text and not attachments and keyboard is not None:
        text = CHOICE_PROMPT  # Telegram needs text to hang buttons on
    caption: str | None = None
    chunks: list[str] = []
    if attachments and len(text) <= MAX_CAPTION:
        caption = text or None
    elif text:
        chunks = split_text(text, MAX_TEXT)
    reply = _reply_parameters(message.reply_to_external_id, chat_id)
    steps = len(chunks) + len(attachments)
    if steps == 0:
        raise PermanentSendError("Nothing to send: the message has no text and no attachment",
                                 code="empty_message")
    sent: list[Message] = []
    try:
        for chunk in chunks:
            last = len(sent) == steps - 1
            sent.append(await bot.send_message(
                chat_id, chunk, reply_markup=keyboard if last else None,
                reply_parameters=reply if not sent else None,
            ))
        for i, attachment in enumerate(attachments):
            last = len(sent) == steps - 1
            sent.append(await _send_attachment(
                bot, chat_id, attachment, storage, caption=caption if i == 0 else None,
                keyboard=keyboard if last else None, reply=reply if not sent else None,
            ))
    except TelegramError as exc:
        if sent:  # the worker must know a retry would repeat what already arrived
            log.warning("telegram delivery %s failed after %d of %d parts", message.delivery_id,
                        len(sent), steps)
        raise map_error(exc) from None
    ids = [f"{m.chat.id}:{m.message_id}" for m in sent]
    return SendResult(external_id=ids[0], data={"external_ids": ids})


def _reply_parameters(reply_to: str | None, chat_id: int | str) -> ReplyParameters | None:
    if not reply_to or ":" not in reply_to:
        return None
    chat, _, message_id = reply_to.rpartition(":")
    if chat != str(chat_id) or not message_id.isdigit():
        return None
    return ReplyParameters(message_id=int(message_id), allow_sending_without_reply=True)


async def _send_attachment(bot: Bot, chat_id: int | str, attachment: Attachment, storage: FileStorage,
                           *, caption: str | None, keyboard: InlineKeyboardMarkup | None,
                           reply: ReplyParameters | None) -> Message:
    media: InputFile | str
    if attachment.storage_key:
        try:
            data = await storage.load(attachment.storage_key)
        except KeyError:
            raise PermanentSendError(f"Attachment {attachment.filename or attachment.storage_key} "
                                     "is missing from storage", code="attachment_missing") from None
        media = InputFile(data, filename=attachment.filename or "file")
    elif attachment.url:
        media = attachment.url  # Telegram fetches public URLs itself
    else:
        raise PermanentSendError("Attachment has neither a storage key nor a URL", code="attachment_missing")
    common: dict[str, Any] = {"caption": caption, "reply_markup": keyboard, "reply_parameters": reply}
    if attachment.kind == "image":
        return await bot.send_photo(chat_id, media, **common)
    return await bot.send_document(chat_id, media, **common)
