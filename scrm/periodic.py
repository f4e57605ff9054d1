"""Periodic background jobs (broadcast scheduler, SLA checker, bot timeouts).

They run wherever an outbox worker runs (`scrm serve` in the embedded default, `scrm worker` in
production), each under a cluster-wide lease so exactly one process runs a given job at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scrm.context import AppContext

log = logging.getLogger("scrm.periodic")

# (module, function): each function is `async def f(ctx, stop: asyncio.Event) -> None`.
JOBS: tuple[tuple[str, str], ...] = (
    ("scrm.services.broadcasts", "run_scheduler"),
    ("scrm.services.sla", "run_sla_checker"),
    ("scrm.services.bot", "run_timeouts"),
    ("scrm.services.snooze", "run_snooze_waker"),
    ("scrm.services.wecom_kf_sync", "run_catchup"),
    ("scrm.services.wecom_jobs", "run_wecom_jobs"),
    ("scrm.services.webchat_email", "run_email_followups"),
)
LEASE = 30.0


def _available() -> list[tuple[str, Callable[..., Awaitable[None]]]]:
    jobs = []
    for module, name in JOBS:
        if importlib.util.find_spec(module) is None:
            continue
        fn = getattr(importlib.import_module(module), name, None)
        if fn is not None:
            jobs.append((f"{module}.{name}", fn))
    return jobs


async def _leased(ctx: AppContext, name: str, fn: Callable[..., Awaitable[None]], stop: asyncio.Event) -> None:
    """Run `fn` while this process holds the job's lease; renew it; stop when asked."""
    key = f"periodic:{name}"
    while not stop.is_set():
        if await ctx.cache.try_acquire(key, ctx.process_id, LEASE):
            inner = asyncio.Event()
            task = asyncio.create_task(fn(ctx, inner))
            try:
                while not stop.is_set() and not task.done():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), LEASE / 3)
                    if not await ctx.cache.try_acquire(key, ctx.process_id, LEASE):
                        break  # another process took over
            finally:
                inner.set()
                with contextlib.suppress(TimeoutError, asyncio.CancelledError, Exception):
                    await asyncio.wait_for(task, 10)
                if task.done() and not task.cancelled() and task.exception():
                    log.error("periodic job %s failed: %r", name, task.exception())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), LEASE / 3)


def start_periodic(ctx: AppContext, stop: asyncio.Event) -> list[asyncio.Task[None]]:
    """Start every available periodic job; they end when `stop` is set."""
    return [asyncio.create_task(_leased(ctx, name, fn, stop)) for name, fn in _available()]
