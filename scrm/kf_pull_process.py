"""The WeCom 微信客服 pull runner process that `scrm worker` hosts (`scrm kf-pulls`, its child).

A kf callback only says "pull": `scrm serve` commits the pull note, answers, and wakes the pull runners
(scrm.services.wecom.kf_sync.run_runner). Pulling (kf/sync_msg pages, storing up to 50 messages a
page) in the server's event loop made the acknowledgements wait behind it; in the worker's own loop
it would queue behind the bot and desk work the worker does for every stored message (about 20 times
the pull's CPU per message) at the worker's lowered priority. So the worker starts one more process,
before it lowers its own priority, that only pulls, at a priority between serve's and the worker's
(PULL_NICE); it is restarted when it dies and stopped with the worker (and stops by itself when the
worker was killed: its parent changes).

Nothing depends on this process for correctness: the note is durable, the lease in the database lets
one process pull an account, the cursor is saved per batch of pages, and the runner scans for owed
pulls every second (a lost wake-up, an expired lease of a killed puller).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from sqlalchemy import select

from scrm.db.models import Inbox

if TYPE_CHECKING:
    from scrm.context import AppContext
    from scrm.settings import Settings

log = logging.getLogger("scrm.kf_pull_process")
RESTART_AFTER = 1.0
GIVE_UP_AFTER = 3  # children in a row that died within QUICK_DEATH of their start: the worker pulls itself
QUICK_DEATH = 10.0
# The pull runner's niceness: below `scrm serve` (0) in CPU priority and above the worker (worker.nice, 10):
# at the same priority as serve its page parsing and ingest calls took the CPU from serve's callbacks in a
# burst, whose 200 then waited on the run queue; the pull yields only while serve has callbacks to answer.
PULL_NICE = 5


async def wanted(ctx: AppContext) -> bool:
    """A pull runner process is worth its memory when a 微信客服 inbox exists (checked when the worker
    starts: one added later is pulled by the worker itself until it restarts)."""
    async with ctx.db.session() as s:
        return await s.scalar(select(Inbox.id).where(Inbox.channel_type == "wecom_kf").limit(1)) is not None


class PullProcess:
    """`scrm kf-pulls` as a child of this process: started, restarted when it dies, stopped with us."""

    def __init__(self, config: str | None, fallback: Callable[[], None]) -> None:
        self.args = [sys.executable, "-m", "scrm.cli", *(["--config", config] if config else []), "kf-pulls"]
        self.proc: asyncio.subprocess.Process | None = None
        self.stopping = False
        self.supervisor: asyncio.Task[None] | None = None
        self.fallback = fallback  # called when the child cannot be kept running: pull in the worker instead

    async def start(self) -> None:
        """Start the child (before the worker lowers its priority: the child sets its own, PULL_NICE)."""
        self.proc = await asyncio.create_subprocess_exec(*self.args)
        log.info("wecom kf pull runner started (pid %s)", self.proc.pid)
        self.supervisor = asyncio.get_running_loop().create_task(self._supervise())

    async def _supervise(self) -> None:
        loop = asyncio.get_running_loop()
        quick_deaths = 0
        while not self.stopping:
            assert self.proc is not None
            started = loop.time()
            code = await self.proc.wait()
            if self.stopping:
                return
            quick_deaths = quick_deaths + 1 if loop.time() - started < QUICK_DEATH else 0
            if quick_deaths >= GIVE_UP_AFTER:
                log.error("wecom kf pull runner keeps exiting (%s); the worker pulls in its own loop", code)
                self.fallback()
                return
            # A restarted child inherits the worker's lowered priority (raising it back needs privileges).
            log.error("wecom kf pull runner exited (%s); restarting it in %.0f s", code, RESTART_AFTER)
            await asyncio.sleep(RESTART_AFTER)
            if not self.stopping:
                self.proc = await asyncio.create_subprocess_exec(*self.args)

    async def stop(self, timeout: float) -> None:
        """SIGTERM (it finishes the pulls in hand), then SIGKILL after `timeout`."""
        self.stopping = True
        proc = self.proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self.supervisor is not None:
            self.supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.supervisor


def _lower_priority() -> None:
    """Niceness PULL_NICE, never lower than it is (a child restarted by the lowered worker keeps the worker's)."""
    if not hasattr(os, "nice"):
        return
    try:
        os.nice(max(0, PULL_NICE - os.nice(0)))
    except OSError as exc:
        log.warning("could not lower the pull runner's CPU priority: %s", exc)


async def run_kf_pulls(settings: Settings) -> int:
    """The child: pull what callbacks noted until SIGTERM or until the worker that started it is gone."""
    from scrm.bootstrap import build_context
    from scrm.services.wecom.kf_sync import run_runner

    _lower_priority()
    ctx = await build_context(settings)
    parent = os.getppid()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def orphaned() -> None:  # the worker was killed (-9): stop too, its successor starts a new runner
        while not stop.is_set():
            if os.getppid() != parent:
                log.warning("wecom kf pull runner: the worker that started it is gone; stopping")
                stop.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)

    watcher = loop.create_task(orphaned())
    try:
        await run_runner(ctx, stop)
        return 0
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await ctx.close()
