"""The media listener: downloads inbound attachments that a channel only described (Telegram file_id,
WeChat media_id) into the file storage, so agents see them through authenticated /files URLs.

The download runs outside any database transaction (it may take seconds); only the final update of
the message's attachments is a short transaction, followed by `message.updated`. A failure (file
too large, expired id, network) is recorded on the attachment as `error`; nothing crashes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from scrm import events as ev
from scrm.db.models import Message
from scrm.domain import Attachment, SendError
from scrm.services.uow import unit_of_work

if TYPE_CHECKING:
    from scrm.context import AppContext

log = logging.getLogger("scrm.listeners.media")

# Content types that can carry a file; others (text, location, postback, ...) skip the lookup.
MEDIA_CONTENT = {"image", "file", "audio", "voice", "video", "sticker"}
FETCH_TIMEOUT = 120.0  # seconds for one download (the Bot API allows 20 MB files)
PARALLEL_DOWNLOADS = 4  # per process: downloads must not starve webhooks of bandwidth


def install(ctx: AppContext) -> list[Callable[[], None]]:
    """Subscribe to message.created: fetch pending inbound attachments in the background."""
    slots = asyncio.Semaphore(PARALLEL_DOWNLOADS)

    async def on_message(event: ev.Event) -> None:
        data = event.data
        if data.get("direction") != "in":
            return
        content_type = data.get("content_type")
        if content_type is not None and content_type not in MEDIA_CONTENT:
            return
        message_id = data.get("message_id")
        if not isinstance(message_id, int):
            return
        async with slots:
            await fetch_message_media(ctx, message_id)

    # After the consumer's commit: a download may take minutes and must not hold its transaction open.
    return [ctx.bus.subscribe(on_message, ev.MESSAGE_CREATED, after_commit=True)]


def _pending(attachment: Mapping[str, Any]) -> bool:
    return bool(attachment.get("source")) and not attachment.get("storage_key") and not attachment.get("error")


async def fetch_message_media(ctx: AppContext, message_id: int) -> int:
    """Download every pending attachment of one message; returns how many were stored."""
    async with ctx.db.session() as s:
        message = await s.get(Message, message_id)
        if message is None:
            return 0
        inbox_id = message.inbox_id
        attachments = [dict(a) for a in (message.attachments or []) if isinstance(a, dict)]
    pending = [i for i, a in enumerate(attachments) if _pending(a)]
    if not pending:
        return 0
    adapter = await ctx.adapters.get(inbox_id)
    if adapter is None:
        return 0
    results: dict[int, dict[str, Any]] = {}
    for index in pending:
        results[index] = await _fetch_one(ctx, adapter, attachments[index], message_id)
    if all(not r for r in results.values()):
        return 0
    async with unit_of_work(ctx) as tx:
        message = await tx.session.get(Message, message_id, with_for_update=True)
        if message is None:
            return 0
        current = [dict(a) for a in (message.attachments or [])]
        for index, update in results.items():
            # Match by position and source: the list is never reordered, but be safe.
            if update and index < len(current) and current[index].get("source") == attachments[index].get("source"):
                current[index].update(update)
        message.attachments = current  # a new list: the JSON column sees the change
        tx.emit(ev.MESSAGE_UPDATED, message_id=message.id, conversation_id=message.conversation_id, media=True)
    return sum(1 for r in results.values() if r.get("storage_key"))


async def _fetch_one(ctx: AppContext, adapter: Any, raw: Mapping[str, Any], message_id: int) -> dict[str, Any]:
    """Fetch and save one attachment: {storage_key, size, mime_type, filename} or {error}."""
    fields = Attachment.__dataclass_fields__
    attachment = Attachment(**{k: v for k, v in raw.items() if k in fields})
    limit = ctx.settings.storage.max_file_bytes
    if attachment.size is not None and attachment.size > limit:
        return {"error": f"file is {attachment.size} bytes, above the limit of {limit} bytes"}
    try:
        async with asyncio.timeout(FETCH_TIMEOUT):
            fetched = await adapter.fetch_attachment(attachment)
    except NotImplementedError:
        return {}  # this channel hands over stored files only
    except asyncio.CancelledError:
        raise
    except TimeoutError:
        return {"error": f"download timed out after {FETCH_TIMEOUT:.0f} s"}
    except Exception as exc:  # noqa: BLE001 - recorded on the attachment for the agent
        reason = _reason(exc)
        log.warning("attachment of message %s not fetched: %s", message_id, reason)
        return {"error": reason}
    if len(fetched.data) > limit:
        return {"error": f"file is {len(fetched.data)} bytes, above the limit of {limit} bytes"}
    filename = fetched.filename or attachment.filename
    mime_type = fetched.mime_type or attachment.mime_type
    try:
        key = await ctx.storage.save(fetched.data, filename=filename, mime_type=mime_type)
    except OSError as exc:
        log.error("could not store attachment of message %s: %s", message_id, exc)
        return {"error": "could not store the file"}
    update: dict[str, Any] = {"storage_key": key, "size": len(fetched.data)}
    if mime_type:
        update["mime_type"] = mime_type
    if filename:
        update["filename"] = filename
    return update


def _reason(exc: Exception) -> str:
    """A message safe to show: channel errors are written for agents (tokens redacted); library errors
    (aiohttp, ...) can contain URLs with tokens, so only their class name is kept."""
    if isinstance(exc, SendError):
        return exc.reason
    if type(exc).__module__.startswith("channels."):
        return str(exc)[:300] or type(exc).__name__
    return f"download failed ({type(exc).__name__})"
