"""Agent notifications: recorded in the transaction of their cause, pushed to the agent's open tabs.

Kinds: `assigned` (a conversation was assigned to me by someone else or a rule), `replied` (the
customer wrote in my conversation; one unread entry per conversation counts the messages),
`mention` (@me in a private note), `sla_warning` / `sla_breached` (my conversation is about to
breach or breached), `snooze_ended`. Each row has a dedup key, so an event handled twice (a worker
taking over a dead one's events) notifies once.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from scrm.db.models import Agent, Contact, Conversation, Message, utcnow
from scrm.db.models_desk_ui import Notification
from scrm.services.agents.inbox_access import sees_inbox
from scrm.services.uow import Tx

NOTIFICATION_CREATED = "notification.created"
KINDS = ("assigned", "replied", "mention", "sla_warning", "sla_breached", "snooze_ended", "churn_risk")
SNIPPET = 140
_ASCII_NAME_CHAR = re.compile(r"[A-Za-z0-9_.\-]")


def notification_json(n: Notification) -> dict[str, Any]:
    """A notification as the API and the live feed show it."""
    return {"id": n.id, "agent_id": n.agent_id, "kind": n.kind, "conversation_id": n.conversation_id,
            "ticket_id": n.ticket_id, "message_id": n.message_id, "actor_id": n.actor_id, "data": n.data or {},
            "read": n.read_at is not None, "read_at": n.read_at.isoformat() if n.read_at else None,
            "created_at": n.created_at.isoformat() if n.created_at else None}


def _insert(tx: Tx) -> Any:
    bind = tx.session.bind
    return pg_insert if bind is not None and bind.dialect.name == "postgresql" else sqlite_insert


async def notify(tx: Tx, agent_id: int, kind: str, *, dedup_key: str, conversation_id: int | None = None,
                 ticket_id: int | None = None, message_id: int | None = None, actor_id: int | None = None,
                 data: dict[str, Any] | None = None) -> Notification | None:
    """Record a notification for `agent_id` (once per dedup key) and emit it for the live feed."""
    if kind not in KINDS:
        raise ValueError(f"unknown notification kind {kind!r}")
    now = utcnow()
    stmt = (_insert(tx)(Notification).values(
        agent_id=agent_id, kind=kind, conversation_id=conversation_id, ticket_id=ticket_id, message_id=message_id,
        actor_id=actor_id, data=dict(data or {}), dedup_key=dedup_key[:160], created_at=now)
        .on_conflict_do_nothing(index_elements=["dedup_key"]).returning(Notification.id))
    new_id = (await tx.session.execute(stmt)).scalar()
    if new_id is None:
        return None  # recorded already
    row = await tx.session.get(Notification, new_id)
    assert row is not None
    _emit(tx, row)
    return row


def _emit(tx: Tx, row: Notification) -> None:
    tx.emit(NOTIFICATION_CREATED, agent_id=row.agent_id, notification=notification_json(row))


async def notify_replied(tx: Tx, agent_id: int, conv: Conversation, message: Message, contact: str | None) -> None:
    """The customer wrote in the agent's conversation: bump the unread entry for it, or start one."""
    snippet = (message.text or "")[:SNIPPET]
    row = await tx.session.scalar(
        select(Notification).where(Notification.agent_id == agent_id, Notification.kind == "replied",
                                   Notification.conversation_id == conv.id, Notification.read_at.is_(None))
        .order_by(Notification.id.desc()).limit(1).with_for_update())
    if row is None:
        await notify(tx, agent_id, "replied", dedup_key=f"replied:{message.id}:{agent_id}", conversation_id=conv.id,
                     message_id=message.id, data={"contact": contact, "snippet": snippet, "count": 1})
        return
    if row.message_id is not None and row.message_id >= message.id:
        return  # this message (or a later one) is counted already
    row.data = {**(row.data or {}), "snippet": snippet, "count": int((row.data or {}).get("count", 1)) + 1}
    row.message_id = message.id
    row.created_at = utcnow()
    await tx.session.flush()
    _emit(tx, row)


def find_mentions(text: str, agents: Iterable[tuple[int, str, str]]) -> list[int]:
    """Agent ids @mentioned in `text`, given (id, login, display name) of who can be mentioned.

    A name matches after '@' as a whole: "@li" does not mention "lisa", and of "@王小明" and "@王小"
    the longer name wins. Chinese names need no space after them ("@王小明请看").
    """
    names = sorted(((name, aid) for aid, login, display in agents for name in {login, display} if name),
                   key=lambda p: -len(p[0]))
    taken: list[tuple[int, int]] = []
    found: list[tuple[int, int]] = []
    folded = text.casefold()
    for name, aid in names:
        needle = "@" + name.casefold()
        start = 0
        while (at := folded.find(needle, start)) >= 0:
            end = at + len(needle)
            start = at + 1
            if end < len(text) and _ASCII_NAME_CHAR.match(name[-1]) and _ASCII_NAME_CHAR.match(text[end]):
                continue  # "@li" inside "@lisa"
            if any(a <= at < b or a < end <= b for a, b in taken):
                continue
            taken.append((at, end))
            found.append((at, aid))
    return list(dict.fromkeys(aid for _, aid in sorted(found)))  # in the order they appear


async def record_mentions(tx: Tx, message: Message, conv: Conversation, author_id: int | None) -> list[int]:
    """Notify every agent @mentioned in a private note (never its author); returns their ids."""
    if not message.text or "@" not in message.text:
        return []
    agents = (await tx.session.execute(
        select(Agent.id, Agent.login, Agent.display_name)
        .where(Agent.active.is_(True), Agent.role.in_(("admin", "agent")), sees_inbox(conv.inbox_id)))).all()
    mentioned = [a for a in find_mentions(message.text, [(r[0], r[1], r[2]) for r in agents]) if a != author_id]
    if not mentioned:
        return []
    author = next((r[2] for r in agents if r[0] == author_id), None)
    contact = await tx.session.scalar(select(Contact.name).where(Contact.id == conv.contact_id))
    for agent_id in mentioned:
        await notify(tx, agent_id, "mention", dedup_key=f"mention:{message.id}:{agent_id}", conversation_id=conv.id,
                     message_id=message.id, actor_id=author_id,
                     data={"by": author, "contact": contact, "snippet": message.text[:SNIPPET]})
    return mentioned


async def list_for(session: Any, agent_id: int, *, unread: bool = False, kind: str | None = None,
                   before_id: int | None = None, limit: int = 30) -> tuple[list[Notification], int]:
    """The agent's notifications, newest first, and how many are unread."""
    conds = [Notification.agent_id == agent_id]
    if unread:
        conds.append(Notification.read_at.is_(None))
    if kind:
        conds.append(Notification.kind == kind)
    if before_id:
        conds.append(Notification.id < before_id)
    rows = list((await session.scalars(select(Notification).where(*conds).order_by(Notification.id.desc())
                                       .limit(limit))).all())
    return rows, await unread_count(session, agent_id)


async def unread_count(session: Any, agent_id: int) -> int:
    """How many of the agent's notifications are unread."""
    return int(await session.scalar(select(func.count()).select_from(Notification).where(
        Notification.agent_id == agent_id, Notification.read_at.is_(None))) or 0)


async def mark_read(tx: Tx, agent_id: int, ids: Sequence[int] | None = None, *,
                    conversation_id: int | None = None) -> int:
    """Mark the agent's notifications read (the given ids, a conversation's, or all); returns how many."""
    stmt = update(Notification).where(Notification.agent_id == agent_id, Notification.read_at.is_(None))
    if ids is not None:
        stmt = stmt.where(Notification.id.in_(list(ids)))
    if conversation_id is not None:
        stmt = stmt.where(Notification.conversation_id == conversation_id)
    result = await tx.session.execute(stmt.values(read_at=utcnow()))
    count = int(result.rowcount or 0)  # type: ignore[attr-defined]
    if count:
        tx.emit("notification.read", agent_id=agent_id, ids=list(ids) if ids is not None else None,
                conversation_id=conversation_id)
    return count
