"""Ticket endpoints: the filtered list, one ticket with its SLA clocks and customer, opening one from a
conversation or from scratch, assignee / team / priority / subject changes, and merging duplicates."""

from __future__ import annotations

from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from scrm.db.models import Agent, Contact, Conversation, Inbox, Ticket
from scrm.db.models_desk import Team
from scrm.serializers import conversation_json
from scrm.services.agents import audit, inbox_access
from scrm.services.agents.accounts import Principal
from scrm.services.tickets import admin as ticket_admin
from scrm.services.tickets import queries as ticket_queries
from scrm.services.tickets import records as ticket_svc
from scrm.services.tickets.workflow import TicketError
from scrm.services.uow import unit_of_work
from scrm.web.access import require_contact, require_conversation, require_ticket
from scrm.web.keys import CTX
from scrm.web.routing import SUPPORT, ApiError, api, ok, path_int, query_int

STATUSES = ticket_queries.STATUSES
Priority = Literal["low", "normal", "high", "urgent"]


def _json(t: Ticket) -> dict[str, Any]:
    return ticket_queries.ticket_row(t)


class TicketIn(BaseModel):
    subject: str | None = Field(None, max_length=255, description="default: the conversation's subject or preview")
    description: str | None = Field(None, max_length=20000)
    priority: str | None = Field(None, description="low | normal | high | urgent (default: the conversation's)")


class NewTicketIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    subject: str = Field(min_length=1, max_length=255)
    contact_id: int
    description: str | None = Field(None, max_length=20000)
    priority: Priority = "normal"
    assignee_id: int | None = None
    team_id: int | None = None


class TicketPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    assignee_id: int | None = None
    team_id: int | None = None
    priority: Priority | None = None
    subject: str | None = Field(None, min_length=1, max_length=255)


class MergeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    into_id: int = Field(description="the ticket that stays; this one is closed and points at it")


def _ticket_error(exc: TicketError | ticket_svc.TicketError) -> ApiError:
    return ApiError(exc.status, str(exc), exc.code)


LIST_QUERY = {
    "status": "comma list of new, open, pending, solved, closed; or active (new, open, pending) / done",
    "priority": "comma list of low, normal, high, urgent", "assignee": "me | none | an agent id",
    "team_id": "only this team's", "sla": "breached | due_soon (within 2 h)", "q": "subject text or ticket number",
    "contact_id": "only this contact's", "conversation_id": "only this conversation's",
    "before_id": "paging: tickets with a smaller id", "limit": "1-100 (default 25)"}


@api("GET", "/tickets", roles=SUPPORT, summary="List tickets, newest first, with filters", tag="tickets",
     query=LIST_QUERY)
async def list_tickets(request: web.Request, principal: Principal) -> web.Response:
    q = request.query
    ids = {name: query_int(request, name, 0, 1, 2**62) if q.get(name) else None
           for name in ("team_id", "contact_id", "conversation_id", "before_id")}
    f = ticket_queries.TicketFilter(status=q.get("status") or None, priority=q.get("priority") or None,
                                    assignee=q.get("assignee") or None, team_id=ids["team_id"], sla=q.get("sla") or None,
                                    q=q.get("q") or None, contact_id=ids["contact_id"],
                                    conversation_id=ids["conversation_id"])
    limit = query_int(request, "limit", 25, 1, 100)
    try:
        async with request.app[CTX].db.session() as s:
            items, cursor = await ticket_queries.list_tickets(s, f, principal.agent_id, before_id=ids["before_id"],
                                                              limit=limit,
                                                              visible=inbox_access.ticket_filter(principal))
    except ticket_queries.FilterError as exc:
        raise ApiError(400, str(exc), "bad_query") from None
    return ok({"items": items, "next_before_id": cursor})


@api("GET", "/tickets/{id}", roles=SUPPORT, tag="tickets",
     summary="One ticket with its customer, linked conversation, SLA clocks (business time) and merge candidates")
async def get_ticket(request: web.Request, principal: Principal) -> web.Response:
    await require_ticket(request, principal, path_int(request, "id"))
    async with request.app[CTX].db.session() as s:
        ticket = await s.get(Ticket, path_int(request, "id"))
        if ticket is None:
            raise ApiError(404, "ticket not found", "not_found")
        data = _json(ticket)
        contact = await s.get(Contact, ticket.contact_id)
        data["contact"] = ({"id": contact.id, "name": contact.name, "email": contact.email, "phone": contact.phone}
                           if contact else None)
        data["conversation"] = None
        if ticket.conversation_id:
            conv = await s.get(Conversation, ticket.conversation_id)
            if conv is not None:
                inbox = await s.get(Inbox, conv.inbox_id)
                assignee = await s.get(Agent, conv.assignee_id) if conv.assignee_id else None
                data["conversation"] = conversation_json(conv, contact=contact, inbox=inbox, assignee=assignee)
        data["sla"] = await ticket_queries.sla_clocks(s, ticket.conversation_id)
        dups = await ticket_admin.duplicates_of(s, ticket)
        if dups and (conds := inbox_access.ticket_filter(principal)):
            seen = set((await s.scalars(select(Ticket.id).where(Ticket.id.in_([t.id for t in dups]), *conds))).all())
            dups = [t for t in dups if t.id in seen]
        data["duplicates"] = [_json(t) for t in dups]
        team = await s.get(Team, ticket.team_id) if ticket.team_id else None
        data["team_name"] = team.name if team else None
    return ok(data)


@api("POST", "/conversations/{id}/tickets", roles=SUPPORT, body=TicketIn, tag="tickets",
     summary="Open a ticket from a conversation")
async def open_ticket(request: web.Request, principal: Principal, body: TicketIn) -> web.Response:
    await require_conversation(request, principal, path_int(request, "id"))
    try:
        async with unit_of_work(request.app[CTX]) as tx:
            ticket = await ticket_svc.open_from_conversation(
                tx, path_int(request, "id"), principal.agent_id, subject=body.subject,
                description=body.description, priority=body.priority)
            audit.record(tx, principal.agent_id, "ticket.open", "ticket", ticket.id,
                         conversation_id=ticket.conversation_id)
    except ticket_svc.TicketError as exc:
        raise _ticket_error(exc) from None
    return ok(_json(ticket), 201)


@api("POST", "/tickets", roles=SUPPORT, body=NewTicketIn, tag="tickets",
     summary="Open a ticket from scratch for a contact (no conversation: a call, a walk-in)")
async def create_ticket(request: web.Request, principal: Principal, body: NewTicketIn) -> web.Response:
    await require_contact(request, principal, body.contact_id)
    try:
        async with unit_of_work(request.app[CTX]) as tx:
            ticket = await ticket_admin.do_create_ticket(
                tx, principal.agent_id, subject=body.subject, contact_id=body.contact_id, description=body.description,
                priority=body.priority, assignee_id=body.assignee_id, team_id=body.team_id)
    except TicketError as exc:
        raise _ticket_error(exc) from None
    return ok(_json(ticket), 201)


@api("PATCH", "/tickets/{id}", roles=SUPPORT, body=TicketPatch, tag="tickets",
     summary="Change a ticket's assignee, team, priority or subject (only the fields sent; null unassigns)")
async def update_ticket(request: web.Request, principal: Principal, body: TicketPatch) -> web.Response:
    changes = body.model_dump(include=body.model_fields_set)
    if "priority" in changes and changes["priority"] is None:
        raise ApiError(400, "priority cannot be null", "bad_priority")
    tid = path_int(request, "id")
    await require_ticket(request, principal, tid)
    if changes.get("assignee_id") is not None:
        await _check_assignee(request, tid, changes["assignee_id"])
    try:
        async with unit_of_work(request.app[CTX]) as tx:
            ticket = await ticket_admin.do_update_ticket(tx, path_int(request, "id"), principal.agent_id, changes)
            data = _json(ticket)
    except TicketError as exc:
        raise _ticket_error(exc) from None
    return ok(data)


@api("POST", "/tickets/{id}/merge", roles=SUPPORT, body=MergeIn, tag="tickets",
     summary="Merge this duplicate into another ticket of the same contact (comments move; this one closes)")
async def merge_ticket(request: web.Request, principal: Principal, body: MergeIn) -> web.Response:
    await require_ticket(request, principal, path_int(request, "id"))
    await require_ticket(request, principal, body.into_id)
    try:
        async with unit_of_work(request.app[CTX]) as tx:
            target = await ticket_admin.do_merge(tx, path_int(request, "id"), body.into_id, principal.agent_id)
            data = _json(target)
    except TicketError as exc:
        raise _ticket_error(exc) from None
    return ok({"ticket": data})


async def _check_assignee(request: web.Request, ticket_id: int, assignee_id: int) -> None:
    """A ticket on a conversation goes only to an agent who can see that conversation's inbox."""
    async with request.app[CTX].db.session() as s:
        row = (await s.execute(select(Conversation.inbox_id, Agent.role).select_from(Ticket)
                               .join(Conversation, Conversation.id == Ticket.conversation_id)
                               .join(Agent, Agent.id == assignee_id).where(Ticket.id == ticket_id))).first()
        if row is not None and not await inbox_access.agent_sees_inbox(s, assignee_id, row[1], row[0]):
            raise ApiError(400, "this agent is not a member of the ticket's inbox", "not_inbox_member")
