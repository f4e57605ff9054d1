"""Welcome messages answered with a WeCom code (微信客服 welcome_code via send_msg_on_event, 客户联系
WelcomeCode via send_welcome_msg), recorded as bot messages in the customer's conversation.

The welcome is an outgoing message in the thread, linked to its delivery (so the thread shows it
queued, sent or failed with WeCom's reason), and the delivery is keyed by the code: whatever pulls
the same event again, it is queued once. It does not count towards the 5-message allowance (the
code, not kf/send_msg, carries it).

The conversation is the customer's latest one that a message would continue; without one a new
conversation is opened for 微信客服 (the customer's first message joins it) and a resolved one for
客户联系 (that inbox has no chat to answer: the welcome is history on the contact, not a queue item).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select

from scrm import events as ev
from scrm.db.models import Contact, ContactIdentity, Conversation, Delivery, Inbox, utcnow
from scrm.domain import Choice, InboundMessage
from scrm.services.conversations.ingest import continuable, new_conversation
from scrm.services.outbox import enqueue_message
from scrm.services.uow import Tx

WELCOME_KIND = "wecom_code"  # not a counted kind (reply_limits): the code carries it


def welcome_key(code: str) -> str:
    """The delivery idempotency key of a welcome: one send per welcome code, whatever pulls it again."""
    return "wecom-welcome-" + hashlib.sha1(code.encode()).hexdigest()[:32]


async def already_queued(tx: Tx, code: str) -> bool:
    return await tx.session.scalar(select(Delivery.id).where(Delivery.idempotency_key == welcome_key(code))) is not None


async def _conversation(tx: Tx, inbox: Inbox, identity: ContactIdentity, *, open_new: bool) -> Conversation:
    latest = await tx.session.scalar(select(Conversation).where(Conversation.identity_id == identity.id)
                                     .order_by(Conversation.last_activity_at.desc(), Conversation.id.desc()).limit(1))
    conv = continuable(inbox, latest)
    if conv is not None:
        return conv
    contact = await tx.session.get(Contact, identity.contact_id)
    assert contact is not None
    now = utcnow()
    conv = new_conversation(inbox, identity, contact, InboundMessage(external_id="", sender_id=identity.external_id), now)
    if not open_new:
        conv.status, conv.handler, conv.resolved_at = "resolved", "human", now
    tx.session.add(conv)
    await tx.session.flush()
    tx.emit(ev.CONVERSATION_CREATED, conversation_id=conv.id, inbox_id=inbox.id, contact_id=contact.id)
    return conv


async def queue_welcome(tx: Tx, inbox: Inbox, identity: ContactIdentity, *, code: str, text: str,
                        op: dict[str, Any], choices: Sequence[Choice] = (), open_new: bool = True) -> Delivery:
    """The welcome as a bot message in the conversation and its delivery (keyed by the code), in `tx`."""
    conv = await _conversation(tx, inbox, identity, open_new=open_new)
    _, delivery = await enqueue_message(
        tx, inbox=inbox, conversation=conv, identity=identity, sender_kind="bot", text=text, choices=choices,
        metadata={"wecom": op}, automatic=True, payload={"wecom_welcome": op.get("scene") or "welcome"})
    delivery.kind = WELCOME_KIND
    delivery.idempotency_key = welcome_key(code)
    await tx.session.flush()
    return delivery
