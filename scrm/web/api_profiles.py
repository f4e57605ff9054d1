"""REST API for contact profiles: merges, CSV import and export, the timeline, search and tags."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from aiohttp import web
from pydantic import BaseModel, Field
from sqlalchemy import func, or_, select

from scrm import events as ev
from scrm.db.models import (
    AuditLog,
    Contact,
    ContactIdentity,
    ContactTag,
    Conversation,
    Delivery,
    Inbox,
    Ticket,
)
from scrm.db.models_marketing import Broadcast, BroadcastRecipient
from scrm.serializers import contact_json, iso
from scrm.services.agents import audit, inbox_access
from scrm.services.agents.accounts import Principal
from scrm.services.contacts import csv_files as contacts_csv
from scrm.services.contacts import merge as contacts_merge
from scrm.services.contacts import profile as contact_profile
from scrm.services.marketing import segments
from scrm.services.marketing.broadcast_report import effective_status
from scrm.services.uow import unit_of_work
from scrm.web.access import require_contact
from scrm.web.keys import CTX
from scrm.web.marketing_http import MARKETING, csv_response, service_error
from scrm.web.routing import ALL_ROLES, ApiError, api, ok, path_int


class MergeIn(BaseModel):
    target_id: int
    source_id: int


# Marketers clean up duplicates after imports too, so merging is open to every role (it is audited).
@api("POST", "/contact-merges", roles=ALL_ROLES, body=MergeIn, tag="contacts",
     summary="Merge source into target: identities, conversations, tickets, tags and attributes move")
async def merge_contacts(request: web.Request, principal: Principal, body: MergeIn) -> web.Response:
    await require_contact(request, principal, body.target_id)
    await require_contact(request, principal, body.source_id)
    try:
        async with unit_of_work(request.app[CTX]) as tx:
            result = await contacts_merge.merge(tx, body.target_id, body.source_id, principal.agent_id)
    except contacts_merge.MergeError as exc:
        raise service_error(exc) from None
    return ok(result)


@api("GET", "/contact-merges/suggestions", roles=ALL_ROLES, tag="contacts",
     summary="Contacts that share a verified email or phone")
async def merge_suggestions(request: web.Request, principal: Principal) -> web.Response:
    async with unit_of_work(request.app[CTX]) as tx:
        found = await contacts_merge.suggestions(tx)
        if (conds := inbox_access.contact_filter(principal)) and found:
            ids = {i for f in found for i in (f["target"]["id"], f["source"]["id"])}
            seen = set((await tx.session.scalars(select(Contact.id).where(Contact.id.in_(ids), *conds))).all())
            found = [f for f in found if f["target"]["id"] in seen and f["source"]["id"] in seen]
        return ok({"suggestions": found})

class ImportIn(BaseModel):
    data_base64: str = Field(max_length=30_000_000)
    mapping: dict[str, str]  # CSV column -> name | email | phone | language | tags | consent.email | attributes.<key>
    dry_run: bool = False


@api("POST", "/contact-import", roles=MARKETING, body=ImportIn, tag="contacts",
     summary="Import contacts from CSV (UTF-8, UTF-8 BOM or GB18030); dry_run reports without writing")
async def import_contacts(request: web.Request, principal: Principal, body: ImportIn) -> web.Response:
    try:
        data = base64.b64decode(body.data_base64, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "data_base64 is not valid base64", "bad_file") from None
    try:
        async with unit_of_work(request.app[CTX]) as tx:
            result = await contacts_csv.import_csv(tx, data, body.mapping, dry_run=body.dry_run,
                                                   agent_id=principal.agent_id)
    except contacts_csv.CsvError as exc:
        raise ApiError(400, str(exc), "bad_csv") from None
    return ok(result)


@api("GET", "/contact-export", roles=MARKETING, tag="contacts", summary="All contacts as CSV (UTF-8 with BOM)")
async def export_contacts(request: web.Request, principal: Principal) -> web.Response:
    async with unit_of_work(request.app[CTX]) as tx:
        body = await contacts_csv.export_csv(tx)
    return csv_response(body, "contacts.csv")


@api("GET", "/contacts/{id}/timeline", roles=ALL_ROLES, tag="contacts",
     summary="Conversations, tickets, broadcasts received and attribute changes, newest first")
async def timeline(request: web.Request, principal: Principal) -> web.Response:
    cid = path_int(request, "id")
    await require_contact(request, principal, cid)
    items: list[dict[str, Any]] = []
    async with request.app[CTX].db.session() as s:
        if await s.get(Contact, cid) is None:
            raise ApiError(404, "contact not found", "not_found")
        for c in (await s.scalars(select(Conversation).where(Conversation.contact_id == cid,
                                                                  *inbox_access.conversation_filter(principal)))).all():
            items.append({"type": "conversation", "at": iso(c.created_at), "id": c.id, "status": c.status,
                          "inbox_id": c.inbox_id, "preview": c.last_message_preview})
        for t in (await s.scalars(select(Ticket).where(Ticket.contact_id == cid, *inbox_access.ticket_filter(principal)))).all():
            items.append({"type": "ticket", "at": iso(t.created_at), "id": t.id, "number": t.number,
                          "subject": t.subject, "status": t.status})
        rows = (await s.execute(select(BroadcastRecipient, Broadcast.name, Delivery.status)
                                .join(Broadcast, Broadcast.id == BroadcastRecipient.broadcast_id)
                                .outerjoin(Delivery, Delivery.id == BroadcastRecipient.delivery_id)
                                .where(BroadcastRecipient.contact_id == cid))).all()
        for r, name, dstatus in rows:
            items.append({"type": "broadcast", "at": iso(r.created_at), "id": r.broadcast_id, "name": name,
                          "channel": r.channel, "status": effective_status(r.status, dstatus), "reason": r.reason,
                          "replied": r.replied_at is not None})
        for a in (await s.scalars(select(AuditLog).where(
                AuditLog.target_type == "contact", AuditLog.target_id == cid,
                AuditLog.action.in_(("contact.attributes", "contact.update", "contact.merge"))))).all():
            items.append({"type": "change", "at": iso(a.created_at), "action": a.action, "agent_id": a.agent_id,
                          "data": a.data})
    items.sort(key=lambda i: i["at"] or "", reverse=True)
    return ok({"contact_id": cid, "items": items})


class SearchIn(BaseModel):
    q: str = Field("", max_length=200)
    rules: dict[str, Any] | None = None  # segment rules (tags, attributes, channel, ...); none = everybody
    cursor: int = Field(0, ge=0)
    limit: int = Field(25, ge=1, le=100)


@api("POST", "/contact-search", roles=MARKETING, body=SearchIn, tag="contacts",
     summary="Contacts matching text (name, email, phone) and segment rules, with tags and channels, newest first")
async def search_contacts(request: web.Request, principal: Principal, body: SearchIn) -> web.Response:
    async with request.app[CTX].db.session() as s:
        try:
            stmt = await segments.members_query(s, body.rules)
        except segments.SegmentError as exc:
            raise ApiError(400, str(exc), "bad_rules") from None
        q = body.q.strip()
        if q:
            like = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            stmt = stmt.where(or_(Contact.name.ilike(like, escape="\\"), Contact.email.ilike(like, escape="\\"),
                                  Contact.phone.ilike(like, escape="\\")))
        total = await s.scalar(select(func.count()).select_from(stmt.subquery()))
        if body.cursor:
            stmt = stmt.where(Contact.id < body.cursor)
        ids = list((await s.scalars(stmt.order_by(Contact.id.desc()).limit(body.limit + 1))).all())
        page = ids[:body.limit]
        rows = (await s.scalars(select(Contact).where(Contact.id.in_(page)).order_by(Contact.id.desc()))).all()
        tags: dict[int, list[str]] = {}
        for cid, tag in await s.execute(select(ContactTag.contact_id, ContactTag.tag)
                                        .where(ContactTag.contact_id.in_(page)).order_by(ContactTag.tag)):
            tags.setdefault(cid, []).append(tag)
        channels: dict[int, set[str]] = {}
        for cid, channel in await s.execute(select(ContactIdentity.contact_id, Inbox.channel_type)
                                            .join(Inbox, Inbox.id == ContactIdentity.inbox_id)
                                            .where(ContactIdentity.contact_id.in_(page))):
            channels.setdefault(cid, set()).add(channel)
    items = [contact_json(c, tags.get(c.id)) | {"channels": sorted(channels.get(c.id, ()))} for c in rows]
    return ok({"items": items, "count": int(total or 0), "next_cursor": page[-1] if len(ids) > body.limit else None})


class TagsIn(BaseModel):
    tags: list[str] = Field(max_length=100)


@api("PUT", "/contacts/{id}/tags", roles=ALL_ROLES, body=TagsIn, tag="contacts",
     summary="Replace a contact's tags (trimmed, de-duplicated, at most 64 characters each)")
async def set_tags(request: web.Request, principal: Principal, body: TagsIn) -> web.Response:
    cid = path_int(request, "id")
    try:
        clean = contact_profile.normalize_tags(body.tags)
    except contact_profile.TagError as exc:
        raise ApiError(400, str(exc), "bad_tag") from None
    await require_contact(request, principal, cid)
    async with unit_of_work(request.app[CTX]) as tx:
        contact = await tx.session.get(Contact, cid, with_for_update=True)
        if contact is None or contact.merged_into_id:
            raise ApiError(404, "contact not found", "not_found")
        before = await contact_profile.replace_tags(tx, cid, clean)
        if before != clean:
            audit.record(tx, principal.agent_id, "contact.update", "contact", cid, fields=["tags"],
                         tags={"from": before, "to": clean})
            tx.emit(ev.CONTACT_UPDATED, contact_id=cid)
    return ok({"id": cid, "tags": clean})

