"""Dry run of an automation rule: which recent conversations its conditions would have matched.

Nothing is changed and no action runs: each conversation is tested with an event of the rule's kind
built from what it holds (its latest customer message for message.created, its SLA breaches for
sla.*), read-only, in a session that is never committed.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from scrm import events as ev
from scrm.db.models import Contact, Conversation, Inbox, Message, Ticket
from scrm.db.models_desk import ConversationStats
from scrm.services.desk.automation import Conditions, RuleIn, matches
from scrm.services.uow import Tx

MAX_CONVERSATIONS = 200


async def _event_for(tx: Tx, rule: RuleIn, conv: Conversation, inbox: Inbox) -> ev.Event | None:
    """The event the rule would have seen on this conversation; None when it could not have happened."""
    data: dict[str, Any] = {"conversation_id": conv.id, "inbox_id": conv.inbox_id, "channel": inbox.channel_type,
                            "handler": conv.handler}
    if rule.event == "message.created":
        direction = rule.conditions.direction or "in"
        msg = await tx.session.scalar(select(Message).where(Message.conversation_id == conv.id,
                                                            Message.direction == direction, Message.private.is_(False))
                                      .order_by(Message.id.desc()).limit(1))
        if msg is None:
            return None
        data |= {"message_id": msg.id, "direction": msg.direction, "sender_kind": msg.sender_kind}
    elif rule.event.startswith("sla."):
        stats = await tx.session.get(ConversationStats, conv.id)
        kinds = list(stats.breached or []) if stats else []
        if rule.event == "sla.warning" and stats:
            kinds = list(stats.warned or [])
        if not kinds:
            return None
        data["kind"] = kinds[0]
    elif rule.event.startswith("ticket."):
        ticket = await tx.session.scalar(select(Ticket.id).where(Ticket.conversation_id == conv.id).limit(1))
        if ticket is None:
            return None
        data["ticket_id"] = ticket
    elif rule.event == "conversation.status_changed":
        data |= {"status": conv.status}
    elif rule.event == "conversation.assigned":
        if conv.assignee_id is None:
            return None
        data["assignee_id"] = conv.assignee_id
    return ev.Event(rule.event, data)


async def dry_run(tx: Tx, rule: RuleIn, limit: int = 50) -> dict[str, Any]:
    """Test the rule's conditions on the `limit` most recently active conversations."""
    limit = max(1, min(limit, MAX_CONVERSATIONS))
    rows = (await tx.session.execute(
        select(Conversation, Inbox, Contact.name).join(Inbox, Inbox.id == Conversation.inbox_id)
        .join(Contact, Contact.id == Conversation.contact_id)
        .order_by(Conversation.last_activity_at.desc(), Conversation.id.desc()).limit(limit))).all()
    cond = Conditions.model_validate(rule.conditions.model_dump(exclude_none=True))
    results = []
    for conv, inbox, contact in rows:
        event = await _event_for(tx, rule, conv, inbox)
        matched = event is not None and await matches(tx, cond, event, conv, inbox)
        results.append({"conversation_id": conv.id, "contact": contact, "inbox": inbox.name,
                        "channel": inbox.channel_type, "status": conv.status, "priority": conv.priority,
                        "preview": conv.last_message_preview, "last_activity_at": conv.last_activity_at.isoformat(),
                        "applicable": event is not None, "matched": bool(matched)})
    return {"tested": len(results), "matched": sum(r["matched"] for r in results),
            "actions": [a.model_dump() for a in rule.actions], "conversations": results}
