"""Agent-started conversations: an agent writes first, where the channel allows a business to.

- e-mail: to the contact's address (a new thread each time, with its own subject);
- Telegram: only to a chat that already wrote to the bot (a bot cannot open a chat with a user);
- WeChat Official Accounts: only inside the 48-hour customer-service window after the contact's
  last message;
- the HTTP API and the demo's memory channel: to a known sender.
Other channels refuse with the reason.
"""

from __future__ import annotations

from sqlalchemy import select

from scrm import events as ev
from scrm.db.models import Contact, ContactIdentity, Conversation, Inbox, Message, utcnow
from scrm.services.agents import audit
from scrm.services.conversations import actions as conv_svc
from scrm.services.conversations.actions import ConversationError
from scrm.services.uow import Tx

STARTABLE = ("email", "telegram", "wechat_oa", "api", "memory")
NEEDS_KNOWN_CHAT = {"telegram": "the contact has never written to this bot; Telegram bots can only message "
                                "chats that started them"}


async def _identity(tx: Tx, contact: Contact, inbox: Inbox) -> ContactIdentity:
    identity = await tx.session.scalar(select(ContactIdentity).where(
        ContactIdentity.contact_id == contact.id, ContactIdentity.inbox_id == inbox.id).order_by(ContactIdentity.id))
    if identity is not None:
        return identity
    if inbox.channel_type == "email" and contact.email:
        identity = ContactIdentity(inbox_id=inbox.id, external_id=contact.email.strip().lower(), contact_id=contact.id,
                                   attributes={}, created_at=utcnow())
        tx.session.add(identity)
        await tx.session.flush()
        return identity
    if inbox.channel_type == "email":
        raise ConversationError("the contact has no e-mail address", 409, "no_address")
    reason = NEEDS_KNOWN_CHAT.get(inbox.channel_type, "the contact has never written to this inbox")
    raise ConversationError(reason, 409, "unknown_chat")


async def do_start_conversation(tx: Tx, agent_id: int, contact_id: int, inbox_id: int, text: str,
                                subject: str | None = None) -> tuple[Conversation, Message]:
    """Open (or continue) a conversation with the contact on the inbox and send the agent's first message."""
    if not text or not text.strip():
        raise ConversationError("message text is empty", 400, "empty_reply")
    contact = await tx.session.get(Contact, contact_id)
    if contact is None or contact.merged_into_id is not None:
        raise ConversationError("contact not found", 404, "not_found")
    inbox = await tx.session.get(Inbox, inbox_id)
    if inbox is None:
        raise ConversationError("inbox not found", 404, "not_found")
    if inbox.channel_type not in STARTABLE:
        raise ConversationError(f"a {inbox.channel_type} inbox cannot start conversations", 409, "cannot_start")
    identity = await _identity(tx, contact, inbox)
    window = await conv_svc.reply_window_counted(tx, inbox, identity)
    if not window["open"]:
        raise ConversationError(window["reason"], 409, "reply_window_closed")
    conv = None
    if inbox.channel_type != "email":  # chats continue the open conversation; mail starts a thread
        conv = await tx.session.scalar(select(Conversation).where(
            Conversation.identity_id == identity.id, Conversation.status != "resolved")
            .order_by(Conversation.id.desc()).limit(1))
    if conv is None:
        now = utcnow()
        conv = Conversation(inbox_id=inbox.id, contact_id=contact.id, identity_id=identity.id, status="open",
                            handler="human", assignee_id=agent_id, priority="normal",
                            subject=(subject or "").strip()[:500] or None, last_activity_at=now, created_at=now,
                            unread_count=0, bot_state={}, meta={"started_by_agent": agent_id})
        tx.session.add(conv)
        await tx.session.flush()
        tx.emit(ev.CONVERSATION_CREATED, conversation_id=conv.id, inbox_id=inbox.id, contact_id=contact.id,
                started_by_agent=agent_id)
    message, _ = await conv_svc.do_reply(tx, conv.id, agent_id, text)
    audit.record(tx, agent_id, "conversation.start", "conversation", conv.id, inbox_id=inbox.id, contact_id=contact.id)
    return conv, message
