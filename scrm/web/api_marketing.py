"""REST API for profiles (merge, attributes, CSV, timeline), segments and broadcasts; the unsubscribe page."""

from __future__ import annotations

import base64
import binascii
import html
from datetime import datetime
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, Field
from sqlalchemy import delete, func, or_, select

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
    utcnow,
)
from scrm.db.models_marketing import AttributeDefinition, Broadcast, BroadcastRecipient, Segment
from scrm.serializers import contact_json, iso
from scrm.services import attributes as attr_svc
from scrm.services import audit, broadcasts, contacts_csv, contacts_merge, inbox_access, segments
from scrm.services.agents import Principal
from scrm.services.attributes import AttributeError_, check_definition
from scrm.services.broadcast_report import effective_status, recipients_csv, report
from scrm.services.optout import opt_out
from scrm.services.uow import unit_of_work
from scrm.web.access import require_contact
from scrm.web.keys import CTX
from scrm.web.routing import ADMIN, ALL_ROLES, API_ROUTES, ApiError, ApiRoute, api, ok, path_int

MARKETING = frozenset({"admin", "marketer"})
_FIRST = len(API_ROUTES)


def _err(exc: Exception) -> ApiError:
    status, code = getattr(exc, "status", 400), getattr(exc, "code", "invalid")
    return ApiError(status, str(exc), code)


# -- profiles ---------------------------------------------------------------------------------------

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
        raise _err(exc) from None
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


class DefinitionIn(BaseModel):
    key: str = Field(min_length=1, max_length=64)
    label: str = Field(min_length=1, max_length=120)
    type: str
    choices: list[str] = Field(default_factory=list, max_length=200)


def _definition_json(d: AttributeDefinition) -> dict[str, Any]:
    return {"id": d.id, "key": d.key, "label": d.label, "type": d.type, "choices": d.choices}


@api("GET", "/attribute-definitions", roles=ALL_ROLES, tag="contacts", summary="Custom contact attribute definitions")
async def list_definitions(request: web.Request, principal: Principal) -> web.Response:
    async with request.app[CTX].db.session() as s:
        rows = (await s.scalars(select(AttributeDefinition).order_by(AttributeDefinition.key))).all()
    return ok({"definitions": [_definition_json(d) for d in rows]})


@api("POST", "/attribute-definitions", roles=ADMIN, body=DefinitionIn, tag="contacts",
     summary="Define a typed attribute (text, number, date, choice)")
async def create_definition(request: web.Request, principal: Principal, body: DefinitionIn) -> web.Response:
    try:
        choices = check_definition(body.key, body.type, body.choices)
    except AttributeError_ as exc:
        raise ApiError(400, str(exc), "bad_definition") from None
    async with unit_of_work(request.app[CTX]) as tx:
        if await tx.session.scalar(select(AttributeDefinition).where(AttributeDefinition.key == body.key)):
            raise ApiError(409, f"attribute {body.key!r} already exists", "exists")
        d = AttributeDefinition(key=body.key, label=body.label, type=body.type, choices=choices)
        tx.session.add(d)
        await tx.session.flush()
        audit.record(tx, principal.agent_id, "attribute.define", "attribute", d.id, key=d.key, type=d.type)
        return ok(_definition_json(d), 201)


class DefinitionPatch(BaseModel):
    label: str | None = Field(None, min_length=1, max_length=120)
    choices: list[str] | None = None


@api("PATCH", "/attribute-definitions/{id}", roles=ADMIN, body=DefinitionPatch, tag="contacts",
     summary="Rename an attribute or change its choices (the type cannot change)")
async def update_definition(request: web.Request, principal: Principal, body: DefinitionPatch) -> web.Response:
    async with unit_of_work(request.app[CTX]) as tx:
        d = await tx.session.get(AttributeDefinition, path_int(request, "id"))
        if d is None:
            raise ApiError(404, "attribute not found", "not_found")
        if body.label:
            d.label = body.label
        if body.choices is not None:
            try:
                d.choices = check_definition(d.key, d.type, body.choices)
            except AttributeError_ as exc:
                raise ApiError(400, str(exc), "bad_definition") from None
        audit.record(tx, principal.agent_id, "attribute.update", "attribute", d.id, key=d.key)
        return ok(_definition_json(d))


@api("DELETE", "/attribute-definitions/{id}", roles=ADMIN, tag="contacts",
     summary="Delete a definition (stored values stay on contacts)")
async def delete_definition(request: web.Request, principal: Principal) -> web.Response:
    async with unit_of_work(request.app[CTX]) as tx:
        d = await tx.session.get(AttributeDefinition, path_int(request, "id"))
        if d is None:
            raise ApiError(404, "attribute not found", "not_found")
        await tx.session.delete(d)
        audit.record(tx, principal.agent_id, "attribute.delete", "attribute", d.id, key=d.key)
    return ok({"deleted": True})


class AttributesIn(BaseModel):
    attributes: dict[str, Any]


@api("PUT", "/contacts/{id}/attributes", roles=ALL_ROLES, body=AttributesIn, tag="contacts",
     summary="Set typed attributes (validated; null removes); the change is on the contact's timeline")
async def set_attributes(request: web.Request, principal: Principal, body: AttributesIn) -> web.Response:
    cid = path_int(request, "id")
    await require_contact(request, principal, cid)
    async with unit_of_work(request.app[CTX]) as tx:
        contact = await tx.session.get(Contact, cid, with_for_update=True)
        if contact is None or contact.merged_into_id:
            raise ApiError(404, "contact not found", "not_found")
        try:
            changes = await attr_svc.set_values(tx.session, contact, body.attributes)
        except AttributeError_ as exc:
            raise ApiError(400, str(exc), "bad_attribute") from None
        attrs = contact.attributes
        if changes:
            audit.record(tx, principal.agent_id, "contact.attributes", "contact", cid, changes=changes)
            tx.emit(ev.CONTACT_UPDATED, contact_id=cid)
        return ok({"id": cid, "attributes": attrs, "changes": changes})


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
    return _csv(body, "contacts.csv")


def _csv(body: str, filename: str) -> web.Response:
    return web.Response(body=body.encode("utf-8"), content_type="text/csv", charset="utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{filename}"'})


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
    clean = sorted({t.strip() for t in body.tags if t.strip()})
    if any(len(t) > 64 for t in clean):
        raise ApiError(400, "tags are at most 64 characters", "bad_tag")
    await require_contact(request, principal, cid)
    async with unit_of_work(request.app[CTX]) as tx:
        contact = await tx.session.get(Contact, cid, with_for_update=True)
        if contact is None or contact.merged_into_id:
            raise ApiError(404, "contact not found", "not_found")
        before = sorted((await tx.session.scalars(select(ContactTag.tag).where(ContactTag.contact_id == cid))).all())
        if before != clean:
            await tx.session.execute(delete(ContactTag).where(ContactTag.contact_id == cid))
            tx.session.add_all(ContactTag(contact_id=cid, tag=t) for t in clean)
            audit.record(tx, principal.agent_id, "contact.update", "contact", cid, fields=["tags"],
                         tags={"from": before, "to": clean})
            tx.emit(ev.CONTACT_UPDATED, contact_id=cid)
    return ok({"id": cid, "tags": clean})


# -- segments ---------------------------------------------------------------------------------------

class SegmentIn(BaseModel):
    name: str = Field(min_length=1, max_length=120)
    rules: dict[str, Any]


class RulesIn(BaseModel):
    rules: dict[str, Any]
    sample: int = Field(10, ge=0, le=100)


def _segment_json(sg: Segment) -> dict[str, Any]:
    return {"id": sg.id, "name": sg.name, "rules": sg.rules, "created_at": iso(sg.created_at),
            "updated_at": iso(sg.updated_at)}


async def _check_rules(session: Any, rules: Any) -> None:
    try:
        await segments.compile_rules(session, rules)
    except segments.SegmentError as exc:
        raise ApiError(400, str(exc), "bad_rules") from None


@api("POST", "/segments/preview", roles=MARKETING, body=RulesIn, tag="segments",
     summary="Live count and a sample of the contacts matching rules")
async def preview_rules(request: web.Request, principal: Principal, body: RulesIn) -> web.Response:
    async with request.app[CTX].db.session() as s:
        try:
            return ok(await segments.preview(s, body.rules, body.sample))
        except segments.SegmentError as exc:
            raise ApiError(400, str(exc), "bad_rules") from None


@api("GET", "/segments", roles=MARKETING, tag="segments", summary="Saved segments")
async def list_segments(request: web.Request, principal: Principal) -> web.Response:
    async with request.app[CTX].db.session() as s:
        rows = (await s.scalars(select(Segment).order_by(Segment.id))).all()
    return ok({"segments": [_segment_json(x) for x in rows]})


@api("POST", "/segments", roles=MARKETING, body=SegmentIn, tag="segments", summary="Save a segment")
async def create_segment(request: web.Request, principal: Principal, body: SegmentIn) -> web.Response:
    async with unit_of_work(request.app[CTX]) as tx:
        await _check_rules(tx.session, body.rules)
        sg = Segment(name=body.name, rules=body.rules, created_by=principal.agent_id)
        tx.session.add(sg)
        await tx.session.flush()
        audit.record(tx, principal.agent_id, "segment.create", "segment", sg.id, name=sg.name)
        return ok(_segment_json(sg), 201)


async def _segment(session: Any, request: web.Request) -> Segment:
    sg = await session.get(Segment, path_int(request, "id"))
    if sg is None:
        raise ApiError(404, "segment not found", "not_found")
    return sg  # type: ignore[no-any-return]


@api("GET", "/segments/{id}", roles=MARKETING, tag="segments", summary="A segment with its live count and sample")
async def get_segment(request: web.Request, principal: Principal) -> web.Response:
    async with request.app[CTX].db.session() as s:
        sg = await _segment(s, request)
        try:
            live = await segments.preview(s, sg.rules)
        except segments.SegmentError as exc:  # an attribute it uses was deleted since
            live = {"error": str(exc)}
        return ok(_segment_json(sg) | live)


@api("PUT", "/segments/{id}", roles=MARKETING, body=SegmentIn, tag="segments", summary="Replace a segment's rules")
async def update_segment(request: web.Request, principal: Principal, body: SegmentIn) -> web.Response:
    async with unit_of_work(request.app[CTX]) as tx:
        sg = await _segment(tx.session, request)
        await _check_rules(tx.session, body.rules)
        sg.name, sg.rules = body.name, body.rules
        audit.record(tx, principal.agent_id, "segment.update", "segment", sg.id)
        return ok(_segment_json(sg))


@api("DELETE", "/segments/{id}", roles=MARKETING, tag="segments", summary="Delete a segment")
async def delete_segment(request: web.Request, principal: Principal) -> web.Response:
    async with unit_of_work(request.app[CTX]) as tx:
        sg = await _segment(tx.session, request)
        await tx.session.delete(sg)
        audit.record(tx, principal.agent_id, "segment.delete", "segment", sg.id)
    return ok({"deleted": True})


# -- broadcasts -------------------------------------------------------------------------------------

class BroadcastIn(BaseModel):
    name: str | None = Field(None, min_length=1, max_length=120)
    segment_id: int | None = None
    rules: dict[str, Any] | None = None
    inbox_ids: list[int] | None = Field(None, max_length=20)
    template: str | None = Field(None, max_length=20000)
    subject: str | None = Field(None, max_length=255)
    reply_window_days: int | None = Field(None, ge=0, le=30)
    delivery_mode: Literal["standard", "mass", "subscribe"] | None = Field(
        None, description="WeChat OA: standard (48 h window, 订阅通知 outside it with consent), mass (群发), subscribe")
    delivery_options: dict[str, Any] | None = Field(
        None, description='mass: {"target": "list"|"tag"|"all", "tag_id"}; subscribe: {"template_id", "fields", "url"}')


class ContactIn(BaseModel):
    contact_id: int | None = None


class ScheduleIn(BaseModel):
    at: datetime


def _broadcast_json(b: Broadcast) -> dict[str, Any]:
    return {"id": b.id, "name": b.name, "status": b.status, "segment_id": b.segment_id, "rules": b.rules,
            "inbox_ids": b.inbox_ids, "template": b.template, "subject": b.subject,
            "scheduled_at": iso(b.scheduled_at), "started_at": iso(b.started_at), "finished_at": iso(b.finished_at),
            "reply_window_days": b.reply_window_days, "last_error": b.last_error, "created_at": iso(b.created_at),
            "delivery_mode": b.delivery_mode, "delivery_options": b.delivery_options or {}}


@api("GET", "/broadcasts", roles=MARKETING, tag="broadcasts", summary="Broadcasts, newest first")
async def list_broadcasts(request: web.Request, principal: Principal) -> web.Response:
    async with request.app[CTX].db.session() as s:
        rows = (await s.scalars(select(Broadcast).order_by(Broadcast.id.desc()).limit(200))).all()
    return ok({"broadcasts": [_broadcast_json(b) for b in rows]})


@api("POST", "/broadcasts", roles=MARKETING, body=BroadcastIn, tag="broadcasts", summary="Create a draft broadcast")
async def create_broadcast(request: web.Request, principal: Principal, body: BroadcastIn) -> web.Response:
    if not body.name or not body.template or not body.inbox_ids:
        raise ApiError(400, "name, template and inbox_ids are required", "invalid_request")
    try:
        async with unit_of_work(request.app[CTX]) as tx:
            b = await broadcasts.save(tx, principal.agent_id, body.model_dump())
            return ok(_broadcast_json(b), 201)
    except broadcasts.BroadcastError as exc:
        raise _err(exc) from None


async def _verb(request: web.Request, fn: Any, *args: Any) -> Any:
    try:
        async with unit_of_work(request.app[CTX]) as tx:
            b = await broadcasts.load(tx, path_int(request, "id"))
            out = await fn(tx, b, *args)
            return b, out
    except broadcasts.BroadcastError as exc:
        raise _err(exc) from None


@api("GET", "/broadcasts/{id}", roles=MARKETING, tag="broadcasts", summary="A broadcast with its progress")
async def get_broadcast(request: web.Request, principal: Principal) -> web.Response:
    b, rep = await _verb(request, lambda tx, b: report(tx.session, b))
    return ok(_broadcast_json(b) | {"report": rep})


@api("PATCH", "/broadcasts/{id}", roles=MARKETING, body=BroadcastIn, tag="broadcasts", summary="Edit a draft")
async def update_broadcast(request: web.Request, principal: Principal, body: BroadcastIn) -> web.Response:
    b, _ = await _verb(request, lambda tx, b: broadcasts.save(tx, principal.agent_id,
                                                              body.model_dump(exclude_unset=True), b))
    return ok(_broadcast_json(b))


@api("DELETE", "/broadcasts/{id}", roles=MARKETING, tag="broadcasts", summary="Delete a draft or scheduled broadcast")
async def delete_broadcast(request: web.Request, principal: Principal) -> web.Response:
    async def drop(tx: Any, b: Broadcast) -> None:
        if b.status not in ("draft", "scheduled"):
            raise broadcasts.BroadcastError(f"a {b.status} broadcast is kept for its report; cancel it instead")
        await tx.session.delete(b)
    await _verb(request, drop)
    return ok({"deleted": True})


@api("POST", "/broadcasts/{id}/preview", roles=MARKETING, body=ContactIn, tag="broadcasts",
     summary="The message as each channel will show it (for one contact, or with fallbacks)")
async def preview_broadcast(request: web.Request, principal: Principal, body: ContactIn) -> web.Response:
    _, out = await _verb(request, lambda tx, b: broadcasts.preview(request.app[CTX], tx, b, body.contact_id))
    return ok({"channels": out})


@api("POST", "/broadcasts/{id}/test", roles=MARKETING, body=ContactIn, tag="broadcasts",
     summary="Send the message to one contact you name (yourself), under the channel rules")
async def test_broadcast(request: web.Request, principal: Principal, body: ContactIn) -> web.Response:
    if body.contact_id is None:
        raise ApiError(400, "contact_id is required", "invalid_request")
    _, out = await _verb(request, lambda tx, b: broadcasts.send_test(request.app[CTX], b, body.contact_id, tx))
    return ok(out, 202)


@api("POST", "/broadcasts/{id}/schedule", roles=MARKETING, body=ScheduleIn, tag="broadcasts",
     summary="Start automatically at a time")
async def schedule_broadcast(request: web.Request, principal: Principal, body: ScheduleIn) -> web.Response:
    if body.at.tzinfo is not None and body.at <= utcnow():
        raise ApiError(400, "the time is in the past; use start to send now", "bad_time")
    b, _ = await _verb(request, lambda tx, b: broadcasts.schedule(tx, b, body.at, principal.agent_id))
    return ok(_broadcast_json(b))


@api("POST", "/broadcasts/{id}/start", roles=MARKETING, tag="broadcasts",
     summary="Send now: materialize the recipients and queue their deliveries")
async def start_broadcast(request: web.Request, principal: Principal) -> web.Response:
    try:
        result = await broadcasts.start(request.app[CTX], path_int(request, "id"), principal.agent_id)
    except broadcasts.BroadcastError as exc:
        raise _err(exc) from None
    return ok(result, 202)


def _simple(verb: str) -> Any:
    fn = getattr(broadcasts, verb)

    async def handler(request: web.Request, principal: Principal) -> web.Response:
        b, n = await _verb(request, lambda tx, b: fn(tx, b, principal.agent_id))
        return ok(_broadcast_json(b) | {"deliveries": n})

    handler.__name__ = f"{verb}_broadcast"
    return handler


for _name, _summary in (("pause", "Hold the deliveries not yet claimed"), ("resume", "Queue held deliveries again"),
                        ("cancel", "Stop for good; unsent deliveries are cancelled")):
    api("POST", f"/broadcasts/{{id}}/{_name}", roles=MARKETING, tag="broadcasts", summary=_summary)(_simple(_name))


@api("GET", "/broadcasts/{id}/report", roles=MARKETING, tag="broadcasts",
     summary="Targeted, skipped by reason, sent, delivered, failed by reason, replied, opted out")
async def broadcast_report(request: web.Request, principal: Principal) -> web.Response:
    _, rep = await _verb(request, lambda tx, b: report(tx.session, b))
    return ok(rep)


@api("GET", "/broadcasts/{id}/recipients.csv", roles=MARKETING, tag="broadcasts",
     summary="Every recipient with status and reason, as CSV")
async def broadcast_recipients(request: web.Request, principal: Principal) -> web.Response:
    _, body = await _verb(request, lambda tx, b: recipients_csv(tx.session, b.id))
    return _csv(body, f"broadcast-{path_int(request, 'id')}-recipients.csv")


# -- public unsubscribe page (email List-Unsubscribe target; RFC 8058 one-click POST) --------------

PAGE = ("<!doctype html><meta charset='utf-8'><meta name='viewport' content='width=device-width'>"
        "<title>退订 / Unsubscribe</title><body style='font-family:sans-serif;max-width:32em;margin:3em auto'>{}</body>")


async def _recipient(request: web.Request) -> BroadcastRecipient | None:
    token = request.match_info.get("token", "")
    if not token or len(token) > 64:
        return None
    async with request.app[CTX].db.session() as s:
        return await s.scalar(select(BroadcastRecipient).where(BroadcastRecipient.unsubscribe_token == token))


async def unsubscribe_page(request: web.Request) -> web.Response:
    """GET shows a confirmation button (link scanners must not unsubscribe anyone)."""
    if await _recipient(request) is None:
        return web.Response(status=404, text=PAGE.format("<p>链接无效 / This link is not valid.</p>"),
                            content_type="text/html")
    action = html.escape(request.path)
    body = (f"<form method='post' action='{action}'><p>不再通过电子邮件接收我们的群发消息？<br>"
            "Stop receiving our broadcast emails?</p><button type='submit'>退订 / Unsubscribe</button></form>")
    return web.Response(text=PAGE.format(body), content_type="text/html")


async def unsubscribe_post(request: web.Request) -> web.Response:
    """One-click unsubscribe (mail clients POST List-Unsubscribe=One-Click here)."""
    r = await _recipient(request)
    if r is None:
        return web.Response(status=404, text=PAGE.format("<p>链接无效 / This link is not valid.</p>"),
                            content_type="text/html")
    async with unit_of_work(request.app[CTX]) as tx:
        if await opt_out(tx, r.contact_id, r.channel or "email", via=f"link:{r.id}"):
            tx.emit(ev.CONTACT_UPDATED, contact_id=r.contact_id, change="opt_out")
        rec = await tx.session.get(BroadcastRecipient, r.id)
        if rec is not None and rec.opted_out_at is None:
            rec.opted_out_at = utcnow()
    return web.Response(text=PAGE.format("<p>您已退订。/ You are unsubscribed.</p>"), content_type="text/html")


MY_ROUTES: list[ApiRoute] = API_ROUTES[_FIRST:]
MARKETING_PAGES = ("/contacts", "/contacts/{id:\\d+}", "/segments", "/segments/{id:new|\\d+}", "/broadcasts",
                   "/broadcasts/{id:new|\\d+}")


def add_routes(app: web.Application) -> None:
    """Add this module's /api/v1 routes (unless the core already added them) and the unsubscribe page."""
    existing = {(r.method, r.resource.canonical) for r in app.router.routes() if r.resource is not None}
    for route in MY_ROUTES:
        if (route.method, "/api/v1" + route.path) not in existing:
            app.router.add_route(route.method, "/api/v1" + route.path, route.handler)
    from scrm.web.ui import page  # the marketer's pages are routes of the single-page app

    for path in MARKETING_PAGES:
        app.router.add_get(path, page)
    app.router.add_get("/unsubscribe/{token}", unsubscribe_page)
    app.router.add_post("/unsubscribe/{token}", unsubscribe_post)

