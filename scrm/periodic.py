"""Periodic background jobs (broadcast scheduler, SLA checker, bot timeouts, table statistics).

They run wherever an outbox worker runs (`scrm serve` in the embedded default, `scrm worker` in
production), each under a cluster-wide lease so exactly one process runs a given job at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from scrm import event_log
from scrm.db import table_stats
from scrm.services.bot import rounds as bot
from scrm.services.desk import sla, snooze
from scrm.services.marketing import broadcasts, churn
from scrm.services.webchat import email as webchat_email
from scrm.services.wecom import jobs as wecom_jobs
from scrm.services.wecom import kf_sync as wecom_kf_sync

if TYPE_CHECKING:
    from scrm.context import AppContext

log = logging.getLogger("scrm.periodic")

Job = Callable[["AppContext", asyncio.Event], Coroutine[Any, Any, None]]

# (name, job): each job is `async def f(ctx, stop: asyncio.Event) -> None`. The name keys the job's
# cluster-wide lease: keep it when a module moves, or old and new processes would run the job twice.
JOBS: tuple[tuple[str, Job], ...] = (
    ("scrm.services.marketing.broadcasts.run_scheduler", broadcasts.run_scheduler),
    ("scrm.services.desk.sla.run_sla_checker", sla.run_sla_checker),
    ("scrm.services.bot.rounds.run_timeouts", bot.run_timeouts),
    ("scrm.services.desk.snooze.run_snooze_waker", snooze.run_snooze_waker),
    ("scrm.services.wecom.kf_sync.run_catchup", wecom_kf_sync.run_catchup),
    ("scrm.services.wecom.jobs.run_wecom_jobs", wecom_jobs.run_wecom_jobs),
    ("scrm.services.webchat.email.run_email_followups", webchat_email.run_email_followups),
    ("scrm.services.marketing.churn.run_churn_daily", churn.run_churn_daily),
    ("scrm.event_log.run_pruner", event_log.run_pruner),
    ("scrm.db.table_stats.run_analyzer", table_stats.run_analyzer),
)
LEASE = 30.0
RENEW_EVERY = LEASE / 3
RETRY_FIRST, RETRY_MAX = 1.0, 30.0  # backoff after a failure (Redis down, the job crashed), doubling


async def _leased(ctx: AppContext, name: str, fn: Callable[..., Coroutine[Any, Any, None]], stop: asyncio.Event) -> None:
    """Run `fn` while this process holds the job's lease; renew it; stop when asked.

    Survives anything: an error taking or renewing the lease (Redis down) or the job crashing is
    logged and tried again with backoff. A job keeps running while its lease has not run out even
    when a renewal fails (nobody else can take the lease before then); once it might have, the job is
    stopped and the lease taken again when Redis answers.
    """
    key = f"periodic:{name}"
    loop = asyncio.get_running_loop()
    backoff = RETRY_FIRST
    while not stop.is_set():
        wait = RENEW_EVERY
        try:
            if await ctx.cache.try_acquire(key, ctx.process_id, LEASE):
                failed = await _run_while_held(ctx, key, name, fn, stop, held_until=loop.time() + LEASE)
                if failed:
                    wait, backoff = backoff, min(backoff * 2, RETRY_MAX)
                else:
                    backoff = RETRY_FIRST
        except Exception as exc:  # noqa: BLE001 - e.g. Redis down: this job must not stop for good
            log.error("periodic job %s: could not take its lease (%s: %s); retrying in %.0f s",
                      name, type(exc).__name__, exc, backoff)
            wait, backoff = backoff, min(backoff * 2, RETRY_MAX)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), wait)


async def _run_while_held(ctx: AppContext, key: str, name: str, fn: Callable[..., Coroutine[Any, Any, None]],
                          stop: asyncio.Event, held_until: float) -> bool:
    """Run the job and renew its lease until stopped, taken over or expired; True when something failed."""
    loop = asyncio.get_running_loop()
    inner = asyncio.Event()
    task: asyncio.Task[None] = asyncio.create_task(fn(ctx, inner))
    failed = False
    try:
        while not stop.is_set() and not task.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), min(RENEW_EVERY, max(0.1, held_until - loop.time())))
            if stop.is_set() or task.done():
                break
            try:
                if not await ctx.cache.try_acquire(key, ctx.process_id, LEASE):
                    break  # another process took over
                held_until = loop.time() + LEASE
            except Exception as exc:  # noqa: BLE001 - keep the job while the lease surely lasts
                failed = True
                left = held_until - loop.time()
                log.error("periodic job %s: could not renew its lease (%s: %s); %s", name, type(exc).__name__,
                          exc, f"{left:.0f} s of it left" if left > RENEW_EVERY else "stopping the job")
                if left <= RENEW_EVERY:
                    break
    finally:
        inner.set()
        with contextlib.suppress(TimeoutError, asyncio.CancelledError, Exception):
            await asyncio.wait_for(task, 10)
        if not task.done():
            task.cancel()
        elif not task.cancelled() and task.exception():
            failed = True
            log.error("periodic job %s failed: %r", name, task.exception())
    return failed


def start_periodic(ctx: AppContext, stop: asyncio.Event) -> list[asyncio.Task[None]]:
    """Start every periodic job; they end when `stop` is set."""
    return [asyncio.create_task(_leased(ctx, name, fn, stop)) for name, fn in JOBS]
