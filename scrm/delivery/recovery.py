"""Giving deliveries back: requeued (not sent after all), released at shutdown, recovered from a worker
that stopped (lease ran out, or found dead by delivery/liveness.py), and the outbox depth gauge.

A `claimed` row was never handed to a channel, so it is simply queued again. A `sending` row may or may
not have reached the channel: it is sent again only where the channel deduplicates by our idempotency
key (or a 群发 resent with its clientmsgid); elsewhere it fails as "outcome unknown" for an agent to
decide, so nobody gets a message twice.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table, func, or_, select, update

from scrm import events as ev
from scrm.db.models import Delivery, Inbox, Message, utcnow
from scrm.delivery.batching import ACTIVE
from scrm.metrics import OUTBOX_DEPTH
from scrm.services.marketing import wechat_mass
from scrm.services.uow import unit_of_work

if TYPE_CHECKING:
    from scrm.context import AppContext

log = logging.getLogger("scrm.delivery.worker")
UNKNOWN_OUTCOME = "outcome unknown: the worker stopped while sending; not resent to avoid a duplicate"
D: Table = Delivery.__table__


async def requeue(ctx: AppContext, delivery: Any, me: str, wait: float) -> None:
    """Back to the queue, due in `wait` seconds: it was not sent (it may be marked `sending` already)."""
    async with ctx.db.transaction() as s:
        await s.execute(
            update(D)
            .where(D.c.id == delivery.id, D.c.status.in_(("claimed", "sending")), D.c.claimed_by == me)
            .values(
                status="queued",
                claimed_by=None,
                lease_until=None,
                attempts=D.c.attempts - 1,
                next_attempt_at=utcnow() + timedelta(seconds=wait),
            )
        )


async def release_claimed(ctx: AppContext, me: str) -> int:
    """Give back rows worker `me` claimed but never started sending (graceful shutdown)."""
    async with ctx.db.transaction() as s:
        res = await s.execute(
            update(D)
            .where(D.c.status == "claimed", D.c.claimed_by == me)
            .values(status="queued", claimed_by=None, lease_until=None, attempts=D.c.attempts - 1)
        )
        return int(res.rowcount or 0)  # type: ignore[attr-defined]


async def recover_stale(ctx: AppContext, dead: set[str] | frozenset[str] = frozenset()) -> int:
    """Recover deliveries whose worker died (their lease ran out, or their worker is in `dead`):
    claimed -> queued; sending -> resend or fail."""
    now = utcnow()
    recovered = 0
    stale = Delivery.lease_until < now
    if dead:
        stale = or_(stale, Delivery.claimed_by.in_(sorted(dead)))
    async with unit_of_work(ctx) as tx:
        s = tx.session
        res = await s.execute(
            update(Delivery)
            .where(Delivery.status == "claimed", stale)
            .values(status="queued", claimed_by=None, lease_until=None)
        )
        recovered += int(res.rowcount or 0)  # type: ignore[attr-defined]
        rows = (
            await s.execute(
                select(Delivery, Inbox.channel_type)
                .join(Inbox, Inbox.id == Delivery.inbox_id)
                .where(Delivery.status == "sending", stale)
                .with_for_update(skip_locked=True, of=Delivery)
            )
        ).all()
        for d, channel_type in rows:
            recovered += 1
            # A 群发 resent with its recorded clientmsgid is not sent twice (WeChat answers 45065).
            if _idempotent(ctx, channel_type) or d.kind == wechat_mass.KIND:
                d.status, d.claimed_by, d.lease_until = "queued", None, None
                continue
            d.status, d.lease_until, d.last_error, d.error_code = "failed", None, UNKNOWN_OUTCOME, "unknown_outcome"
            if d.message_id:
                await s.execute(
                    update(Message)
                    .where(Message.id == d.message_id)
                    .values(delivery_status="failed", delivery_error=UNKNOWN_OUTCOME)
                )
                tx.emit(ev.MESSAGE_UPDATED, message_id=d.message_id, conversation_id=d.conversation_id)
        if recovered:
            log.warning("recovered %d deliveries left by a stopped worker", recovered)
    return recovered


async def update_outbox_depth(ctx: AppContext) -> None:
    """Refresh the outbox depth gauge (called when /metrics is scraped)."""
    async with ctx.db.session() as s:
        rows = await s.execute(
            select(Delivery.status, func.count()).where(Delivery.status.in_(ACTIVE)).group_by(Delivery.status)
        )
        counts = {status: n for status, n in rows}
    for status in ACTIVE:
        OUTBOX_DEPTH.labels(status=status).set(counts.get(status, 0))


def _idempotent(ctx: AppContext, channel_type: str) -> bool:
    caps = ctx.adapters.capabilities(channel_type)
    return bool(caps is not None and caps.idempotent_send)
