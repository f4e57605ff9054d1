"""Long polling with getUpdates: for servers without a public URL (behind NAT, a laptop demo).

The next offset is persisted only after the sink committed a batch, so a crash or restart
re-reads the unconfirmed batch (the sink dedups it) and never skips one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from telegram import Bot
from telegram.error import Conflict, InvalidToken, NetworkError, RetryAfter, TelegramError

from channels.base import DurableState
from channels.telegram.outbound import retry_after_seconds

log = logging.getLogger(__name__)

OFFSET_KEY = "telegram_offset"
MAX_BACKOFF = 30.0

IngestBatch = Callable[[list[dict[str, Any]]], Awaitable[None]]


async def poll_updates(
    bot: Bot,
    state: DurableState,
    ingest: IngestBatch,
    *,
    timeout: int,
    allowed_updates: Sequence[str],
    limit: int = 100,
    backoff: float = 1.0,
) -> AsyncIterator[None]:
    """Delete any webhook, then getUpdates -> ingest -> persist offset, yielding after each batch."""
    await bot.delete_webhook(drop_pending_updates=False)
    offset = await state.get(OFFSET_KEY)
    delay = backoff
    while True:
        try:
            # Raw JSON, not Update objects: one update PTB cannot parse must not block the batch.
            # Bot API method names are case-insensitive; the lower-case spelling keeps PTB from
            # warning that Bot.get_updates exists (it would parse, and fail, the whole batch).
            updates: list[dict[str, Any]] = await bot.do_api_request(
                "getupdates",
                api_kwargs={"offset": offset, "limit": limit, "timeout": timeout,
                            "allowed_updates": list(allowed_updates)},
                read_timeout=timeout + 10,
            )
        except InvalidToken:
            log.error("Telegram rejected the bot token; polling stops")
            raise
        except RetryAfter as exc:
            await asyncio.sleep(retry_after_seconds(exc))
            continue
        except Conflict:
            # A webhook was set again or another process polls the same bot.
            log.warning("getUpdates conflict (webhook set or another poller); retrying in %.0f s", delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF)
            await _delete_webhook_quietly(bot)
            continue
        except (NetworkError, TelegramError) as exc:
            log.warning("getUpdates failed (%s); retrying in %.0f s", exc.message, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF)
            continue
        delay = backoff
        if updates:
            await ingest(updates)
            offset = max(int(u.get("update_id", 0)) for u in updates) + 1
            await state.set(OFFSET_KEY, offset)
        yield


async def _delete_webhook_quietly(bot: Bot) -> None:
    try:
        await bot.delete_webhook(drop_pending_updates=False)
    except TelegramError as exc:
        log.warning("deleteWebhook failed: %s", exc.message)
