"""Snoozed conversations wake up at their time: back to open, with a note in the thread and the
assignee notified. A periodic job (one process cluster-wide, see scrm.periodic) runs it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import select

from scrm import events as ev
from scrm.db.models import Conversation, utcnow
from scrm.services.conversations import actions as conv_svc
from scrm.services.uow import unit_of_work

if TYPE_CHECKING:
    from scrm.context import AppContext

log = logging.getLogger("scrm.snooze")
CHECK_INTERVAL = 10.0
BATCH = 200


async def wake_due(ctx: AppContext, now: datetime | None = None) -> list[int]:
    """Reopen every snoozed conversation whose time has come; returns their ids."""
    now = now or utcnow()
    async with ctx.db.session() as s:
        due = list((await s.scalars(select(Conversation.id).where(
            Conversation.status == "snoozed", Conversation.snoozed_until <= now)
            .order_by(Conversation.snoozed_until).limit(BATCH))).all())
    woken = []
    for cid in due:
        async with unit_of_work(ctx) as tx:
            conv, _, _ = await conv_svc.load(tx, cid)
            # Read again under the conversation's turn: an agent may have reopened or re-snoozed it meanwhile.
            if conv.status != "snoozed" or conv.snoozed_until is None or conv.snoozed_until > now:
                continue
            conv.status = "open"
            conv.snoozed_until = None
            await conv_svc.add_system_note(tx, conv, "延后时间已到，会话重新打开 / Snooze ended; the conversation is open again",
                                           snooze={"ended": True})
            tx.emit(ev.CONVERSATION_STATUS_CHANGED, conversation_id=conv.id, status="open", previous="snoozed",
                    by="snooze", inbox_id=conv.inbox_id)
            tx.emit(ev.CONVERSATION_UPDATED, conversation_id=conv.id, inbox_id=conv.inbox_id, changed=["status"])
        woken.append(cid)
    return woken


async def run_snooze_waker(ctx: AppContext, stop: asyncio.Event) -> None:
    """Periodic job: wake snoozed conversations that are due."""
    while not stop.is_set():
        try:
            woken = await wake_due(ctx)
            if woken:
                log.info("woke %d snoozed conversations", len(woken))
        except Exception:
            log.exception("snooze wake-up failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), CHECK_INTERVAL)
