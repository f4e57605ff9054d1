"""Web chat reads and small writes: a visitor's history, read receipts, presence and blocking.

Everything is keyed by the visitor's contact identity (inbox + visitor id from a signed token), never
by a contact id the browser names.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    Integer,
    and_,
    bindparam,
    case,
    exists,
    func,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY

from channels.web.tokens import file_path
from scrm import events as ev
from scrm.db.models import Agent, AgentSession, Contact, ContactIdentity, Conversation, Message, utcnow
from scrm.services.agents import audit
from scrm.services.uow import Tx, unit_of_work
from scrm.services.webchat.facts import identities_select

if TYPE_CHECKING:
    from scrm.context import AppContext

PAGE = 50
# Ids are drawn before the commit: a bot reply written in a consumer's batch can commit after a
# customer message with a higher id was shown. A reader that keeps "the highest id shown" as its
# cursor also looks back this long for rows it has not shown (the widget de-duplicates by id).
LATE_COMMIT = timedelta(seconds=60)
SHOWN_OUT = ("queued", "sending", "sent", "delivered", "read")  # failed / cancelled never reached the visitor
_PRESENCE_TTL = 15.0


def iso(value: Any) -> str | None:
    """A datetime as ISO 8601 (None stays None)."""
    return value.isoformat() if value is not None else None


def client_id_of(external_id: str | None) -> str | None:
    """The widget's own id of a message it sent (external id `w:<visitor>:<client id>`)."""
    if external_id and external_id.startswith("w:"):
        return external_id.rsplit(":", 1)[1]
    return None


def message_external_id(visitor: str, client_id: str) -> str:
    """The dedup key of a visitor's message: a resend after a reconnect is stored once."""
    return f"w:{visitor}:{client_id}"


def visitor_message(m: Any, agent_name: str | None, inbox_id: int, token_key: str) -> dict[str, Any]:
    """A message as the visitor's widget shows it (no internal ids of agents, no private data)."""
    out: dict[str, Any] = {"id": m.id, "conversation_id": m.conversation_id,
                           "from": "visitor" if m.direction == "in" else m.sender_kind,
                           "text": m.text, "content_type": m.content_type, "at": iso(m.created_at)}
    if m.sender_kind == "agent":
        out["agent"] = agent_name
    payload = m.payload or {}
    if m.direction == "out":
        out["status"] = "read" if m.delivery_status == "read" else "sent"
        choices = payload.get("choices") or []
        if choices:
            out["choices"] = [{"label": str(c.get("label", "")), "payload": str(c.get("payload", ""))}
                              for c in choices if isinstance(c, dict)]
    else:
        client_id = client_id_of(m.external_id)
        if client_id:
            out["client_id"] = client_id
    files = []
    for a in m.attachments or []:
        if not isinstance(a, dict) or not a.get("storage_key"):
            continue
        files.append({"kind": a.get("kind") or "file", "filename": a.get("filename"), "mime_type": a.get("mime_type"),
                      "size": a.get("size"), "url": file_path(token_key, inbox_id, str(a["storage_key"]))})
    if files:
        out["attachments"] = files
    return out


def _visible() -> Any:
    return and_(Message.private.is_(False), Message.content_type != "event",
                (Message.direction == "in") | Message.delivery_status.in_(SHOWN_OUT))


async def identity_of(ctx: AppContext, inbox_id: int, visitor: str) -> ContactIdentity | None:
    """The visitor's contact identity, or None before their first message."""
    async with ctx.db.session() as s:
        return await s.scalar(select(ContactIdentity).where(ContactIdentity.inbox_id == inbox_id,
                                                            ContactIdentity.external_id == visitor))


async def claim_anonymous(ctx: AppContext, inbox_id: int, anonymous: str, identified: str) -> str | None:
    """A visitor who chatted anonymously signs in on the website: their chat becomes the signed-in user's.

    If the user has no chat identity yet, the anonymous identity is re-keyed to the user (the open
    conversation simply continues); otherwise the anonymous contact is merged into the user's contact, so
    agents see one person with both conversations. Returns "claimed", "merged" or None (nothing to do)."""
    from scrm.services.contacts import (
        merge as contacts_merge,  # merging is rare; keep the widget's hot path lean
    )

    async with unit_of_work(ctx) as tx:
        anon = await tx.session.scalar(select(ContactIdentity).where(
            ContactIdentity.inbox_id == inbox_id, ContactIdentity.external_id == anonymous).with_for_update())
        if anon is None or is_blocked(anon):
            return None
        known = await tx.session.scalar(select(ContactIdentity).where(
            ContactIdentity.inbox_id == inbox_id, ContactIdentity.external_id == identified))
        if known is None:
            anon.external_id = identified
            audit.record(tx, None, "webchat.identified", "contact", anon.contact_id, identity_id=anon.id)
            tx.emit(ev.CONTACT_UPDATED, contact_id=anon.contact_id, identity_id=anon.id, change="identified")
            return "claimed"
        target = await tx.session.get(Contact, known.contact_id)
        source = await tx.session.get(Contact, anon.contact_id)
        if target is None or source is None or target.id == source.id or target.merged_into_id or source.merged_into_id:
            return None
        await contacts_merge.merge(tx, target.id, source.id, None)
        return "merged"


def _message_select() -> Any:
    # Plain rows, not ORM objects: every push to a visitor runs this, and the mapping cost more than the query.
    m = Message.__table__.c
    return (select(m.id, m.conversation_id, m.direction, m.sender_kind, m.text, m.content_type, m.created_at,
                   m.payload, m.delivery_status, m.external_id, m.attachments, Agent.display_name,
                   Conversation.identity_id)
            .join(Conversation, Conversation.id == Message.conversation_id)
            .outerjoin(Agent, Agent.id == Message.sender_agent_id)
            .where(_visible()))


async def messages(ctx: AppContext, inbox_id: int, token_key: str, identity_id: int, *, after: int = 0,
                   before: int | None = None, limit: int = PAGE,
                   recent_since: datetime | None = None) -> list[dict[str, Any]]:
    """The visitor's messages across their conversations, oldest first: newer than `after` (and, with
    `recent_since`, any created since then: see LATE_COMMIT), or the page before `before` (history on reload)."""
    stmt = _message_select().where(Conversation.identity_id == identity_id)
    if before is not None:
        stmt = stmt.where(Message.id < before).order_by(Message.id.desc()).limit(limit)
    else:
        newer = Message.id > after
        stmt = stmt.where(or_(newer, Message.created_at >= recent_since) if recent_since else newer)
        stmt = stmt.order_by(Message.id).limit(limit)
    rows = await ctx.db.one_statement(stmt)
    if before is not None:
        rows = list(reversed(rows))
    return [visitor_message(row, row.display_name, inbox_id, token_key) for row in rows]


@functools.cache
def _many_select(sqlite: bool) -> Any:
    """messages_of_many()'s statement, built once: building it (SQLAlchemy's expression objects) cost more
    than running it. On PostgreSQL, one SQL text for any number of visitors (one prepared statement; an
    IN list renders a new text, and prepares it again, for each length): each visitor (unnest of the
    arrays `ids`, `afters`) -> their conversations (by identity) -> each conversation's rows after that
    visitor's own cursor, through the (conversation_id, id) index (a LATERAL read per conversation). The
    plan is fixed by the statement's shape: with the whole batch's lowest cursor (a socket that has shown
    nothing yet: 0) and no table statistics (a new install, autovacuum not run yet), PostgreSQL chose a
    scan of every message of the site per read (bench/web_chat.py: 30 ms at 12,000 messages, and growing
    with the table; the reconnect's 2,000 catch-ups queued behind them)."""
    if sqlite:
        return (_message_select()
                .where(Conversation.identity_id.in_(bindparam("ids", expanding=True)),
                       or_(Message.id > bindparam("after", type_=BigInteger),
                           Message.created_at >= bindparam("since", type_=DateTime(timezone=True))))
                .order_by(Message.id).limit(bindparam("limit", type_=Integer)))
    m, c = Message.__table__.c, Conversation.__table__.c
    limit = bindparam("limit", type_=Integer)
    wanted = (func.unnest(bindparam("ids", type_=ARRAY(BigInteger)), bindparam("afters", type_=ARRAY(BigInteger)))
              .table_valued("identity_id", "after").render_derived(name="wanted"))
    # Each visitor's conversations by the identity index, whatever the table's size: OFFSET 0 keeps PostgreSQL
    # from merging the subquery into a hash join over every conversation of the site.
    convs = (select(c.id, c.identity_id).where(c.identity_id == wanted.c.identity_id).offset(0).lateral("c"))
    rows = (select(m.id, m.conversation_id, m.direction, m.sender_kind, m.text, m.content_type, m.created_at,
                   m.payload, m.delivery_status, m.external_id, m.attachments, m.sender_agent_id)
            .where(m.conversation_id == convs.c.id, _visible(),
                   or_(m.id > wanted.c.after, m.created_at >= bindparam("since", type_=DateTime(timezone=True))))
            .order_by(m.id).limit(limit).lateral("m"))
    return (select(rows.c.id, rows.c.conversation_id, rows.c.direction, rows.c.sender_kind, rows.c.text,
                   rows.c.content_type, rows.c.created_at, rows.c.payload, rows.c.delivery_status, rows.c.external_id,
                   rows.c.attachments, Agent.display_name, convs.c.identity_id)
            .select_from(wanted.join(convs, true()).join(rows, true())
                         .outerjoin(Agent, Agent.id == rows.c.sender_agent_id))
            .order_by(rows.c.id).limit(limit))


async def messages_of_many(ctx: AppContext, inbox_id: int, token_key: str, afters: dict[int, int], *,
                           recent_since: datetime, limit: int,
                           ) -> dict[int, list[tuple[datetime, dict[str, Any]]]] | None:
    """messages(after=..., recent_since=...) of many visitors (identity id -> after) in one statement: the
    live pushes of a busy site arrive together. Each visitor's rows, oldest first, with their creation time
    (for each of a visitor's connections to pick the rows after its own cursor). None when `limit` rows
    came back: read them one by one."""
    sqlite = ctx.db.is_sqlite
    cursors = {"after": min(afters.values())} if sqlite else {"afters": list(afters.values())}
    rows = await ctx.db.hot_read(_many_select(sqlite), {
        "ids": list(afters), **cursors, "since": recent_since, "limit": limit})
    if len(rows) >= limit:
        return None
    out: dict[int, list[tuple[datetime, dict[str, Any]]]] = {}
    for row in rows:
        if row.id > afters[row.identity_id] or row.created_at >= recent_since:
            out.setdefault(row.identity_id, []).append(
                (row.created_at, visitor_message(row, row.display_name, inbox_id, token_key)))
    return out


async def identities_of(ctx: AppContext, inbox_id: int, visitors: Iterable[str]) -> dict[str, int]:
    """The contact identity ids of these visitors of an inbox (those who have one yet)."""
    rows = await ctx.db.hot_read(identities_select(ctx.db.is_sqlite), {"inbox": inbox_id, "visitors": list(visitors)})
    return {row.external_id: row.id for row in rows}


async def latest_messages(ctx: AppContext, inbox_id: int, token_key: str, identity_id: int) -> list[dict[str, Any]]:
    """The last page of the visitor's history (what a reload shows)."""
    return await messages(ctx, inbox_id, token_key, identity_id, before=2**62)


async def conversation_state(ctx: AppContext, identity_id: int) -> dict[str, Any] | None:
    """The visitor's latest conversation: status, who answers, and up to which of the visitor's
    messages an agent has read (the widget's read receipts)."""
    return (await conversation_states(ctx, [identity_id])).get(identity_id)


def _read_upto_wanted(conv: Any) -> bool:
    """Agents' read receipts matter once an agent has (or may take) the conversation."""
    return conv.assignee_id is not None or conv.handler == "human"


@functools.cache
def _states_select(sqlite: bool) -> Any:
    """conversation_states()'s statement, built once. On PostgreSQL one SQL text for any number of visitors:
    each visitor (unnest of `ids`) -> their latest conversation (a LATERAL read through the identity index;
    ordered by `id + 0`, so the planner cannot walk the primary key backwards filtering on the identity, its
    choice before the table's first ANALYZE), with its read receipt (`read_upto`: the newest `unread_count`
    customer messages are unread, the one before them was read) in the same statement: after a blip every
    socket reconnects and asks for its state, and a query per handed-over conversation held up the batch.
    (`identity_id = ANY(ids)` read every conversation of the site for a batch of 200 reconnects.)"""
    c = Conversation.__table__.c
    columns: list[Any] = [c.id, c.identity_id, c.status, c.handler, c.assignee_id, c.unread_count]
    if sqlite:
        return (select(*columns).where(c.identity_id.in_(bindparam("ids", expanding=True))).order_by(c.id))
    m = Message.__table__.c
    upto = (select(m.id).where(m.conversation_id == c.id, m.direction == "in")
            .order_by(m.id.desc()).offset(func.coalesce(c.unread_count, 0)).limit(1).scalar_subquery())
    columns.append(case((or_(c.assignee_id.is_not(None), c.handler == "human"), upto)).label("read_upto"))
    wanted = func.unnest(bindparam("ids", type_=ARRAY(BigInteger))).table_valued("identity_id").render_derived(
        name="wanted")
    latest = (select(*columns).where(c.identity_id == wanted.c.identity_id)
              .order_by((c.id + 0).desc()).limit(1).lateral("latest"))
    return select(*latest.c).select_from(wanted.join(latest, true()))


async def conversation_states(ctx: AppContext, identity_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    """conversation_state() of many visitors: their conversations in one statement."""
    sqlite = ctx.db.is_sqlite
    rows = await ctx.db.hot_read(_states_select(sqlite), {"ids": list(identity_ids)})
    latest = {row.identity_id: row for row in rows}  # a visitor has a few conversations; the last one counts
    # (PostgreSQL reads only that one; SQLite reads them all in id order)
    out: dict[int, dict[str, Any]] = {}
    for identity_id, conv in latest.items():
        read_upto = None
        if not sqlite:
            read_upto = conv.read_upto
        elif _read_upto_wanted(conv):  # SQLite cannot take the OFFSET from the outer row: one query each
            rows = await ctx.db.one_statement(select(Message.id).where(Message.conversation_id == conv.id, Message.direction == "in")
                               .order_by(Message.id.desc()).offset(conv.unread_count or 0).limit(1))
            read_upto = rows[0].id if rows else None
        out[identity_id] = {"id": conv.id, "status": conv.status, "handler": conv.handler, "agent_read_upto": read_upto}
    return out


async def mark_read(ctx: AppContext, inbox_id: int, identity_id: int, upto: int) -> int:
    """The visitor saw every message up to `upto`: agents see "read" on their sent messages."""
    async with unit_of_work(ctx) as tx:
        convs = select(Conversation.id).where(Conversation.identity_id == identity_id).scalar_subquery()
        rows = (await tx.session.execute(
            update(Message)
            .where(Message.inbox_id == inbox_id, Message.conversation_id.in_(convs), Message.direction == "out",
                   Message.id <= upto, Message.delivery_status.in_(("sent", "delivered")))
            .values(delivery_status="read")
            .returning(Message.id, Message.conversation_id)
            .execution_options(synchronize_session=False))).all()
        for row in rows[-50:]:  # the newest ones; an old backlog does not flood the agents' sockets
            tx.emit(ev.MESSAGE_UPDATED, message_id=row.id, conversation_id=row.conversation_id)
    return len(rows)


async def agents_online(ctx: AppContext) -> bool:
    """Is any support agent available (availability online and logged in)? Cached for a few seconds."""
    cached = ctx.extras.get("webchat_presence")
    now = time.monotonic()
    if cached and now - cached[0] < _PRESENCE_TTL:
        return bool(cached[1])
    async with ctx.db.session() as s:
        online = bool(await s.scalar(select(exists().where(
            Agent.id == AgentSession.agent_id, Agent.active.is_(True), Agent.role.in_(("admin", "agent")),
            Agent.availability == "online", AgentSession.expires_at > utcnow()))))
    ctx.extras["webchat_presence"] = (now, online)
    return online


async def visitor_name(ctx: AppContext, identity_id: int) -> str | None:
    """The name the visitor gave (pre-chat form or the website), for the agents' typing line."""
    async with ctx.db.session() as s:
        return await s.scalar(select(Contact.name).join(ContactIdentity, ContactIdentity.contact_id == Contact.id)
                              .where(ContactIdentity.id == identity_id))


def is_blocked(identity: ContactIdentity | None) -> bool:
    """Has an agent blocked this visitor?"""
    return bool(identity is not None and (identity.attributes or {}).get("blocked"))


async def set_blocked(tx: Tx, conversation_id: int, agent_id: int, blocked: bool) -> tuple[ContactIdentity, Contact]:
    """Block (or unblock) the visitor of a web chat conversation; raises LookupError/ValueError."""
    conv = await tx.session.get(Conversation, conversation_id)
    if conv is None:
        raise LookupError("conversation not found")
    identity = await tx.session.get(ContactIdentity, conv.identity_id, with_for_update=True)
    contact = await tx.session.get(Contact, conv.contact_id)
    assert identity is not None and contact is not None
    attrs = dict(identity.attributes or {})
    if blocked:
        attrs |= {"blocked": True, "blocked_at": utcnow().isoformat(), "blocked_by": agent_id}
    else:
        for key in ("blocked", "blocked_at", "blocked_by"):
            attrs.pop(key, None)
    identity.attributes = attrs
    audit.record(tx, agent_id, "webchat.block" if blocked else "webchat.unblock", "contact", contact.id,
                 conversation_id=conv.id, visitor=identity.external_id)
    tx.emit(ev.CONTACT_UPDATED, contact_id=contact.id, identity_id=identity.id, change="blocked" if blocked else "unblocked")
    return identity, contact


def recent(seconds: float) -> Any:
    """A UTC time `seconds` ago (for queries)."""
    return utcnow() - timedelta(seconds=seconds)
