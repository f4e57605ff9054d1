"""The bot listener: answers customer messages while the bot handles the conversation, and keeps
this process's FAQ index in sync with the knowledge base (`faq.changed`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from scrm import event_interest as interest
from scrm import events as ev
from scrm.services.bot import faq as faq_svc
from scrm.services.bot import rounds as bot_svc

if TYPE_CHECKING:
    from scrm.context import AppContext

log = logging.getLogger("scrm.listeners.bot")


def install(ctx: AppContext) -> list[Callable[[], object]]:
    """Subscribe to message.created and faq.changed; start building the FAQ index in the background."""
    runtime = bot_svc.get_runtime(ctx)  # validates the flows at start: a broken file fails loudly

    async def on_message(event: ev.Event) -> None:
        data = event.data
        # A customer's message while the bot handled the conversation: the handler when the message was stored
        # (a message sent to an agent stays the agent's, even if the conversation is handed back meanwhile).
        if not runtime.enabled or not interest.bot_answers(event):
            return
        cid = data.get("conversation_id")
        # In the event log consumer's transaction: a deadlock fails the batch, which is worked again.
        await bot_svc.handle_inbound(ctx, int(data["message_id"]), cid if isinstance(cid, int) else None)

    async def on_faq(event: ev.Event) -> None:
        index = ctx.extras.get(faq_svc._INDEX_KEY)  # noqa: SLF001
        if index is None:
            return  # not built yet: it will read the table as it is
        await index.refresh(ctx, [str(k) for k in event.data.get("keys") or []])

    async def index_ready() -> None:
        if runtime.enabled:  # built (and the example knowledge base seeded) outside the consumer's transaction
            await faq_svc.get_index(ctx, dict(runtime.config))

    ctx.bus.before_work.append(index_ready)
    unsubscribe: list[Callable[[], object]] = [ctx.bus.subscribe(on_message, ev.MESSAGE_CREATED),
                   lambda: ctx.bus.before_work.remove(index_ready) if index_ready in ctx.bus.before_work else None,
                   ctx.bus.subscribe(on_faq, ev.FAQ_CHANGED, everywhere=True)]
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return unsubscribe
    if not runtime.enabled:
        return unsubscribe
    warm = loop.create_task(_warm(ctx, runtime.config))

    def stop_warming() -> asyncio.Task[None]:
        # Returned so the app awaits it: an abandoned task mid-query keeps a DB connection busy.
        warm.cancel()
        return warm

    return [*unsubscribe, stop_warming]


async def _warm(ctx: AppContext, config: dict[str, object]) -> None:
    """Seed the example knowledge base on first start and build the index before the first question."""
    with contextlib.suppress(asyncio.CancelledError):
        try:
            await faq_svc.get_index(ctx, dict(config))
        except Exception:
            log.exception("could not build the FAQ index")
