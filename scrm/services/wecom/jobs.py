"""The periodic WeCom work (scrm.periodic): 客户联系 full syncs when due, 群发 tasks grouped and polled."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import select

from scrm.db.models import Inbox, utcnow
from scrm.services.wecom import mass as wecom_mass
from scrm.services.wecom.contacts import due, full_sync

if TYPE_CHECKING:
    from scrm.context import AppContext

log = logging.getLogger("scrm.wecom.jobs")
TICK = 10.0


async def run_once(ctx: AppContext, now: datetime | None = None) -> None:
    """One round: due contact syncs, then 群发 grouping and result polling."""
    now = now or utcnow()
    async with ctx.db.session() as s:
        inboxes = (await s.scalars(select(Inbox).where(Inbox.channel_type == "wecom_contacts",
                                                       Inbox.active.is_(True)))).all()
    last_sync: dict[int, datetime] = ctx.extras.setdefault("wecom_contacts_synced", {})
    for inbox in inboxes:
        interval = float((inbox.settings or {}).get("sync_interval_seconds") or 3600)
        if due(last_sync.get(inbox.id), interval, now):
            last_sync[inbox.id] = now
            try:
                count = await full_sync(ctx, inbox.id)
                log.info("wecom contacts inbox %s: %d external contacts synced", inbox.id, count)
            except Exception:  # noqa: BLE001 - one corp's trouble never stops the others
                log.exception("wecom contacts sync of inbox %s failed", inbox.id)
    await wecom_mass.dispatch(ctx)
    await wecom_mass.poll(ctx)


async def run_wecom_jobs(ctx: AppContext, stop: asyncio.Event) -> None:
    """Periodic job entry point."""
    while not stop.is_set():
        try:
            await run_once(ctx)
        except Exception:
            log.exception("wecom periodic work failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), TICK)
