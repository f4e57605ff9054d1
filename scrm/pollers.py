"""Runs channel pollers (Telegram getUpdates, IMAP): at most one per inbox across all processes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from sqlalchemy import select

from channels.registry import get_adapter_class
from scrm.db.models import Inbox
from scrm.services.conversations.ingest import ingest

if TYPE_CHECKING:
    from scrm.context import AppContext

log = logging.getLogger("scrm.pollers")
LEASE_SECONDS = 30.0


class PollerManager:
    """Every few seconds: take or renew the lease of each polling inbox; run its poller while held."""

    def __init__(self, ctx: AppContext, interval: float = 10.0) -> None:
        self.ctx = ctx
        self.interval = interval
        self.tasks: dict[int, asyncio.Task[None]] = {}

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                try:
                    await self.tick()
                except Exception:
                    log.exception("poller supervision failed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.interval)
        finally:
            await self.stop_all()

    async def tick(self) -> None:
        async with self.ctx.db.session() as s:
            inboxes = list((await s.scalars(select(Inbox).where(Inbox.active.is_(True)))).all())
        wanted: set[int] = set()
        for inbox in inboxes:
            try:
                if not get_adapter_class(inbox.channel_type).capabilities.polling:
                    continue
            except KeyError:
                continue
            if not self.ctx.adapters.for_inbox(inbox).wants_polling():
                continue  # e.g. Telegram in webhook mode: polling would delete the webhook
            if await self.ctx.cache.try_acquire(f"poller:{inbox.id}", self.ctx.process_id, LEASE_SECONDS):
                wanted.add(inbox.id)
                task = self.tasks.get(inbox.id)
                if task is None or task.done():
                    self.tasks[inbox.id] = asyncio.create_task(self._poll(inbox))
        for inbox_id in list(self.tasks):
            if inbox_id not in wanted:
                self.tasks.pop(inbox_id).cancel()

    async def _poll(self, inbox: Inbox) -> None:
        adapter = self.ctx.adapters.for_inbox(inbox)

        async def sink(items):  # type: ignore[no-untyped-def]
            return await ingest(self.ctx, inbox, items)

        backoff = 1.0
        while True:
            try:
                log.info("polling inbox %s (%s)", inbox.id, inbox.channel_type)
                async for _ in adapter.poll(sink):
                    backoff = 1.0
                return
            except asyncio.CancelledError:
                raise
            except NotImplementedError:
                return
            except Exception as exc:  # noqa: BLE001 - a poller must never die for good
                log.warning("poller of inbox %s failed (%s); retrying in %.0fs", inbox.id, type(exc).__name__, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 60.0)

    async def stop_all(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        for task in self.tasks.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.tasks.clear()
