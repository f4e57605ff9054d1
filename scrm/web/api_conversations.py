"""Conversation endpoints: list (tabs, filters, search, cursor paging), thread, and agent actions."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import exists, func, select, tuple_

from scrm.db.models import Agent, Contact, ContactIdentity, Conversation, ConversationLabel, Inbox, Message
from scrm.domain import Choice
from scrm.serializers import conversation_json, identity_json, message_json
from scrm.services.agents import inbox_access
from scrm.services.agents.accounts import Principal
from scrm.services.conversations import actions as conv_svc
from scrm.services.conversations import search as conversation_search
from scrm.services.conversations.reply_limits import with_reply_count
from scrm.services.uow import unit_of_work
from scrm.web.access import require_conversation, require_message
from scrm.web.keys import CTX
from scrm.web.routing import SUPPORT, ApiError, api, ok, path_int, query_int

LIST_QUERY = {
    "tab": "mine | unassigned | all (default all)",
    "status": "open | pending | snoozed | resolved | all (default open); comma-separated for several",
    "handler": "bot | queue | human",
    "inbox_id": "only this inbox",
    "channel": "only this channel type (api, telegram, wechat_oa, email)",
    "label": "only conversations with this label",
    "q": "search contact name, email, phone or message text",
    "cursor": "next_cursor of the previous page",
    "limit": "page size 1-100 (default 25)",
}


def _encode_cursor(at: datetime, cid: int) -> str:
    return base64.urlsafe_b64encode(json.dumps([at.isoformat(), cid]).encode()).decode().rstrip("=")


def _decode_cursor(raw: str) -> tuple[datetime, int]:
    try:
        at, cid = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        return datetime.fromisoformat(at), int(cid)
    except (ValueError, TypeError, json.JSONDecodeError):
        raise ApiError(400, "bad cursor", "bad_cursor") from None


def _filters(request: web.Request, principal: Principal) -> list[Any]:
    q = request.query
    conds: list[Any] = []
    tab = q.get("tab", "all")
    if tab == "mine":
        conds.append(Conversation.assignee_id == principal.agent_id)
    elif tab == "unassigned":
        conds.append(Conversation.assignee_id.is_(None))
    elif tab != "all":
        raise ApiError(400, "tab must be mine, unassigned or all", "bad_query")
    status = q.get("status", "open")
    if status != "all":
        wanted = [s for s in status.split(",") if s]
        bad = [s for s in wanted if s not in conv_svc.STATUSES]
        if bad:
            raise ApiError(400, f"unknown status {bad[0]!r}", "bad_query")
        conds.append(Conversation.status.in_(wanted) if len(wanted) > 1 else Conversation.status == wanted[0])
    if "handler" in q:
        if q["handler"] not in conv_svc.HANDLERS:
            raise ApiError(400, "handler must be bot, queue or human", "bad_query")
        conds.append(Conversation.handler == q["handler"])
    if "inbox_id" in q:
        conds.append(Conversation.inbox_id == query_int(request, "inbox_id", 0, 1, 2**62))
    if "channel" in q:
        conds.append(Conversation.inbox_id.in_(select(Inbox.id).where(Inbox.channel_type == q["channel"])))
    if q.get("label"):
        conds.append(exists().where(ConversationLabel.conversation_id == Conversation.id, ConversationLabel.label == q["label"]))
    conds += inbox_access.conversation_filter(principal)  # one subquery on inboxes: the list stays one query
    return conds  # the text search (q) is added by list_conversations: it needs the session


@api("GET", "/conversations", roles=SUPPORT, summary="List conversations, newest activity first", query=LIST_QUERY,
     tag="conversations")
async def list_conversations(request: web.Request, principal: Principal) -> web.Response:
    ctx = request.app[CTX]
    limit = query_int(request, "limit", 25, 1, 100)
    conds = _filters(request, principal)
    if request.query.get("cursor"):
        at, cid = _decode_cursor(request.query["cursor"])
        conds.append(tuple_(Conversation.last_activity_at, Conversation.id) < tuple_(at, cid))
    term = (request.query.get("q") or "").strip()
    async with ctx.db.session() as s:
        if term:
            conds.append(await conversation_search.search_condition(s, conds, term, limit + 1))
        stmt = (
            select(Conversation, Contact, Inbox, Agent)
            .join(Contact, Contact.id == Conversation.contact_id)
            .join(Inbox, Inbox.id == Conversation.inbox_id)
            .outerjoin(Agent, Agent.id == Conversation.assignee_id)
            .where(*conds)
            .order_by(Conversation.last_activity_at.desc(), Conversation.id.desc())
            .limit(limit + 1)
        )
        rows = (await s.execute(stmt)).all()
        page = rows[:limit]
        ids = [r[0].id for r in page]
        labels: dict[int, list[str]] = {}
        if ids:
            for cid, label in (await s.execute(
                select(ConversationLabel.conversation_id, ConversationLabel.label)
                .where(ConversationLabel.conversation_id.in_(ids))
            )):
                labels.setdefault(cid, []).append(label)
    items = [conversation_json(c, contact=ct, inbox=ib, assignee=ag, labels=sorted(labels.get(c.id, [])))
             for c, ct, ib, ag in page]
    next_cursor = _encode_cursor(page[-1][0].last_activity_at, page[-1][0].id) if len(rows) > limit else None
    return ok({"items": items, "next_cursor": next_cursor})


@api("GET", "/conversations/counts", roles=SUPPORT, summary="Open conversation counts per tab and waiting in queue",
     tag="conversations")
async def conversation_counts(request: web.Request, principal: Principal) -> web.Response:
    ctx = request.app[CTX]
    open_ = Conversation.status == "open"
    async with ctx.db.session() as s:
        row = (await s.execute(select(
            func.count().filter(Conversation.assignee_id == principal.agent_id),
            func.count().filter(Conversation.assignee_id.is_(None)),
            func.count(),
            func.count().filter(Conversation.handler == "queue"),
        ).where(open_, *inbox_access.conversation_filter(principal)))).one()
    return ok({"mine": row[0], "unassigned": row[1], "all": row[2], "waiting": row[3]})


async def _conversation_detail(request: web.Request, cid: int) -> dict[str, Any]:
    ctx = request.app[CTX]
    async with ctx.db.session() as s:
        conv = await s.get(Conversation, cid)
        if conv is None:
            raise ApiError(404, "conversation not found", "not_found")
        contact = await s.get(Contact, conv.contact_id)
        inbox = await s.get(Inbox, conv.inbox_id)
        identity = await s.get(ContactIdentity, conv.identity_id)
        assignee = await s.get(Agent, conv.assignee_id) if conv.assignee_id else None
        labels = list((await s.scalars(select(ConversationLabel.label).where(ConversationLabel.conversation_id == cid))).all())
        assert inbox is not None and identity is not None
        window = await with_reply_count(s, inbox, identity, conv_svc.reply_window(inbox, identity, ctx.adapters), ctx.adapters)
    data = conversation_json(conv, contact=contact, inbox=inbox, assignee=assignee, labels=sorted(labels))
    data["identity"] = identity_json(identity, inbox)
    data["reply_window"] = window
    return data


@api("GET", "/conversations/{id}", roles=SUPPORT, summary="One conversation with its latest messages",
     query={"limit": "messages to include (default 50)"}, tag="conversations")
async def get_conversation(request: web.Request, principal: Principal) -> web.Response:
    cid = path_int(request, "id")
    await require_conversation(request, principal, cid)
    data = await _conversation_detail(request, cid)
    data["messages"], data["older_cursor"] = await _messages_page(request, cid)
    return ok(data)


async def _messages_page(request: web.Request, cid: int) -> tuple[list[dict[str, Any]], int | None]:
    ctx = request.app[CTX]
    limit = query_int(request, "limit", 50, 1, 200)
    before = query_int(request, "before", 0, 0, 2**62)
    stmt = select(Message).where(Message.conversation_id == cid)
    if before:
        stmt = stmt.where(Message.id < before)
    stmt = stmt.order_by(Message.id.desc()).limit(limit + 1)
    async with ctx.db.session() as s:
        rows = list((await s.scalars(stmt)).all())
    page = rows[:limit]
    older = page[-1].id if len(rows) > limit else None
    return [message_json(m) for m in reversed(page)], older


@api("GET", "/conversations/{id}/messages", roles=SUPPORT, summary="Messages, oldest first, paged backwards",
     query={"before": "only messages with id below this (older_cursor)", "limit": "1-200 (default 50)"},
     tag="conversations")
async def list_messages(request: web.Request, principal: Principal) -> web.Response:
    cid = path_int(request, "id")
    await require_conversation(request, principal, cid)
    ctx = request.app[CTX]
    async with ctx.db.session() as s:
        if await s.get(Conversation, cid) is None:
            raise ApiError(404, "conversation not found", "not_found")
    items, older = await _messages_page(request, cid)
    return ok({"items": items, "older_cursor": older})


class ChoiceIn(BaseModel):
    label: str = Field(min_length=1, max_length=64)
    payload: str = Field(min_length=1, max_length=64)


class ReplyAttachmentIn(BaseModel):
    """A file uploaded with POST /uploads (its answer, as is). Only stored files: a URL here would make
    the server (or the channel's platform, on its behalf) fetch whatever address an agent names."""

    model_config = ConfigDict(extra="forbid")
    storage_key: str = Field(min_length=1, max_length=200)
    kind: Literal["image", "file", "audio", "voice", "video"] = "file"
    filename: str | None = Field(None, max_length=255)
    mime_type: str | None = Field(None, max_length=255)
    size: int | None = Field(None, ge=0)


class ReplyIn(BaseModel):
    text: str | None = Field(None, max_length=20000)
    private: bool = False
    attachments: list[ReplyAttachmentIn] = Field(default_factory=list, max_length=10)
    choices: list[ChoiceIn] = Field(default_factory=list, max_length=10)


async def _run(request: web.Request, fn: Any, *args: Any, **kwargs: Any) -> Any:
    ctx = request.app[CTX]
    try:
        async with unit_of_work(ctx) as tx:
            return await fn(tx, *args, **kwargs)
    except conv_svc.ConversationError as exc:
        raise ApiError(exc.status, str(exc), exc.code) from None


@api("POST", "/conversations/{id}/messages", roles=SUPPORT, body=ReplyIn, tag="conversations",
     summary="Reply to the customer (queued in the outbox) or add a private note (private=true)")
async def reply(request: web.Request, principal: Principal, body: ReplyIn) -> web.Response:
    cid = path_int(request, "id")
    await require_conversation(request, principal, cid)
    if body.private:
        note = await _run(request, conv_svc.do_note, cid, principal.agent_id, body.text or "")
        return ok(message_json(note), 201)
    storage = request.app[CTX].storage
    for att in body.attachments:
        try:
            stored = storage.path_for(att.storage_key).is_file()
        except KeyError:
            stored = False
        if not stored:
            raise ApiError(400, f"attachment {att.storage_key!r} is not an uploaded file (upload it with POST /uploads)",
                           "bad_attachment")
    message, _ = await _run(request, conv_svc.do_reply, cid, principal.agent_id, body.text,
                            attachments=[a.model_dump(exclude_none=True) for a in body.attachments], choices=[Choice(c.label, c.payload) for c in body.choices])
    return ok(message_json(message), 201)


class AssignIn(BaseModel):
    assignee_id: int | None


@api("POST", "/conversations/{id}/assign", roles=SUPPORT, body=AssignIn, summary="Assign to an agent (null: unassign)",
     tag="conversations")
async def assign(request: web.Request, principal: Principal, body: AssignIn) -> web.Response:
    cid = path_int(request, "id")
    await require_conversation(request, principal, cid)
    await _run(request, conv_svc.do_assign, cid, principal.agent_id, body.assignee_id)
    return ok(await _conversation_detail(request, cid))


class StatusIn(BaseModel):
    status: Literal["open", "pending", "snoozed", "resolved"]
    snoozed_until: datetime | None = None


@api("POST", "/conversations/{id}/status", roles=SUPPORT, body=StatusIn, tag="conversations",
     summary="Change status: open, pending, snoozed (until), resolved")
async def set_status(request: web.Request, principal: Principal, body: StatusIn) -> web.Response:
    cid = path_int(request, "id")
    await require_conversation(request, principal, cid)
    if body.snoozed_until is not None and body.snoozed_until.tzinfo is None:
        raise ApiError(400, "snoozed_until needs a time zone offset", "bad_time")
    await _run(request, conv_svc.do_set_status, cid, principal.agent_id, body.status, body.snoozed_until)
    return ok(await _conversation_detail(request, cid))


class HandlerIn(BaseModel):
    handler: Literal["bot", "queue", "human"]


@api("POST", "/conversations/{id}/handler", roles=SUPPORT, body=HandlerIn, tag="conversations",
     summary="Take over (human), hand back to the bot, or put in the queue")
async def set_handler(request: web.Request, principal: Principal, body: HandlerIn) -> web.Response:
    cid = path_int(request, "id")
    await require_conversation(request, principal, cid)
    await _run(request, conv_svc.do_set_handler, cid, principal.agent_id, body.handler)
    return ok(await _conversation_detail(request, cid))


class UpdateIn(BaseModel):
    priority: Literal["low", "normal", "high", "urgent"] | None = None
    labels: list[str] | None = Field(None, max_length=50)


@api("PATCH", "/conversations/{id}", roles=SUPPORT, body=UpdateIn, summary="Set priority and labels", tag="conversations")
async def update_conversation(request: web.Request, principal: Principal, body: UpdateIn) -> web.Response:
    cid = path_int(request, "id")
    await require_conversation(request, principal, cid)
    await _run(request, conv_svc.do_update, cid, principal.agent_id, priority=body.priority, labels=body.labels)
    return ok(await _conversation_detail(request, cid))


@api("POST", "/conversations/{id}/read", roles=SUPPORT, summary="Mark the conversation read", tag="conversations")
async def mark_read(request: web.Request, principal: Principal) -> web.Response:
    cid = path_int(request, "id")
    await require_conversation(request, principal, cid)
    await _run(request, conv_svc.do_mark_read, cid)
    return ok({"ok": True})


@api("POST", "/messages/{id}/retry", roles=SUPPORT, summary="Queue a failed outbound message again", tag="conversations")
async def retry(request: web.Request, principal: Principal) -> web.Response:
    mid = path_int(request, "id")
    await require_message(request, principal, mid)
    await _run(request, conv_svc.do_retry_delivery, mid, principal.agent_id)
    ctx = request.app[CTX]
    async with ctx.db.session() as s:
        m = await s.get(Message, mid)
    assert m is not None
    return ok(message_json(m))
