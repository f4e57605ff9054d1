"""What a consumer's batch reads, loaded once per table for all its events (set-based follow-up).

The listeners a batch calls (bot round, desk bookkeeping, notifications, opt-out) read the same rows
for every event: the message, its conversation, the conversation's contact, identity, inbox and desk
stats. Loaded here with one query per table into the shared session, their own `session.get` calls
are answered from the session's identity map instead of a statement each. The decisions stay in the
pure functions (bot_flows engine, FAQ matcher); their writes are flushed together at the commit.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from scrm import events as ev
from scrm.db.database import SharedTransaction
from scrm.db.models import Contact, ContactIdentity, Conversation, Inbox, Message
from scrm.db.models_desk import ConversationStats


def _ids(values: Any) -> list[int]:
    return sorted({v for v in values if isinstance(v, int) and not isinstance(v, bool)})


def _reads_conversation(event: ev.Event) -> bool:
    if event.name == ev.MESSAGE_CREATED:
        return event.data.get("direction") == "in"
    return event.name.startswith("conversation.") or event.name == ev.TICKET_OPENED


async def preload(shared: SharedTransaction, events: list[ev.Event]) -> None:
    """Load the batch's conversations (whose turns it holds) and what hangs off them into the session."""
    session = shared.session
    # Conversations with work that reads them: a customer's message, a change of the conversation. The
    # bot's and agents' own messages mostly move nothing (desk: an agent's reply, loaded on demand).
    conversation_ids = _ids(e.data.get("conversation_id") for e in events if _reads_conversation(e))
    if not conversation_ids:
        return
    # Fresh rows: the turn is ours now, but the rows may have changed since this session last saw them.
    fresh = {"populate_existing": True}
    conversations = list(await session.scalars(
        select(Conversation).where(Conversation.id.in_(conversation_ids)).execution_options(**fresh)))
    shared.loaded += conversations
    if message_ids := _ids(e.data.get("message_id") for e in events):
        shared.loaded += (await session.scalars(
            select(Message).where(Message.id.in_(message_ids)).execution_options(**fresh))).all()
    # Locked in conversation order, as ensure_stats would lock each one (sla.py skips the lock for these).
    for stats in await session.scalars(
        select(ConversationStats).where(ConversationStats.conversation_id.in_(conversation_ids))
        .order_by(ConversationStats.conversation_id).with_for_update().execution_options(**fresh)
    ):
        shared.locked.add(("desk_conversation_stats", stats.conversation_id))
        shared.loaded.append(stats)
    for model, key in ((Contact, "contact_id"), (ContactIdentity, "identity_id"), (Inbox, "inbox_id")):
        if ids := _ids(getattr(c, key) for c in conversations):
            shared.loaded += (await session.scalars(select(model).where(model.id.in_(ids)))).all()
