"""A channel's count limit inside its reply window (WeCom 微信客服: at most 5 messages within 48 h of the
customer's last message; a new customer message opens a new allowance).

Counted from the outbox: deliveries to the identity queued since its last inbound message, except
those that never reached the channel (failed, cancelled) and session-state or event-code operations.
Added to the reply window check, so the reply box and the API refuse with the reason before sending.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import String, cast, func, select
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


async def identities_at_limit(session: AsyncSession, limits: Mapping[int, tuple[int, timedelta]], now: datetime,
                              identity_ids: Sequence[int] | None = None) -> frozenset[int]:
    """Identities of these inboxes ({inbox id: (messages allowed, window)}) whose allowance is used up: as
    many messages queued or sent since their last inbound message (inside the window) as the channel
    allows. One grouped query per limit, for a broadcast's recipients (or the given identities)."""
    found: set[int] = set()
    by_limit: dict[tuple[int, timedelta], list[int]] = {}
    for inbox_id, rule in limits.items():
        by_limit.setdefault(rule, []).append(inbox_id)
    key = cast(ContactIdentity.inbox_id, String) + ":" + ContactIdentity.external_id
    for (allowed, window), inbox_ids in by_limit.items():
        q = (select(ContactIdentity.id)
             .join(Delivery, (Delivery.ordering_key == key) & (Delivery.created_at >= ContactIdentity.last_inbound_at))
             .where(ContactIdentity.inbox_id.in_(inbox_ids), ContactIdentity.last_inbound_at > now - window,
                    Delivery.kind.in_(COUNTED_KINDS), Delivery.status.not_in(("failed", "cancelled")))
             .group_by(ContactIdentity.id).having(func.count(Delivery.id) >= allowed))
        if identity_ids is not None:
            q = q.where(ContactIdentity.id.in_(list(identity_ids)))
        found.update((await session.scalars(q)).all())
    return frozenset(found)


def counted_limits(channels: ChannelRules, inboxes: Sequence[Any]) -> dict[int, tuple[int, timedelta]]:
    """{inbox id: (messages allowed, window)} of the inboxes whose channel counts messages per reply window."""
    out = {}
    for inbox in inboxes:
        caps = channels.capabilities(inbox.channel_type)
        if caps is not None and caps.max_replies_in_window and caps.reply_window is not None:
            out[inbox.id] = (caps.max_replies_in_window, caps.reply_window)
    return out
