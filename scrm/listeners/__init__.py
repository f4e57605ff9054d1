"""Event listeners: they decide and enqueue (never heavy work inline). Installed per process.

They may import the services and the core (scrm.*), never the web.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from scrm.listeners import bot, desk, media, notifications, optout, realtime, wecom

if TYPE_CHECKING:
    from scrm.context import AppContext

# Each install(ctx) subscribes its listeners and returns their unsubscribe callables; in this order.
INSTALLERS: tuple[Callable[[AppContext], list[Any]], ...] = (
    media.install,
    optout.install,  # before the bot: opt-out keywords are not questions
    bot.install,
    realtime.install,
    desk.install,
    notifications.install,
    wecom.install,
)


def install_listeners(ctx: AppContext, *, run_work: bool = True) -> list[Callable[[], object]]:
    """Subscribe every listener to the context's event bus.

    `run_work=False` (`scrm serve --no-worker` on Redis): this process still pushes live updates to
    its WebSocket clients, but the work listeners' events (bot answers, desk bookkeeping) are left to
    the processes that run workers.
    """
    unsubscribe: list[Callable[[], object]] = []
    for install in INSTALLERS:
        unsubscribe += install(ctx)
    if run_work:
        unsubscribe.append(ctx.bus.consume_work())
    return unsubscribe


async def uninstall_listeners(unsubscribe: list[Callable[[], object]], timeout: float) -> None:
    """Unsubscribe, and give the work they hand back (FAQ warm-up, events in hand) `timeout` to finish."""
    pending = [r for r in (fn() for fn in unsubscribe) if isinstance(r, asyncio.Future)]
    if pending:
        await asyncio.wait(pending, timeout=timeout)
