"""A batch's writes: its message rows, and the clocks its messages move, each in one statement.

Messages: on PostgreSQL one `INSERT ... SELECT FROM unnest(...)` whose text is the same for every
batch size (a multi-row VALUES list is a new statement, prepared and planned again, for each size).

Clocks: every inbound message moves three rows: its contact was seen, its identity wrote in (the channel's
reply window opens) and its conversation moved (activity, preview, unread count, waiting since).
Left to the ORM that is one UPDATE per row and message, executed one by one: about three quarters
of a batch's statements on PostgreSQL. Here they are collected per row while the batch is built
and written, after the ORM's own changes (a reopened conversation, a new name), by one statement on
PostgreSQL (three UPDATEs over `unnest`ed arrays, in data-modifying CTEs) and one executemany per
table on SQLite. The unread count and "waiting since" are moved relative to the row as stored, so
an agent reading the conversation meanwhile is not overwritten with a stale count.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Integer,
    Table,
    Text,
    bindparam,
    func,
    insert,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from scrm.db.models import Contact, ContactIdentity, Conversation, Message
from scrm.domain import InboundMessage
from scrm.services.conversations.ingest_rules import preview, wrote_in

__all__ = ["BatchClocks", "insert_messages", "preview"]  # preview: for the outbox and WeCom

# Column -> (array element type, SQL cast of the element); the keys are those of ingest_rules.message_values.
_MESSAGE_COLUMNS: dict[str, tuple[Any, str]] = {
    "conversation_id": (BigInteger, "bigint"), "inbox_id": (BigInteger, "bigint"), "direction": (Text, "text"),
    "sender_kind": (Text, "text"), "content_type": (Text, "text"), "text": (Text, "text"),
    "attachments": (Text, "json"), "external_id": (Text, "text"), "reply_to_id": (BigInteger, "bigint"),
    "payload": (Text, "json"), "created_at": (DateTime(timezone=True), "timestamptz"),
    "sent_at": (DateTime(timezone=True), "timestamptz"), "edit_history": (Text, "json"), "private": (Boolean, "boolean"),
}
def _table(model: Any) -> Table:
    """A model's table, typed as one (`__table__` is typed as any FromClause)."""
    return cast(Table, model.__table__)


_JSON_COLUMNS = {name for name, (_, cast) in _MESSAGE_COLUMNS.items() if cast == "json"}
_INSERT_MESSAGES = text(
    f"INSERT INTO messages ({', '.join(_MESSAGE_COLUMNS)}) "
    f"SELECT {', '.join(f'v.{n}::{cast}' for n, (_, cast) in _MESSAGE_COLUMNS.items())} "
    f"FROM unnest({', '.join(f':{n}' for n in _MESSAGE_COLUMNS)}) AS v({', '.join(_MESSAGE_COLUMNS)}) "
    "RETURNING id, external_id"
).bindparams(*[bindparam(n, type_=ARRAY(t)) for n, (t, _) in _MESSAGE_COLUMNS.items()])


async def insert_messages(session: AsyncSession, rows: Sequence[dict[str, Any]], *, postgresql: bool) -> list[int]:
    """Insert inbound message rows (ingest_rules.message_values, distinct external ids); their ids, in order."""
    if not postgresql:
        table = _table(Message)
        return list((await session.execute(
            insert(table).returning(table.c.id, sort_by_parameter_order=True), list(rows))).scalars().all())
    columns: dict[str, list[Any]] = {name: [] for name in _MESSAGE_COLUMNS}
    for row in rows:
        for name, values in columns.items():
            value = row.get(name, False if name == "private" else None)
            values.append(json.dumps(value) if name in _JSON_COLUMNS else value)
    ids = {external_id: id_ for id_, external_id in await session.execute(_INSERT_MESSAGES, columns)}
    return [ids[row["external_id"]] for row in rows]


_CLOCKS_POSTGRESQL = text("""
WITH seen AS (
    UPDATE contacts SET last_seen_at = v.at, updated_at = v.at
    FROM unnest(:contact_ids, :contact_ats) AS v(id, at) WHERE contacts.id = v.id
), wrote AS (
    UPDATE contact_identities SET last_inbound_at = v.at
    FROM unnest(:identity_ids, :identity_ats) AS v(id, at) WHERE contact_identities.id = v.id
)
UPDATE conversations SET last_activity_at = v.at, last_message_preview = v.preview,
    unread_count = conversations.unread_count + v.added, waiting_since = coalesce(conversations.waiting_since, v.first_at)
FROM unnest(:conversation_ids, :conversation_ats, :previews, :added, :first_ats) AS v(id, at, preview, added, first_at)
WHERE conversations.id = v.id
""").bindparams(
    bindparam("contact_ids", type_=ARRAY(BigInteger)), bindparam("contact_ats", type_=ARRAY(DateTime(timezone=True))),
    bindparam("identity_ids", type_=ARRAY(BigInteger)), bindparam("identity_ats", type_=ARRAY(DateTime(timezone=True))),
    bindparam("conversation_ids", type_=ARRAY(BigInteger)), bindparam("conversation_ats", type_=ARRAY(DateTime(timezone=True))),
    bindparam("previews", type_=ARRAY(Text)), bindparam("added", type_=ARRAY(Integer)),
    bindparam("first_ats", type_=ARRAY(DateTime(timezone=True))),
)

_conversations = _table(Conversation).c
_SQLITE_CONVERSATIONS = update(_table(Conversation)).where(_conversations.id == bindparam("b_id")).values(
    last_activity_at=bindparam("b_at"), last_message_preview=bindparam("b_preview"),
    unread_count=_conversations.unread_count + bindparam("b_added"),
    waiting_since=func.coalesce(_conversations.waiting_since, bindparam("b_first_at", type_=_conversations.waiting_since.type)),
)
_SQLITE_CONTACTS = update(_table(Contact)).where(_table(Contact).c.id == bindparam("b_id")).values(
    last_seen_at=bindparam("b_at"), updated_at=bindparam("b_at"))
_SQLITE_IDENTITIES = update(_table(ContactIdentity)).where(_table(ContactIdentity).c.id == bindparam("b_id")).values(
    last_inbound_at=bindparam("b_at"))


@dataclass
class _Activity:
    conversation: Conversation
    first_at: datetime
    at: datetime
    preview: str
    added: int = 0


class BatchClocks:
    """The clocks of the messages added so far, per row, until `write`."""

    def __init__(self) -> None:
        self._contacts: dict[int, tuple[Contact, datetime]] = {}
        self._identities: dict[int, tuple[ContactIdentity, datetime]] = {}
        self._conversations: dict[int, _Activity] = {}

    def move(self, msg: InboundMessage, identity: ContactIdentity, contact: Contact, conversation: Conversation,
             now: datetime) -> None:
        """A new inbound message: the contact was seen, the conversation moved and waits for an answer.
        The rare changes (ingest_rules.wrote_in: reachable again, email participants) go through the ORM."""
        self._contacts[contact.id] = (contact, now)
        self._identities[identity.id] = (identity, now)
        activity = self._conversations.get(conversation.id)
        if activity is None:
            activity = self._conversations[conversation.id] = _Activity(conversation, now, now, "")
        activity.at = now
        activity.preview = preview(msg.text, msg.content_type)
        activity.added += 1
        wrote_in(msg, identity, conversation)

    async def write(self, session: AsyncSession, *, postgresql: bool) -> None:
        """Write the clocks collected so far (after the session's flush), and mirror them on the objects."""
        if not self._conversations and not self._contacts:
            return
        contacts = sorted(self._contacts.items())  # rows in id order, as the ORM would update them
        identities = sorted(self._identities.items())
        activities = sorted(self._conversations.items())
        if postgresql:
            await session.execute(_CLOCKS_POSTGRESQL, {
                "contact_ids": [i for i, _ in contacts], "contact_ats": [at for _, (_, at) in contacts],
                "identity_ids": [i for i, _ in identities], "identity_ats": [at for _, (_, at) in identities],
                "conversation_ids": [i for i, _ in activities], "conversation_ats": [a.at for _, a in activities],
                "previews": [a.preview for _, a in activities], "added": [a.added for _, a in activities],
                "first_ats": [a.first_at for _, a in activities],
            })
        else:
            await session.execute(_SQLITE_CONTACTS, [{"b_id": i, "b_at": at} for i, (_, at) in contacts])
            await session.execute(_SQLITE_IDENTITIES, [{"b_id": i, "b_at": at} for i, (_, at) in identities])
            await session.execute(_SQLITE_CONVERSATIONS, [
                {"b_id": i, "b_at": a.at, "b_preview": a.preview, "b_added": a.added, "b_first_at": a.first_at}
                for i, a in activities
            ])
        # The objects stay in the session (the batch's later messages, the single path): same values, no history.
        for contact, at in self._contacts.values():
            _committed(contact, last_seen_at=at, updated_at=at)
        for identity, at in self._identities.values():
            _committed(identity, last_inbound_at=at)
        for activity in self._conversations.values():
            conv = activity.conversation
            _committed(conv, last_activity_at=activity.at, last_message_preview=activity.preview,
                       unread_count=(conv.unread_count or 0) + activity.added,
                       waiting_since=conv.waiting_since or activity.first_at)
        self._contacts.clear()
        self._identities.clear()
        self._conversations.clear()


def _committed(obj: Any, **values: Any) -> None:
    for key, value in values.items():
        set_committed_value(obj, key, value)
