"""Opt-out keywords and broadcast replies: on an inbound message, unsubscribe + confirm, or link the reply.

Runs before the bot; the bot skips messages for which `is_opt_out_keyword` is true.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from scrm import events as ev
from scrm.db.models import ContactIdentity, Conversation, Inbox, Message
from scrm.services.marketing.optout import (
    CONFIRMATION,
    awaiting_reply,
    is_opt_out_keyword,
    link_reply,
    opt_out,
)
from scrm.services.outbox import enqueue_message
from scrm.services.uow import unit_of_work

if TYPE_CHECKING:
    from scrm.context import AppContext

log = logging.getLogger("scrm.listeners.optout")


def install(ctx: AppContext) -> list[Callable[[], None]]:
    """Subscribe to inbound message.created."""

    async def on_message(event: ev.Event) -> None:
        data = event.data
        if data.get("direction") != "in" or data.get("auto_submitted"):
            return
        async with ctx.db.session() as s:  # read first: almost every message is neither an opt-out nor a broadcast reply
            # By primary key: in the event log consumer's batch both rows are in the session already.
            message = await s.get(Message, data["message_id"])
            conv = await s.get(Conversation, message.conversation_id) if message is not None else None
            if message is None or conv is None:
                return
            keyword = is_opt_out_keyword(message.text)
            if not keyword and not await awaiting_reply(s, conv.contact_id, data["inbox_id"]):
                return
        async with unit_of_work(ctx) as tx:
            message = await tx.session.get(Message, data["message_id"])
            conv = await tx.session.get(Conversation, message.conversation_id) if message is not None else None
            if message is None or conv is None:
                return
            if not keyword:
                await link_reply(tx, conv.contact_id, message.inbox_id)
                return
            inbox = await tx.session.get(Inbox, message.inbox_id)
            identity = await tx.session.get(ContactIdentity, conv.identity_id)
            assert inbox is not None and identity is not None
            if not await opt_out(tx, conv.contact_id, inbox.channel_type, via=f"message:{message.id}"):
                return
            await enqueue_message(tx, inbox=inbox, conversation=conv, identity=identity, sender_kind="system",
                                  text=CONFIRMATION, automatic=True)
            tx.emit(ev.CONTACT_UPDATED, contact_id=conv.contact_id, change="opt_out")
        log.info("contact %s opted out of broadcasts on %s", conv.contact_id, inbox.channel_type)

    return [ctx.bus.subscribe(on_message, ev.MESSAGE_CREATED)]
