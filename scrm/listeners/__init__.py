"""Event listeners: they decide and enqueue (never heavy work inline). Installed per process.
May import: scrm.services, scrm.db, scrm.domain, scrm.context and other top modules; never scrm.web.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scrm.context import AppContext

# Each module exposes install(ctx) -> list of unsubscribe callables.
LISTENER_MODULES = (
    "scrm.listeners.media",
    "scrm.listeners.optout",  # before the bot: opt-out keywords are not questions
    "scrm.listeners.bot",
    "scrm.listeners.realtime",
    "scrm.listeners.desk",
    "scrm.listeners.notifications",
    "scrm.listeners.wecom",
)


def install_listeners(ctx: AppContext, *, run_work: bool = True) -> list[Callable[[], object]]:
    """Subscribe every available listener to the context's event bus.

    `run_work=False` (`scrm serve --no-worker` on Redis): this process still pushes live updates to
    its WebSocket clients, but the work listeners' events (bot answers, desk bookkeeping) are left to
    the processes that run workers.
    """
    unsubscribe: list[Callable[[], object]] = []
    for name in LISTENER_MODULES:
        if importlib.util.find_spec(name) is not None:
            unsubscribe += importlib.import_module(name).install(ctx)
    if run_work:
        unsubscribe.append(ctx.bus.consume_work())
    return unsubscribe


async def uninstall_listeners(unsubscribe: list[Callable[[], object]], timeout: float) -> None:
    """Unsubscribe, and give the work they hand back (FAQ warm-up, events in hand) `timeout` to finish."""
    pending = [r for r in (fn() for fn in unsubscribe) if isinstance(r, asyncio.Future)]
    if pending:
        await asyncio.wait(pending, timeout=timeout)
