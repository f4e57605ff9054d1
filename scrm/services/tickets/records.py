"""Tickets: opened by the bot's ticket flow, by an agent from a conversation, or by automation rules.

The number customers see is 1000 + the row id: unique without a sequence table and without the
race of max(number) + 1 between concurrent transactions.
"""

from __future__ import annotations

import uuid
from typing import Any

from scrm import events as ev
from scrm.db.models import Conversation, Ticket
from scrm.services.uow import Tx

NUMBER_OFFSET = 1000
PRIORITIES = ("low", "normal", "high", "urgent")


class TicketError(ValueError):
    """The ticket cannot be opened; `status` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400, code: str = "invalid_ticket") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


async def create_ticket(
    tx: Tx, *, subject: str, contact_id: int, conversation_id: int | None = None, description: str | None = None,
    priority: str = "normal", fields: dict[str, Any] | None = None, assignee_id: int | None = None,
    inbox_id: int | None = None, opened_by: str = "agent",
) -> Ticket:
    """Store a new ticket, give it its number and emit ticket.opened."""
    subject = " ".join((subject or "").split())[:255]
    if not subject:
        raise TicketError("ticket subject is empty", 400, "empty_subject")
    if priority not in PRIORITIES:
        raise TicketError(f"priority must be one of {', '.join(PRIORITIES)}", 400, "bad_priority")
    # A temporary unique negative number until the id is known (number is NOT NULL UNIQUE).
    ticket = Ticket(number=-(uuid.uuid4().int >> 80), subject=subject, description=description, status="new",
                    priority=priority, conversation_id=conversation_id, contact_id=contact_id,
                    assignee_id=assignee_id, fields=dict(fields or {}))
    tx.session.add(ticket)
    await tx.session.flush()
    ticket.number = NUMBER_OFFSET + ticket.id
    await tx.session.flush()
    tx.emit(ev.TICKET_OPENED, ticket_id=ticket.id, number=ticket.number, conversation_id=conversation_id,
            contact_id=contact_id, inbox_id=inbox_id, opened_by=opened_by)
    return ticket


async def open_from_conversation(
    tx: Tx, conversation_id: int, agent_id: int | None, *, subject: str | None = None,
    description: str | None = None, priority: str | None = None, fields: dict[str, Any] | None = None,
) -> Ticket:
    """Open a ticket for a conversation's contact (agent action or automation rule)."""
    conv = await tx.session.get(Conversation, conversation_id)
    if conv is None:
        raise TicketError("conversation not found", 404, "not_found")
    return await create_ticket(
        tx, subject=subject or conv.subject or conv.last_message_preview or f"Conversation {conv.id}",
        description=description, priority=priority or conv.priority, contact_id=conv.contact_id,
        conversation_id=conv.id, fields=fields, inbox_id=conv.inbox_id, assignee_id=agent_id,
        opened_by="agent" if agent_id else "automation",
    )


def ticket_number_text(number: int) -> str:
    """How a ticket number is shown to customers."""
    return f"#{number}"
