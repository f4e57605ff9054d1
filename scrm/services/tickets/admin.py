"""Agent verbs on tickets beyond the state machine: assignee, priority, team and subject changes,
tickets opened from scratch, and merging a duplicate into the ticket that stays."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update

from scrm.db.models import Agent, Contact, Ticket, utcnow
from scrm.db.models_desk import Team, TicketComment
from scrm.services.agents import audit
from scrm.services.tickets import records as ticket_svc
from scrm.services.tickets.workflow import TICKET_UPDATED, TicketError
from scrm.services.uow import Tx

OPEN_STATES = ("new", "open", "pending")


async def _locked(tx: Tx, ticket_id: int) -> Ticket:
    ticket = await tx.session.get(Ticket, ticket_id, with_for_update=True, populate_existing=True)
    if ticket is None:
        raise TicketError("ticket not found", 404, "not_found")
    return ticket


async def _check_agent(tx: Tx, agent_id: int | None) -> None:
    if agent_id is None:
        return
    agent = await tx.session.get(Agent, agent_id)
    if agent is None or not agent.active or agent.role not in ("admin", "agent"):
        raise TicketError("assignee must be an active admin or agent", 400, "bad_assignee")


async def _check_team(tx: Tx, team_id: int | None) -> None:
    if team_id is not None and await tx.session.get(Team, team_id) is None:
        raise TicketError(f"no team {team_id}", 400, "bad_team")


async def do_update_ticket(tx: Tx, ticket_id: int, by: int | None, changes: dict[str, Any]) -> Ticket:
    """Change assignee_id, team_id, priority and/or subject (only the keys given)."""
    ticket = await _locked(tx, ticket_id)
    if ticket.merged_into_id is not None:
        raise TicketError(f"ticket was merged into ticket {ticket.merged_into_id}; change that one", 409, "merged")
    before: dict[str, Any] = {}
    if "assignee_id" in changes:
        await _check_agent(tx, changes["assignee_id"])
    if "team_id" in changes:
        await _check_team(tx, changes["team_id"])
    if "priority" in changes and changes["priority"] not in ticket_svc.PRIORITIES:
        raise TicketError(f"priority must be one of {', '.join(ticket_svc.PRIORITIES)}", 400, "bad_priority")
    if "subject" in changes:
        subject = " ".join((changes["subject"] or "").split())[:255]
        if not subject:
            raise TicketError("ticket subject is empty", 400, "empty_subject")
        changes = {**changes, "subject": subject}
    for key in ("assignee_id", "team_id", "priority", "subject"):
        if key in changes and getattr(ticket, key) != changes[key]:
            before[key] = getattr(ticket, key)
            setattr(ticket, key, changes[key])
    if not before:
        return ticket
    ticket.updated_at = utcnow()
    after = {k: getattr(ticket, k) for k in before}
    tx.emit(TICKET_UPDATED, ticket_id=ticket.id, number=ticket.number, conversation_id=ticket.conversation_id,
            agent_id=by, changed=sorted(before), **{k: v for k, v in after.items() if k != "subject"})
    audit.record(tx, by, "ticket.update", "ticket", ticket.id, before=before, after=after)
    return ticket


async def do_create_ticket(tx: Tx, by: int, *, subject: str, contact_id: int, description: str | None = None,
                           priority: str = "normal", assignee_id: int | None = None,
                           team_id: int | None = None) -> Ticket:
    """A ticket opened by an agent without a conversation (a phone call, a walk-in)."""
    if await tx.session.get(Contact, contact_id) is None:
        raise TicketError(f"no contact {contact_id}", 400, "bad_contact")
    await _check_agent(tx, assignee_id)
    await _check_team(tx, team_id)
    try:
        ticket = await ticket_svc.create_ticket(tx, subject=subject, contact_id=contact_id, description=description,
                                                priority=priority, assignee_id=assignee_id, opened_by="agent")
    except ticket_svc.TicketError as exc:
        raise TicketError(str(exc), exc.status, exc.code) from None
    ticket.team_id = team_id
    audit.record(tx, by, "ticket.open", "ticket", ticket.id, contact_id=contact_id)
    return ticket


async def do_merge(tx: Tx, source_id: int, target_id: int, by: int) -> Ticket:
    """Merge a duplicate (source) into the ticket that stays (target): comments move over, the source
    is closed and points at the target. Returns the target."""
    if source_id == target_id:
        raise TicketError("a ticket cannot be merged into itself", 400, "same_ticket")
    # Lock in id order so two opposite merges cannot deadlock.
    first, second = sorted((source_id, target_id))
    locked = {first: await _locked(tx, first), second: await _locked(tx, second)}
    source, target = locked[source_id], locked[target_id]
    if source.merged_into_id is not None:
        raise TicketError(f"ticket {source.number} was merged already", 409, "merged")
    if target.merged_into_id is not None:
        raise TicketError(f"ticket {target.number} was itself merged into another; merge into that one", 409, "merged")
    if target.status == "closed":
        raise TicketError("merge into an open ticket (the target is closed)", 409, "target_closed")
    if source.contact_id != target.contact_id:
        raise TicketError("only tickets of the same contact can be merged", 409, "other_contact")
    await tx.session.execute(update(TicketComment).where(TicketComment.ticket_id == source.id)
                             .values(ticket_id=target.id))
    now = utcnow()
    tx.session.add(TicketComment(ticket_id=target.id, agent_id=by, created_at=now,
                                 text=f"已合并工单 #{source.number}：{source.subject} / Merged ticket #{source.number}"
                                      + (f"\n{source.description}" if source.description else "")))
    previous = source.status
    source.merged_into_id = target.id
    source.status = "closed"
    source.fields = {**(source.fields or {}), "merged_into": target.number}
    source.updated_at = target.updated_at = now
    if target.conversation_id is None and source.conversation_id is not None:
        target.conversation_id = source.conversation_id
    await tx.session.flush()
    tx.emit(TICKET_UPDATED, ticket_id=source.id, number=source.number, status="closed", previous=previous,
            merged_into=target.id, conversation_id=source.conversation_id, agent_id=by)
    tx.emit(TICKET_UPDATED, ticket_id=target.id, number=target.number, merged_from=source.id,
            conversation_id=target.conversation_id, agent_id=by)
    audit.record(tx, by, "ticket.merge", "ticket", target.id, source_id=source.id, source_number=source.number)
    return target


async def duplicates_of(session: Any, ticket: Ticket, limit: int = 10) -> list[Ticket]:
    """Other open tickets of the same contact (merge candidates)."""
    return list((await session.scalars(
        select(Ticket).where(Ticket.contact_id == ticket.contact_id, Ticket.id != ticket.id,
                             Ticket.merged_into_id.is_(None), Ticket.status.in_(OPEN_STATES))
        .order_by(Ticket.id.desc()).limit(limit))).all())
