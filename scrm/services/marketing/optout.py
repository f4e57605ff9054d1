"""Opt-out keywords (退订, TD, STOP, unsubscribe) and the broadcast opt-out / reply bookkeeping."""

from __future__ import annotations

import unicodedata
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from scrm.db.database import batch_fact
from scrm.db.models import Contact, Delivery, utcnow
from scrm.db.models_marketing import Broadcast, BroadcastRecipient
from scrm.services.uow import Tx

KEYWORDS = frozenset({"退订", "td", "stop", "unsubscribe", "取消订阅"})
_TRIM = " \t\r\n\u3000.。!！~～"
CONFIRMATION = ("您已退订本渠道的群发消息，回复任意内容不会重新订阅；如需恢复请联系客服。\n"
                "You are unsubscribed from broadcasts on this channel. Contact us to subscribe again.")
MAX_REPLY_WINDOW_DAYS = 30


def is_opt_out_keyword(text: str | None) -> bool:
    """True when the whole message is an opt-out keyword (case-, width- and trailing-punctuation-insensitive)."""
    if not text:
        return False
    norm = unicodedata.normalize("NFKC", text).strip(_TRIM).casefold()
    return norm in KEYWORDS


async def opt_out(tx: Tx, contact_id: int, channel: str, *, via: str) -> bool:
    """Record that the contact refuses broadcasts on `channel`; False if `via` was already applied."""
    contact = await tx.session.get(Contact, contact_id, with_for_update=True)
    if contact is None:
        return False
    opt_outs = dict(contact.opt_outs or {})
    if opt_outs.get(f"broadcast:{channel}:via") == via:
        return False  # the same event seen twice (several processes dispatch it)
    now = utcnow()
    opt_outs[f"broadcast:{channel}"] = True
    opt_outs[f"broadcast:{channel}:at"] = now.isoformat()
    opt_outs[f"broadcast:{channel}:via"] = via
    contact.opt_outs = opt_outs
    for r in await _recent_recipients(tx, contact_id, channel=channel):
        if r.opted_out_at is None:
            r.opted_out_at = now
    return True


async def _recent_recipients(tx: Tx, contact_id: int, *, channel: str | None = None,
                             inbox_id: int | None = None) -> list[BroadcastRecipient]:
    since = utcnow() - timedelta(days=MAX_REPLY_WINDOW_DAYS)
    q = (select(BroadcastRecipient, Delivery.sent_at, Broadcast.reply_window_days)
         .join(Delivery, Delivery.id == BroadcastRecipient.delivery_id)
         .join(Broadcast, Broadcast.id == BroadcastRecipient.broadcast_id)
         .where(BroadcastRecipient.contact_id == contact_id, Delivery.sent_at.is_not(None), Delivery.sent_at >= since))
    if channel is not None:
        q = q.where(BroadcastRecipient.channel == channel)
    if inbox_id is not None:
        q = q.where(BroadcastRecipient.inbox_id == inbox_id)
    now = utcnow()
    rows: Any = (await tx.session.execute(q)).all()
    return [r for r, sent_at, days in rows if now - sent_at <= timedelta(days=days)]


async def awaiting_reply(session: AsyncSession, contact_id: int, inbox_id: int) -> bool:
    """Cheap read: did this contact receive a broadcast on this inbox recently that has no reply yet?"""
    known = batch_fact(session, "broadcast_awaiting")  # the event log consumer read it for its whole batch
    if known is not None and contact_id in known:
        return inbox_id in known[contact_id]
    since = utcnow() - timedelta(days=MAX_REPLY_WINDOW_DAYS)
    found = await session.scalar(
        select(BroadcastRecipient.id)
        .join(Delivery, Delivery.id == BroadcastRecipient.delivery_id)
        .where(BroadcastRecipient.contact_id == contact_id, BroadcastRecipient.inbox_id == inbox_id,
               BroadcastRecipient.replied_at.is_(None), Delivery.sent_at >= since)
        .limit(1)
    )
    return found is not None


async def link_reply(tx: Tx, contact_id: int, inbox_id: int) -> int:
    """Mark the broadcasts this contact recently received on this inbox as replied to."""
    n = 0
    for r in await _recent_recipients(tx, contact_id, inbox_id=inbox_id):
        if r.replied_at is None:
            r.replied_at = utcnow()
            n += 1
    return n
