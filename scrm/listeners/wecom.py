"""The WeCom listener: mirrors handoffs and resolutions of 微信客服 conversations to WeCom's session state,
and notes a refused change; links Official Account followers by UnionID when they first appear; pushes
label changes of external contacts to their corp tags."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from sqlalchemy import select

from scrm import event_interest as interest
from scrm import events as ev
from scrm.db.models import Conversation
from scrm.services.wecom import session as wecom_session
from scrm.services.wecom.welcome import WELCOME_KIND

if TYPE_CHECKING:
    from scrm.context import AppContext

log = logging.getLogger("scrm.listeners.wecom")


def install(ctx: AppContext) -> list[Callable[[], None]]:
    """Subscribe to conversation changes (per conversation, in order) and state-change outcomes."""

    async def is_kf(inbox_id: object, conversation_id: int) -> bool:
        if not isinstance(inbox_id, int):  # a reopen by the customer does not say: one read to know
            async with ctx.db.session() as s:
                inbox_id = await s.scalar(select(Conversation.inbox_id).where(Conversation.id == conversation_id))
            if inbox_id is None:
                return False
        inbox = await ctx.adapters.inbox(int(inbox_id))  # type: ignore[call-overload]
        return inbox is not None and inbox.channel_type == "wecom_kf"

    async def on_conversation(event: ev.Event) -> None:
        cid = event.data.get("conversation_id")
        if isinstance(cid, int) and await is_kf(event.data.get("inbox_id"), cid):
            by = event.data.get("by")
            await wecom_session.mirror_at_batch_end(ctx, cid, by=by if isinstance(by, str) else None)

    async def on_delivery(event: ev.Event) -> None:
        if event.data.get("kind") == WELCOME_KIND and event.data.get("status") == "failed":
            await wecom_session.on_code_failed(ctx, int(event.data["delivery_id"]))
        elif event.data.get("kind") == "wecom_state" and event.data.get("status") == "failed":
            await wecom_session.on_state_failed(ctx, int(event.data["delivery_id"]))
        elif event.data.get("kind") == "wecom_state" and event.data.get("status") == "sent":
            await wecom_session.on_state_sent(ctx, int(event.data["delivery_id"]))

    async def on_agent_message(event: ev.Event) -> None:
        cid, mid = event.data.get("conversation_id"), event.data.get("message_id")
        if isinstance(cid, int) and isinstance(mid, int):
            await wecom_session.reply_code_taken(ctx, cid, mid)

    async def on_contact(event: ev.Event) -> None:
        contact_id = event.data.get("contact_id")
        if not isinstance(contact_id, int):
            return
        # Most installs have neither kind of inbox: a cached look saves a session and query per contact.
        if event.data.get("created"):
            if not any((i.settings or {}).get("link_unionid") for i in await ctx.adapters.active("wechat_oa")):
                return
            from scrm.services.wecom.oa import fetch_follower_unionids

            await fetch_follower_unionids(ctx, contact_id)
        elif event.data.get("change") in (None, "tag", "merged"):
            if not await ctx.adapters.active("wecom_contacts"):
                return
            from scrm.services.wecom.contacts import push_labels  # labels -> corp tags (no-op without WeCom)

            await push_labels(ctx, contact_id)

    names = (ev.CONVERSATION_CREATED, ev.CONVERSATION_HANDLER_CHANGED, ev.CONVERSATION_STATUS_CHANGED)
    subs = [ctx.bus.subscribe(on_conversation, name) for name in names]
    subs.append(ctx.bus.subscribe(on_delivery, ev.DELIVERY_UPDATED, wants=interest.wecom_state))
    # Any message the API sends in 人工 takes the one reply its code allows (an agent's, an automation's,
    # a ticket notice): the next is refused before it is queued (reply_blocked), not by WeCom. A message
    # queued while the bot or the queue had the conversation takes no code: a message carries the code its
    # identity had when it was queued, and there is one only in 人工 (3), which the session leaves when the
    # conversation goes to the bot (1) or the queue (2). So the bot's answers, most of a 微信客服 inbox's
    # messages, cost this listener nothing (it read three rows and locked one per answer).
    subs.append(ctx.bus.subscribe(on_agent_message, ev.MESSAGE_CREATED, wants=interest.wecom_kf_reply))
    # WeCom / OA API calls: after the consumer's commit, not inside its transaction.
    subs.append(ctx.bus.subscribe(on_contact, ev.CONTACT_UPDATED, after_commit=True, wants=lambda e: bool(e.data.get("created")) or (
        e.data.get("change") in (None, "tag", "merged") and "imported" not in e.data)))
    return subs
