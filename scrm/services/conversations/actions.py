"""Agent verbs on conversations: reply, note, assign, status, handler (take over / hand back), labels.

`do_*` functions mutate inside a transaction; they validate first and raise ConversationError
with a message for the agent.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select

from scrm import events as ev
from scrm.db.models import (
    Agent,
    ContactIdentity,
    Conversation,
    ConversationLabel,
    Delivery,
    Inbox,
    Message,
    utcnow,
)
from scrm.domain import Choice
from scrm.event_batch import read_again_written
from scrm.services.agents import audit, preferences
from scrm.services.agents.inbox_access import agent_sees_inbox
from scrm.services.conversations.reply_limits import with_reply_count
from scrm.services.conversations.turns import wait_turn
from scrm.services.desk import notifications
from scrm.services.outbox import batch_message_id, batch_rows, enqueue_message
from scrm.services.uow import Tx

if TYPE_CHECKING:
    from scrm.context import ChannelRules

STATUSES = ("open", "pending", "snoozed", "resolved")
HANDLERS = ("bot", "queue", "human")
PRIORITIES = ("low", "normal", "high", "urgent")

HANDLER_NOTES = {
    ("bot", "queue"): "已转人工，等待客服接入 / Handed over to the queue",
    ("queue", "human"): "{agent} 已接入会话 / {agent} took over",
    ("bot", "human"): "{agent} 已接管会话（机器人停止回复） / {agent} took over from the bot",
    ("human", "bot"): "{agent} 已将会话交还机器人 / {agent} handed the conversation back to the bot",
    ("queue", "bot"): "会话已交还机器人 / Handed back to the bot",
    ("human", "queue"): "{agent} 已将会话放回队列 / {agent} put the conversation back in the queue",
}


class ConversationError(ValueError):
    """The requested change is not possible; `status` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 409, code: str = "conflict") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


async def load(tx: Tx, conversation_id: int, *, lock: bool = True) -> tuple[Conversation, Inbox, ContactIdentity]:
    """The conversation with its inbox and identity; `lock`: this transaction's turn on it and its row,
    read again (a status or handler change must not cross a message being stored; what was read
    before the lock may be stale, since ingest takes no turn)."""
    conv: Conversation | None = None
    if lock:
        await wait_turn(tx, (conversation_id,))
        # In a consumer's batch with changes of it held back (a bot's reply before its handoff): written
        # and read again in one statement.
        conv = await read_again_written(tx.session, conversation_id)
    if conv is None:
        conv = await tx.session.get(Conversation, conversation_id,
                                    with_for_update={"key_share": True} if lock else None, populate_existing=lock)
    if conv is None:
        raise ConversationError("conversation not found", 404, "not_found")
    inbox = await tx.session.get(Inbox, conv.inbox_id)
    identity = await tx.session.get(ContactIdentity, conv.identity_id)
    assert inbox is not None and identity is not None
    return conv, inbox, identity


def reply_window(inbox: Inbox, identity: ContactIdentity, channels: ChannelRules,
                 now: datetime | None = None) -> dict[str, Any]:
    """Whether a reply can reach the contact now, and until when (WeChat's 48-hour window)."""
    now = now or utcnow()
    caps = channels.capabilities(inbox.channel_type)
    if caps is None:
        return {"open": False, "reason": f"channel {inbox.channel_type!r} is not available in this build"}
    if not inbox.active:
        return {"open": False, "reason": "inbox is disabled"}
    if not identity.subscribed:
        return {"open": False, "reason": "contact unsubscribed from this channel"}
    if not identity.reachable:
        return {"open": False, "reason": f"contact unreachable: {identity.unreachable_reason or 'blocked'}"}
    blocked = channels.reply_blocked(inbox.channel_type, identity.attributes or {}, identity.last_inbound_at)
    if blocked:
        return {"open": False, "reason": blocked}
    if caps.reply_window is None:
        return {"open": True, "closes_at": None}
    if identity.last_inbound_at is None:
        return {"open": False, "reason": "the contact has not written yet; the channel allows replies only after that"}
    closes = identity.last_inbound_at + caps.reply_window
    if closes <= now:
        hours = int(caps.reply_window.total_seconds() // 3600)
        return {"open": False, "closes_at": closes.isoformat(),
                "reason": f"reply window closed: the channel allows replies only within {hours} h of the contact's last message"}
    return {"open": True, "closes_at": closes.isoformat()}


async def reply_window_counted(tx: Tx, inbox: Inbox, identity: ContactIdentity) -> dict[str, Any]:
    """reply_window with the channel's message count per window (WeCom 微信客服: 5 within 48 h): what any
    message queued now must pass, or the platform would refuse it."""
    return await with_reply_count(tx.session, inbox, identity, reply_window(inbox, identity, tx.channels), tx.channels)


async def allowance_used_up(tx: Tx, conv: Conversation, inbox: Inbox, identity: ContactIdentity) -> bool:
    """For an automatic message inside the reply window (the bot's answer): True when the channel's message
    count per window is used up (WeCom 微信客服: 5 within 48 h of the customer's last message; WeCom
    would refuse it with 95001), after a note that tells the agents why the answer was not sent."""
    caps = tx.channels.capabilities(inbox.channel_type)
    if caps is None or not caps.max_replies_in_window:
        return False  # channels without a count: no query
    window = await reply_window_counted(tx, inbox, identity)  # counts what this transaction queued too
    if window["open"] or window.get("code") != "reply_limit":
        return False
    await add_system_note(tx, conv, f"机器人回复未发送 / bot answer not sent: {window['reason']}")
    return True


async def do_reply(
    tx: Tx, conversation_id: int, agent_id: int, text: str | None, *,
    attachments: Sequence[dict[str, Any]] = (), choices: Sequence[Choice] = (),
) -> tuple[Message, Delivery]:
    """An agent's reply: stored and queued in the outbox (refused if it cannot reach the contact)."""
    if not (text and text.strip()) and not attachments:
        raise ConversationError("reply text is empty", 400, "empty_reply")
    conv, inbox, identity = await load(tx, conversation_id)
    window = await reply_window_counted(tx, inbox, identity)
    if not window["open"]:
        raise ConversationError(window["reason"], 409, "reply_window_closed")
    last_in = await tx.session.scalar(
        select(Message).where(Message.conversation_id == conv.id, Message.direction == "in")
        .order_by(Message.id.desc()).limit(1)
    )
    metadata = {"subject": conv.subject} if conv.subject else {}
    text = await preferences.with_signature(tx, agent_id, inbox, text)
    message, delivery = await enqueue_message(
        tx, inbox=inbox, conversation=conv, identity=identity, sender_kind="agent", agent_id=agent_id,
        text=text, attachments=attachments, choices=choices, metadata=metadata, reply_to=last_in,
    )
    if conv.handler == "bot":
        # An agent who replies takes the conversation: the bot must never talk over a human.
        await _change_handler(tx, conv, "human", agent_id)
    if conv.assignee_id is None:
        conv.assignee_id = agent_id
        tx.emit(ev.CONVERSATION_ASSIGNED, conversation_id=conv.id, assignee_id=agent_id, by=agent_id)
    audit.record(tx, agent_id, "conversation.reply", "conversation", conv.id, message_id=message.id)
    return message, delivery


async def do_note(tx: Tx, conversation_id: int, agent_id: int, text: str) -> Message:
    """A private note: visible to agents only, never sent to the customer."""
    if not text or not text.strip():
        raise ConversationError("note text is empty", 400, "empty_note")
    conv, inbox, _ = await load(tx, conversation_id)
    msg = Message(conversation_id=conv.id, inbox_id=inbox.id, direction="out", sender_kind="agent",
                  sender_agent_id=agent_id, content_type="text", text=text, private=True, attachments=[],
                  payload={}, edit_history=[], created_at=utcnow())
    tx.session.add(msg)
    await tx.session.flush()
    tx.emit(ev.MESSAGE_CREATED, message_id=msg.id, conversation_id=conv.id, inbox_id=inbox.id, direction="out",
            sender_kind="agent", private=True, handler=conv.handler, channel=inbox.channel_type)
    await notifications.record_mentions(tx, msg, conv, agent_id)  # @name: in the note's own transaction
    audit.record(tx, agent_id, "conversation.note", "conversation", conv.id, message_id=msg.id)
    return msg


async def add_system_note(tx: Tx, conv: Conversation, text: str, **payload: Any) -> int:
    """A system note in the thread (handoffs, status changes by the bot); returns its id."""
    # In a consumer's batch (a handoff by the bot) its id comes from the batch's chunk of the sequence and it is
    # a plain row inserted with the batch's other messages (outbox.BatchRows, the same columns as the bot's
    # replies, so one INSERT takes both): no ORM object flushed on its own.
    message_id = await batch_message_id(tx)
    values: dict[str, Any] = {
        "id": message_id, "conversation_id": conv.id, "inbox_id": conv.inbox_id, "direction": "out",
        "sender_kind": "system", "sender_agent_id": None, "content_type": "event", "text": text, "attachments": [],
        "reply_to_id": None, "delivery_status": None, "private": True, "payload": payload, "created_at": utcnow(),
        "edit_history": []}
    rows = batch_rows(tx) if message_id is not None else None
    if rows is not None:
        rows.add("messages", values)
    else:
        msg = Message(**values)
        tx.session.add(msg)
        if msg.id is None:
            await tx.session.flush()
        message_id = msg.id
    tx.emit(ev.MESSAGE_CREATED, message_id=message_id, conversation_id=conv.id, inbox_id=conv.inbox_id,
            direction="out", sender_kind="system", private=True, handler=conv.handler)
    assert message_id is not None
    return message_id


async def _agent_name(tx: Tx, agent_id: int | None) -> str:
    if agent_id is None:
        return "系统 / System"
    agent = await tx.session.get(Agent, agent_id)
    return agent.display_name if agent else f"#{agent_id}"


async def _change_handler(tx: Tx, conv: Conversation, handler: str, agent_id: int | None, reason: str | None = None) -> None:
    previous = conv.handler
    if previous == handler:
        return
    conv.handler = handler
    if handler == "queue" and conv.waiting_since is None:
        conv.waiting_since = utcnow()
    template = HANDLER_NOTES.get((previous, handler), "{previous} → {handler}")
    note = template.format(agent=await _agent_name(tx, agent_id), previous=previous, handler=handler)
    if reason:
        note += f"（{reason}）"
    await add_system_note(tx, conv, note, handoff={"from": previous, "to": handler, "agent_id": agent_id})
    tx.emit(ev.CONVERSATION_HANDLER_CHANGED, conversation_id=conv.id, handler=handler, previous=previous,
            agent_id=agent_id, inbox_id=conv.inbox_id)
    # What moved: screens re-read the conversation; the desk re-picks an SLA only on a priority change, so
    # this one is pushed live, not logged (the handoff's bookkeeping works conversation.handler_changed).
    tx.emit(ev.CONVERSATION_UPDATED, conversation_id=conv.id, inbox_id=conv.inbox_id, changed=["handler"])


async def do_set_handler(tx: Tx, conversation_id: int, agent_id: int | None, handler: str, reason: str | None = None) -> Conversation:
    """Take over (human), hand back to the bot, or put in the queue."""
    if handler not in HANDLERS:
        raise ConversationError(f"handler must be one of {', '.join(HANDLERS)}", 400, "bad_handler")
    conv, _, _ = await load(tx, conversation_id)
    await _change_handler(tx, conv, handler, agent_id, reason)
    if handler == "human" and agent_id is not None and conv.assignee_id != agent_id:
        conv.assignee_id = agent_id
        tx.emit(ev.CONVERSATION_ASSIGNED, conversation_id=conv.id, assignee_id=agent_id, by=agent_id)
    if handler == "bot":
        conv.bot_state = {}  # the bot starts fresh; it must not resume a flow from before the human
    audit.record(tx, agent_id, "conversation.handler", "conversation", conv.id, handler=handler)
    return conv


async def do_assign(tx: Tx, conversation_id: int, by_agent_id: int, assignee_id: int | None) -> Conversation:
    conv, _, _ = await load(tx, conversation_id)
    if assignee_id is not None:
        assignee = await tx.session.get(Agent, assignee_id)
        if assignee is None or not assignee.active:
            raise ConversationError("assignee is not an active agent", 400, "bad_assignee")
        if not await agent_sees_inbox(tx.session, assignee.id, assignee.role, conv.inbox_id):
            raise ConversationError("this agent is not a member of the conversation's inbox", 400, "not_inbox_member")
    conv.assignee_id = assignee_id
    tx.emit(ev.CONVERSATION_ASSIGNED, conversation_id=conv.id, assignee_id=assignee_id, inbox_id=conv.inbox_id,
            by=by_agent_id)
    tx.emit(ev.CONVERSATION_UPDATED, conversation_id=conv.id, inbox_id=conv.inbox_id)
    audit.record(tx, by_agent_id, "conversation.assign", "conversation", conv.id, assignee_id=assignee_id)
    return conv


async def do_set_status(
    tx: Tx, conversation_id: int, agent_id: int | None, status: str, snoozed_until: datetime | None = None
) -> Conversation:
    if status not in STATUSES:
        raise ConversationError(f"status must be one of {', '.join(STATUSES)}", 400, "bad_status")
    conv, _, _ = await load(tx, conversation_id)
    previous = conv.status
    now = utcnow()
    if status == "snoozed":
        snoozed_until = snoozed_until or now + timedelta(hours=24)
        if snoozed_until <= now:
            raise ConversationError("snooze time must be in the future", 400, "bad_snooze")
        conv.snoozed_until = snoozed_until
    else:
        conv.snoozed_until = None
    conv.status = status
    if status == "resolved":
        conv.resolved_at = now
        conv.waiting_since = None
        conv.unread_count = 0
    if previous != status:
        tx.emit(ev.CONVERSATION_STATUS_CHANGED, conversation_id=conv.id, status=status, previous=previous,
                by="agent", agent_id=agent_id, inbox_id=conv.inbox_id)
        tx.emit(ev.CONVERSATION_UPDATED, conversation_id=conv.id, inbox_id=conv.inbox_id)
    audit.record(tx, agent_id, "conversation.status", "conversation", conv.id, status=status, previous=previous)
    return conv


async def do_update(
    tx: Tx, conversation_id: int, agent_id: int, *, priority: str | None = None, labels: Sequence[str] | None = None
) -> Conversation:
    conv, _, _ = await load(tx, conversation_id)
    if priority is not None:
        if priority not in PRIORITIES:
            raise ConversationError(f"priority must be one of {', '.join(PRIORITIES)}", 400, "bad_priority")
        conv.priority = priority
    if labels is not None:
        clean = sorted({label.strip() for label in labels if label and label.strip()})
        if any(len(label) > 64 for label in clean):
            raise ConversationError("labels are at most 64 characters", 400, "bad_label")
        await tx.session.execute(delete(ConversationLabel).where(ConversationLabel.conversation_id == conv.id))
        tx.session.add_all(ConversationLabel(conversation_id=conv.id, label=label) for label in clean)
    tx.emit(ev.CONVERSATION_UPDATED, conversation_id=conv.id, inbox_id=conv.inbox_id)
    audit.record(tx, agent_id, "conversation.update", "conversation", conv.id, priority=priority,
                 labels=list(labels) if labels is not None else None)
    return conv


async def do_mark_read(tx: Tx, conversation_id: int) -> None:
    conv, _, _ = await load(tx, conversation_id)
    if conv.unread_count:
        conv.unread_count = 0
        tx.emit(ev.CONVERSATION_UPDATED, conversation_id=conv.id, inbox_id=conv.inbox_id)


async def do_retry_delivery(tx: Tx, message_id: int, agent_id: int) -> Delivery:
    """Queue a failed outbound message again (the retry button)."""
    delivery = await tx.session.scalar(
        select(Delivery).where(Delivery.message_id == message_id).order_by(Delivery.id.desc()).limit(1)
    )
    if delivery is None:
        raise ConversationError("message has no delivery", 404, "not_found")
    if delivery.status != "failed":
        raise ConversationError(f"only failed deliveries can be retried (this one is {delivery.status})", 409, "not_failed")
    wecom_op = ((delivery.payload or {}).get("metadata") or {}).get("wecom")
    if isinstance(wecom_op, dict) and wecom_op.get("op") == "event_code":
        raise ConversationError("this message was sent with a WeCom event code (welcome or closing), which works "
                                "once and for 20 s: it cannot be sent again", 409, "code_single_use")
    conv, inbox, identity = await load(tx, delivery.conversation_id) if delivery.conversation_id else (None, None, None)
    if inbox is not None and identity is not None:
        window = await reply_window_counted(tx, inbox, identity)
        if not window["open"]:
            raise ConversationError(window["reason"], 409, "reply_window_closed")
    delivery.status = "queued"
    delivery.attempts = 0
    delivery.next_attempt_at = utcnow()
    delivery.claimed_by = None
    delivery.last_error = None
    message = await tx.session.get(Message, message_id)
    if message is not None:
        message.delivery_status = "queued"
        message.delivery_error = None
        tx.emit(ev.MESSAGE_UPDATED, message_id=message.id, conversation_id=message.conversation_id, delivery_status="queued")
    tx.emit(ev.OUTBOX_ENQUEUED, inbox_id=delivery.inbox_id)
    audit.record(tx, agent_id, "message.retry", "message", message_id)
    return delivery
