"""Ticket endpoints (minimal): list, read, and open one from a conversation (agents and admins)."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel, Field
from sqlalchemy import select

from scrm.db.models import Ticket
from scrm.services import audit
from scrm.services import tickets as ticket_svc
from scrm.services.agents import Principal
from scrm.services.uow import unit_of_work
from scrm.web.api_faq import register
from scrm.web.keys import CTX
from scrm.web.routing import API_ROUTES, SUPPORT, ApiError, api, ok, path_int, query_int
from scrm.web.serializers import ticket_json

STATUSES = ("new", "open", "pending", "solved", "closed")


def _json(t: Ticket) -> dict[str, Any]:
    return {**ticket_json(t), "description": t.description, "fields": t.fields,
            "display_number": ticket_svc.ticket_number_text(t.number)}


class TicketIn(BaseModel):
    subject: str | None = Field(None, max_length=255, description="default: the conversation's subject or preview")
    description: str | None = Field(None, max_length=20000)
    priority: str | None = Field(None, description="low | normal | high | urgent (default: the conversation's)")


@api("GET", "/tickets", roles=SUPPORT, summary="List tickets, newest first", tag="tickets",
     query={"status": "new | open | pending | solved | closed", "contact_id": "only this contact's",
            "conversation_id": "only this conversation's", "before_id": "paging: tickets with a smaller id",
            "limit": "1-100 (default 25)"})
async def list_tickets(request: web.Request, principal: Principal) -> web.Response:
    q = request.query
    conds: list[Any] = []
    if q.get("status"):
        if q["status"] not in STATUSES:
            raise ApiError(400, f"status must be one of {', '.join(STATUSES)}", "bad_query")
        conds.append(Ticket.status == q["status"])
    for name, column in (("contact_id", Ticket.contact_id), ("conversation_id", Ticket.conversation_id),
                         ("before_id", Ticket.id)):
        if q.get(name):
            value = query_int(request, name, 0, 1, 2**62)
            conds.append(column < value if name == "before_id" else column == value)
    limit = query_int(request, "limit", 25, 1, 100)
    async with request.app[CTX].db.session() as s:
        rows = (await s.scalars(select(Ticket).where(*conds).order_by(Ticket.id.desc()).limit(limit + 1))).all()
    page = rows[:limit]
    return ok({"items": [_json(t) for t in page], "next_before_id": page[-1].id if len(rows) > limit else None})


@api("GET", "/tickets/{id}", roles=SUPPORT, summary="One ticket", tag="tickets")
async def get_ticket(request: web.Request, principal: Principal) -> web.Response:
    async with request.app[CTX].db.session() as s:
        ticket = await s.get(Ticket, path_int(request, "id"))
    if ticket is None:
        raise ApiError(404, "ticket not found", "not_found")
    return ok(_json(ticket))


@api("POST", "/conversations/{id}/tickets", roles=SUPPORT, body=TicketIn, tag="tickets",
     summary="Open a ticket from a conversation")
async def open_ticket(request: web.Request, principal: Principal, body: TicketIn) -> web.Response:
    try:
        async with unit_of_work(request.app[CTX]) as tx:
            ticket = await ticket_svc.open_from_conversation(
                tx, path_int(request, "id"), principal.agent_id, subject=body.subject,
                description=body.description, priority=body.priority)
            audit.record(tx, principal.agent_id, "ticket.open", "ticket", ticket.id,
                         conversation_id=ticket.conversation_id)
    except ticket_svc.TicketError as exc:
        raise ApiError(exc.status, str(exc), exc.code) from None
    return ok(_json(ticket), 201)


_MINE = [r for r in API_ROUTES if r.tag == "tickets" and r.handler.__wrapped__ in (  # type: ignore[attr-defined]
    list_tickets, get_ticket, open_ticket)]


def add_routes(app: web.Application, prefix: str = "/api/v1") -> None:
    """Register the ticket endpoints (skipping any add_api_routes already added)."""
    register(app, _MINE, prefix)
