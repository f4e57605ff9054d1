"""Contact endpoints: list/search, profile with identities and conversations, update."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel, Field
from sqlalchemy import or_, select

from scrm.db.models import Contact, ContactIdentity, ContactTag, Conversation, Inbox, Ticket
from scrm.serializers import contact_json, conversation_json, identity_json, ticket_json
from scrm.services.agents import inbox_access
from scrm.services.agents.accounts import Principal
from scrm.services.contacts import attributes as attr_svc
from scrm.services.contacts import profile as contact_profile
from scrm.services.uow import unit_of_work
from scrm.web.access import require_contact
from scrm.web.keys import CTX
from scrm.web.routing import ALL_ROLES, SUPPORT, ApiError, api, ok, path_int, query_int


@api("GET", "/contacts", roles=ALL_ROLES, summary="List or search contacts (name, email, phone)",
     query={"q": "search text", "cursor": "id to continue below", "limit": "1-100 (default 25)"}, tag="contacts")
async def list_contacts(request: web.Request, principal: Principal) -> web.Response:
    ctx = request.app[CTX]
    limit = query_int(request, "limit", 25, 1, 100)
    cursor = query_int(request, "cursor", 0, 0, 2**62)
    stmt = select(Contact).where(Contact.merged_into_id.is_(None), *inbox_access.contact_filter(principal))
    q = (request.query.get("q") or "").strip()
    if q:
        like = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        stmt = stmt.where(or_(Contact.name.ilike(like, escape="\\"), Contact.email.ilike(like, escape="\\"),
                              Contact.phone.ilike(like, escape="\\")))
    if cursor:
        stmt = stmt.where(Contact.id < cursor)
    stmt = stmt.order_by(Contact.id.desc()).limit(limit + 1)
    async with ctx.db.session() as s:
        rows = list((await s.scalars(stmt)).all())
        tags = await _tags(s, [c.id for c in rows[:limit]])
    page = rows[:limit]
    return ok({"items": [contact_json(c, tags.get(c.id)) for c in page],
               "next_cursor": page[-1].id if len(rows) > limit else None})


def _inbox_in(column: Any, principal: Principal) -> list[Any]:
    """Only a contact's identities on inboxes the caller sees (another inbox's account ids are its business)."""
    ids = inbox_access.scope(principal)
    return [] if ids is None else [column.in_(ids)]


async def _tags(s: Any, ids: list[int]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    if ids:
        for cid, tag in (await s.execute(select(ContactTag.contact_id, ContactTag.tag)
                                         .where(ContactTag.contact_id.in_(ids)).order_by(ContactTag.tag))):
            out.setdefault(cid, []).append(tag)
    return out


@api("GET", "/contacts/{id}", roles=ALL_ROLES, summary="A contact's profile: identities, conversations, tickets",
     tag="contacts")
async def get_contact(request: web.Request, principal: Principal) -> web.Response:
    ctx = request.app[CTX]
    cid = path_int(request, "id")
    await require_contact(request, principal, cid)
    async with ctx.db.session() as s:
        contact = await s.get(Contact, cid)
        if contact is None:
            raise ApiError(404, "contact not found", "not_found")
        tags = (await _tags(s, [cid])).get(cid, [])
        idents = (await s.execute(select(ContactIdentity, Inbox).join(Inbox, Inbox.id == ContactIdentity.inbox_id)
                                  .where(ContactIdentity.contact_id == cid,
                                         *_inbox_in(ContactIdentity.inbox_id, principal)))).all()
        convs = (await s.execute(select(Conversation, Inbox).join(Inbox, Inbox.id == Conversation.inbox_id)
                                 .where(Conversation.contact_id == cid, *inbox_access.conversation_filter(principal))
                                 .order_by(Conversation.last_activity_at.desc()).limit(50))).all()
        tickets = list((await s.scalars(select(Ticket).where(Ticket.contact_id == cid, *inbox_access.ticket_filter(principal)).order_by(Ticket.id.desc()))).all())
    data = contact_json(contact, tags)
    data["identities"] = [identity_json(i, ib) for i, ib in idents]
    data["conversations"] = [conversation_json(c, inbox=ib) for c, ib in convs]
    data["tickets"] = [ticket_json(t) for t in tickets]
    data["merged_into_id"] = contact.merged_into_id
    return ok(data)


class ContactPatch(BaseModel):
    name: str | None = Field(None, max_length=255)
    email: str | None = Field(None, max_length=255, pattern=r"^$|^[^@\s]+@[^@\s]+\.[^@\s]+$")
    phone: str | None = Field(None, max_length=64, pattern=r"^$|^\+?[0-9 ()-]{5,32}$")
    language: str | None = Field(None, max_length=16)
    attributes: dict[str, Any] | None = None  # merged; a null value removes the key
    tags: list[str] | None = Field(None, max_length=100)


@api("PATCH", "/contacts/{id}", roles=SUPPORT, body=ContactPatch, summary="Update a contact's profile, attributes, tags",
     tag="contacts")
async def update_contact(request: web.Request, principal: Principal, body: ContactPatch) -> web.StreamResponse:
    ctx = request.app[CTX]
    cid = path_int(request, "id")
    await require_contact(request, principal, cid)
    try:
        async with unit_of_work(ctx) as tx:
            contact = await contact_profile.update_profile(
                tx, principal.agent_id, cid, body.model_dump(exclude_unset=True), body.attributes, body.tags)
            if contact is None:
                raise ApiError(404, "contact not found", "not_found")
    except attr_svc.AttributeError_ as exc:
        raise ApiError(400, str(exc), "bad_attribute") from None
    except contact_profile.TagError as exc:
        raise ApiError(400, str(exc), "bad_tag") from None
    return await get_contact(request, principal)
