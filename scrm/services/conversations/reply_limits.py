"""A channel's count limit inside its reply window (WeCom 微信客服: at most 5 messages within 48 h of the
customer's last message; a new customer message opens a new allowance).

Counted from the outbox: deliveries to the identity queued since its last inbound message, except
those that never reached the channel (failed, cancelled) and session-state or event-code operations.
Added to the reply window check, so the reply box and the API refuse with the reason before sending.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from scrm.db.models import ContactIdentity, Delivery, Inbox

if TYPE_CHECKING:
    from scrm.context import ChannelRules

COUNTED_KINDS = ("message", "broadcast", "notice")


async def replies_since_inbound(session: AsyncSession, inbox: Inbox, identity: ContactIdentity) -> int:
    """Messages queued or sent to this identity since its last inbound message."""
    if identity.last_inbound_at is None:
        return 0
    return int(await session.scalar(select(func.count(Delivery.id)).where(
        Delivery.ordering_key == f"{inbox.id}:{identity.external_id}",
        Delivery.created_at >= identity.last_inbound_at,
        Delivery.kind.in_(COUNTED_KINDS),
        Delivery.status.not_in(("failed", "cancelled")))) or 0)


async def with_reply_count(session: AsyncSession, inbox: Inbox, identity: ContactIdentity,
                           window: dict[str, Any], channels: ChannelRules) -> dict[str, Any]:
    """The reply window, closed when the channel's per-window message count is used up."""
    if not window.get("open"):
        return window
    caps = channels.capabilities(inbox.channel_type)
    limit = caps.max_replies_in_window if caps is not None else None
    if not limit:
        return window
    sent = await replies_since_inbound(session, inbox, identity)
    if sent >= limit:
        return {"open": False, "closes_at": window.get("closes_at"), "code": "reply_limit",
                "reason": f"the channel allows at most {limit} messages after each customer message "
                          f"({sent} sent); wait for the customer to write again"}
    return window | {"remaining": limit - sent}
