"""The outbox: every outbound message is a delivery row, committed before any channel is called."""

from __future__ import annotations

import functools
import os
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import String, Update, bindparam, case, insert, null, text, update
from sqlalchemy.orm import ORMExecuteState, Session
from sqlalchemy.orm.attributes import set_committed_value

from scrm import events as ev
from scrm.db.database import SharedTransaction, shared_for
from scrm.db.models import Base, ContactIdentity, Conversation, Delivery, Inbox, Message, utcnow
from scrm.domain import PASSIVE_REPLY_UNTIL, Attachment, Choice, OutboundMessage
from scrm.event_rows import insert_rows, insert_together, statement_tables
from scrm.services.conversations.ingest_writes import preview
from scrm.services.uow import Tx


def new_idempotency_key() -> str:
    return os.urandom(16).hex()  # random like uuid4().hex, cheaper (scrm/events.py's Event ids)


def enqueue_delivery(
    tx: Tx,
    *,
    inbox: Inbox,
    identity: ContactIdentity,
    conversation_id: int | None,
    message_id: int | None,
    text: str | None,
    content_type: str = "text",
    attachments: Sequence[dict[str, Any]] = (),
    choices: Sequence[Choice] = (),
    metadata: dict[str, Any] | None = None,
    automatic: bool = False,
    reply_to_external_id: str | None = None,
    kind: str = "message",
    not_before: datetime | None = None,
) -> Delivery:
    """Add a queued delivery row in the caller's transaction (the worker picks it up after commit).

    `not_before` keeps the worker away until then (a WeChat callback waiting to carry it as its
    passive reply; see passive_hold); the passive claim takes queued rows whenever they are due.
    """
    delivery = Delivery(**_delivery_values(inbox=inbox, identity=identity, conversation_id=conversation_id,
                                           message_id=message_id, text=text, content_type=content_type,
                                           attachments=attachments, choices=choices, metadata=metadata,
                                           automatic=automatic, reply_to_external_id=reply_to_external_id, kind=kind,
                                           not_before=not_before))
    deferred = _deferred_deliveries(tx) if message_id is not None else None
    if deferred is not None and deferred.get("message") == message_id:
        deferred["rows"].append(delivery)  # inserted after the batch's messages (insert_deferred_deliveries)
    else:
        tx.session.add(delivery)
    tx.emit(ev.OUTBOX_ENQUEUED, inbox_id=inbox.id, conversation_id=conversation_id)
    return delivery


def _delivery_values(
    *, inbox: Inbox, identity: ContactIdentity, conversation_id: int | None, message_id: int | None,
    text: str | None, content_type: str, attachments: Sequence[dict[str, Any]], choices: Sequence[Choice],
    metadata: dict[str, Any] | None, automatic: bool, reply_to_external_id: str | None, kind: str,
    not_before: datetime | None,
) -> dict[str, Any]:
    """A queued delivery row's columns (an ORM object's or a batch's Core row)."""
    now = utcnow()
    return {
        "idempotency_key": new_idempotency_key(),
        "inbox_id": inbox.id,
        "message_id": message_id,
        "conversation_id": conversation_id,
        "identity_id": identity.id,
        "recipient_id": identity.external_id,
        "ordering_key": f"{inbox.id}:{identity.external_id}",
        "kind": kind,
        "status": "queued",
        "attempts": 0,
        "next_attempt_at": max(now, not_before) if not_before is not None else now,
        "claimed_by": None,  # a consumer batch's hand-over may insert it `sending` (delivery/handoff.py)
        "lease_until": None,
        "payload": {
            "text": text,
            "content_type": content_type,
            "attachments": list(attachments),
            "choices": [{"label": c.label, "payload": c.payload} for c in choices],
            "metadata": metadata or {},
            "automatic": automatic,
            "reply_to_external_id": reply_to_external_id,
            "recipient_data": dict(identity.attributes or {}),
        },
        "created_at": now,
    }


def _clocks_statement(*, answers: bool, returning: bool = True) -> Update:
    c = Conversation.__table__.c
    now = bindparam("b_now", type_=c.last_activity_at.type)
    later = c.last_activity_at > now
    values: dict[str, Any] = {
        "last_activity_at": case((later, c.last_activity_at), else_=now),
        "last_message_preview": case((later, c.last_message_preview), else_=bindparam("b_preview", type_=String)),
    }
    if answers:
        values["waiting_since"] = case((later, c.waiting_since), else_=null())
    stmt = update(Conversation.__table__).where(c.id == bindparam("b_id")).values(values)
    return stmt.returning(c.last_activity_at, c.last_message_preview, c.waiting_since) if returning else stmt


_CLOCKS = {answers: _clocks_statement(answers=answers) for answers in (True, False)}  # built once, not per reply
# A consumer batch's clocks, written together just before it commits (event_batch.write_deferred).
CLOCKS_DEFERRED = {answers: _clocks_statement(answers=answers, returning=False) for answers in (True, False)}


async def _move_clocks(tx: Tx, conversation: Conversation, now: datetime, text_preview: str, *, answers: bool) -> None:
    """The conversation moved to this message and, from an agent or the bot, is answered; unless ingest
    stored a later message meanwhile (it takes no turn on the conversation, see conversation_turns):
    then that message stays the latest and keeps the conversation waiting."""
    params = {"b_id": conversation.id, "b_now": now, "b_preview": text_preview}
    shared = shared_for(tx.session)
    if shared is not None and conversation.id in shared.turns:
        # A consumer's batch: the row is written just before the batch commits, so ingest, which moves
        # these clocks too, never waits for the rest of the batch behind its row lock. The statement is
        # relative to the stored row then; the object shows what it would make of the row loaded now.
        shared.held_back.setdefault(conversation.id, []).append(("clocks", answers, params))
        stored = conversation.last_activity_at
        if stored is not None and stored > now:
            return
        set_committed_value(conversation, "last_activity_at", now)
        set_committed_value(conversation, "last_message_preview", text_preview)
        if answers:
            set_committed_value(conversation, "waiting_since", None)
        return
    row = (await tx.session.execute(_CLOCKS[answers], params)).one()
    # Mirrored on the object without history, so the ORM does not write them again.
    for key, value in zip(("last_activity_at", "last_message_preview", "waiting_since"), row, strict=True):
        set_committed_value(conversation, key, value)


async def enqueue_message(
    tx: Tx,
    *,
    inbox: Inbox,
    conversation: Conversation,
    identity: ContactIdentity,
    sender_kind: str,
    text: str | None,
    agent_id: int | None = None,
    content_type: str = "text",
    attachments: Sequence[dict[str, Any]] = (),
    choices: Sequence[Choice] = (),
    metadata: dict[str, Any] | None = None,
    automatic: bool = False,
    reply_to: Message | None = None,
    payload: dict[str, Any] | None = None,
    not_before: datetime | None = None,
) -> tuple[Message, Delivery]:
    """Store an outbound message in the conversation and queue its delivery (bot or agent).

    `payload` is kept on the message (e.g. which FAQ entry the bot answered with), not sent.
    """
    now = utcnow()
    batch_id = await batch_message_id(tx)
    message = Message(**_message_values(batch_id, conversation, inbox, sender_kind, agent_id, content_type, text,
                                        attachments, reply_to.id if reply_to else None, choices, payload, now))
    tx.session.add(message)
    if batch_id is None:
        await tx.session.flush()  # its id, for the delivery and the event
    else:
        _deferred_deliveries(tx)["message"] = batch_id  # type: ignore[index]
    delivery = enqueue_delivery(
        tx,
        inbox=inbox,
        identity=identity,
        conversation_id=conversation.id,
        message_id=message.id,
        text=text,
        content_type=content_type,
        attachments=attachments,
        choices=choices,
        metadata=metadata,
        automatic=automatic,
        reply_to_external_id=reply_to.external_id if reply_to else None,
        not_before=not_before,
    )
    if batch_id is None:
        await tx.session.flush()  # callers may read the delivery's id (a consumer's batch: none does)
    await _move_clocks(tx, conversation, now, preview(text, content_type), answers=sender_kind in ("agent", "bot"))
    if sender_kind == "agent" and conversation.first_reply_at is None:
        conversation.first_reply_at = now
    tx.emit(
        ev.MESSAGE_CREATED,
        message_id=message.id,
        conversation_id=conversation.id,
        inbox_id=inbox.id,
        channel=inbox.channel_type,
        direction="out",
        sender_kind=sender_kind,
        handler=conversation.handler,
        content_type=content_type,
    )
    # What moved, so listeners can tell (the desk re-picks an SLA only when the priority changed).
    tx.emit(ev.CONVERSATION_UPDATED, conversation_id=conversation.id, inbox_id=inbox.id, changed=["activity"])
    return message, delivery


def _message_values(
    message_id: int | None, conversation: Conversation, inbox: Inbox, sender_kind: str, agent_id: int | None,
    content_type: str, text: str | None, attachments: Sequence[dict[str, Any]], reply_to_id: int | None,
    choices: Sequence[Choice], payload: dict[str, Any] | None, now: datetime,
) -> dict[str, Any]:
    """An outbound message row's columns (an ORM object's or a batch's Core row)."""
    return {
        "id": message_id,
        "conversation_id": conversation.id,
        "inbox_id": inbox.id,
        "direction": "out",
        "sender_kind": sender_kind,
        "sender_agent_id": agent_id,
        "content_type": content_type,
        "text": text,
        "attachments": list(attachments),
        "reply_to_id": reply_to_id,
        "delivery_status": "queued",
        "private": False,
        "payload": ({"choices": [{"label": c.label, "payload": c.payload} for c in choices]} if choices else {})
        | (payload or {}),
        "created_at": now,
        "edit_history": [],
    }


async def enqueue_batch_message(
    tx: Tx,
    *,
    inbox: Inbox,
    conversation: Conversation,
    identity: ContactIdentity,
    sender_kind: str,
    text: str | None,
    choices: Sequence[Choice] = (),
    automatic: bool = False,
    payload: dict[str, Any] | None = None,
    not_before: datetime | None = None,
) -> int | None:
    """enqueue_message for the bot or the system in a consumer's batch on PostgreSQL: the message and its
    delivery are plain rows, inserted with the batch's other rows (BatchRows), not ORM objects flushed by
    the unit of work. Returns the message's id; None outside such a batch (call enqueue_message then)."""
    rows = batch_rows(tx)
    if rows is None:
        return None
    message_id = await batch_message_id(tx)
    assert message_id is not None  # the same batches as batch_rows
    now = utcnow()
    rows.add("messages", _message_values(message_id, conversation, inbox, sender_kind, None, "text", text, (),
                                         None, choices, payload, now))
    values = _delivery_values(inbox=inbox, identity=identity, conversation_id=conversation.id, message_id=message_id,
                              text=text, content_type="text", attachments=(), choices=choices, metadata=None,
                              automatic=automatic, reply_to_external_id=None, kind="message", not_before=not_before)
    rows.add_delivery(values)
    tx.emit(ev.OUTBOX_ENQUEUED, inbox_id=inbox.id, conversation_id=conversation.id)
    await _move_clocks(tx, conversation, now, preview(text, "text"), answers=sender_kind in ("agent", "bot"))
    tx.emit(ev.MESSAGE_CREATED, message_id=message_id, conversation_id=conversation.id, inbox_id=inbox.id,
            channel=inbox.channel_type, direction="out", sender_kind=sender_kind, handler=conversation.handler,
            content_type="text")
    tx.emit(ev.CONVERSATION_UPDATED, conversation_id=conversation.id, inbox_id=inbox.id, changed=["activity"])
    return message_id


# PostgreSQL: message ids taken from the table's sequence a chunk at a time, so a consumer's batch needs no
# flush per message to learn its id: its messages, deliveries and FAQ outcomes are inserted together (one
# statement per table) when the batch flushes. Unused ids are a gap in the sequence, as after a rollback.
_NEXT_MESSAGE_IDS = text("SELECT nextval(pg_get_serial_sequence('messages', 'id')) FROM generate_series(1, :n)")
MESSAGE_ID_CHUNK = 16


async def batch_message_id(tx: Tx) -> int | None:
    """An id for a new message of the consumer's batch (PostgreSQL), or None: flush to get one (also while
    the batch is redone event by event: each listener's writes are flushed in its own savepoint)."""
    shared = shared_for(tx.session)
    bind = tx.session.bind
    if (shared is None or shared.savepoints or "deliveries" not in shared.facts or bind is None
            or bind.dialect.name != "postgresql"):
        return None
    pool: list[int] = shared.facts.setdefault("message_ids", [])
    if not pool:
        pool.extend(sorted(await tx.session.scalars(_NEXT_MESSAGE_IDS, {"n": MESSAGE_ID_CHUNK})))
    return pool.pop(0)


def _deferred_deliveries(tx: Tx) -> dict[str, Any] | None:
    """The consumer batch's deliveries of messages with a batch id: the unit of work does not order a
    delivery after its message (no relationship between them), so they are added once the messages are in."""
    shared = shared_for(tx.session)
    return None if shared is None else shared.facts.get("deliveries")


class BatchDelivery:
    """A delivery a batch inserted as a plain row: what the hand-over reads of it (delivery/handoff.py)."""

    __slots__ = ("conversation_id", "id", "inbox_id", "next_attempt_at", "values")

    def __init__(self, values: dict[str, Any]) -> None:
        self.id: int | None = None  # once inserted
        self.inbox_id: int = values["inbox_id"]
        self.conversation_id: int | None = values["conversation_id"]
        self.next_attempt_at: datetime = values["next_attempt_at"]
        self.values = values  # its columns, as inserted (the hand-over may change them before)

    @property
    def status(self) -> str:
        status: str = self.values["status"]
        return status


_TABLES = ("messages", "deliveries", "desk_faq_outcomes", "unanswered_questions", "audit_log")  # in foreign key order


@functools.cache
def _inserts() -> dict[str, Any]:
    """The batch's INSERT statements, built once (the desk's models are registered by then). Deliveries come
    back with their ids: one INSERT ... VALUES (...), (...) RETURNING id, in the rows' order."""
    tables = {name: Base.metadata.tables[name] for name in _TABLES}
    inserts: dict[str, Any] = {name: insert(table) for name, table in tables.items()}
    deliveries = tables["deliveries"]
    inserts["deliveries"] = insert(deliveries).returning(deliveries.c.id, sort_by_parameter_order=True)
    return inserts


class BatchRows:
    """New rows of a consumer's batch on PostgreSQL (bot replies, their deliveries, FAQ outcomes, unanswered
    questions, a handoff's note and audit entry) kept as plain values and inserted with one statement per
    table: before any other statement the batch's session runs (so whatever the batch reads next sees them,
    as after the ORM's autoflush; deliveries excepted, as the ORM path defers them) and at the latest before
    the batch marks its events (insert_deferred_deliveries). Without ORM objects, identity map or unit of
    work: the bot's rows cost what their values cost."""

    def __init__(self) -> None:
        self.pending: dict[str, list[dict[str, Any]]] = {name: [] for name in _TABLES}
        self.deliveries: list[BatchDelivery] = []  # pending ones last
        self.waiting = 0  # pending deliveries (the last ones of self.deliveries)

    def add(self, table: str, values: dict[str, Any]) -> None:
        self.pending[table].append(values)

    def written_before(self, statement: Any) -> bool:
        """Whether the pending rows are inserted before `statement`: when it may read or refer to them.
        Most of a batch's statements touch other tables (a handoff's conversation, audit and desk rows, a
        new conversation's stats): the rows then wait, and a batch inserts each table's rows once, not once
        per statement that follows a bot round."""
        if not any(self.pending[table] for table in _TABLES if table != "deliveries"):
            return False
        return _touches_batch_tables(statement)

    def add_delivery(self, values: dict[str, Any]) -> None:
        self.pending["deliveries"].append(values)
        self.deliveries.append(BatchDelivery(values))
        self.waiting += 1

    def write(self, session: Session, *, deliveries: bool = True) -> None:
        """Insert the pending rows (in the caller's greenlet: from a session event or run_sync). Before
        another statement of the batch, not its deliveries: nothing in a batch reads them, they wait for
        its end (one INSERT for the whole batch, then its hand-over)."""
        if not any(rows for table, rows in self.pending.items() if deliveries or table != "deliveries"):
            return
        connection = session.connection()
        tables = _inserts()
        batches = [(table, rows) for table, rows in self.pending.items()
                   if rows and table != "deliveries"]
        if deliveries and self.pending["deliveries"]:
            batches.append(("deliveries", self.pending["deliveries"]))
        # All of them in one statement (PostgreSQL), deliveries last: their new ids come back.
        keyed = batches[-1][0] == "deliveries" if batches else False
        ids = insert_together(connection, [(tables[table].table, rows) for table, rows in batches],
                              key="idempotency_key" if keyed else None)
        for table, rows in batches:
            self.pending[table] = []
            if ids is not None:
                continue
            if table == "deliveries":  # one execution too, each new id matched to its row by its unique key
                self._inserted(insert_rows(connection, tables[table].table, rows, key="idempotency_key"))
            else:  # one execution for the rows (an executemany runs each row apart)
                insert_rows(connection, tables[table].table, rows)
        if ids is not None and keyed:
            self._inserted(ids)

    def _inserted(self, ids: list[Any]) -> None:
        """The new ids of the pending deliveries (the last `waiting` of self.deliveries), in their order."""
        for delivery, new_id in zip(self.deliveries[len(self.deliveries) - self.waiting:], ids, strict=True):
            delivery.id = new_id
        self.waiting = 0


@functools.cache
def _batch_related_tables() -> frozenset[str]:
    """The tables of BatchRows and those with a foreign key to one of them (a write there may refer to a
    pending row)."""
    related = set(_TABLES)
    for table in Base.metadata.tables.values():
        if any(fk.column.table.name in _TABLES for fk in table.foreign_keys):
            related.add(table.name)
    return frozenset(related)


def _touches_batch_tables(statement: Any) -> bool:
    """Whether `statement` may read or write BatchRows' tables (or refer to their rows); a statement whose
    tables are unknown (text) counts as touching them, except the batch's own id allocation."""
    if statement is _NEXT_MESSAGE_IDS:
        return False
    tables = statement_tables(statement)
    return tables is None or not tables.isdisjoint(_batch_related_tables())


def batch_rows(tx: Tx) -> BatchRows | None:
    """The consumer batch's plain new rows (BatchRows), or None: not in a batch, not on PostgreSQL, or the
    batch is redone event by event (each listener's writes then go through the ORM in a savepoint)."""
    deferred = _deferred_deliveries(tx)
    if deferred is None or shared_for(tx.session).savepoints:  # type: ignore[union-attr]
        return None
    rows: BatchRows | None = deferred.get("core")
    return rows


def defer_deliveries(shared: SharedTransaction) -> None:
    """Let this consumer batch's new messages take batch ids and their deliveries wait for
    insert_deferred_deliveries, which the batch must call before it commits. On PostgreSQL the batch
    also keeps plain rows (BatchRows), written before any other statement of its session."""
    deferred: dict[str, Any] = {"rows": [], "message": None, "core": None}
    shared.facts["deliveries"] = deferred
    bind = shared.session.bind
    if bind is None or bind.dialect.name != "postgresql":
        return
    rows = deferred["core"] = BatchRows()

    def before_statement(state: ORMExecuteState) -> None:
        if rows.written_before(state.statement):
            rows.write(state.session, deliveries=False)

    shared.listen("do_orm_execute", before_statement)


async def write_batch_rows(shared: SharedTransaction) -> None:
    """Insert the batch's pending plain rows now (before a savepoint opens: its rollback must not undo them)."""
    deferred = shared.facts.get("deliveries")
    rows: BatchRows | None = deferred.get("core") if deferred else None
    if rows is not None and any(rows.pending.values()):
        await shared.session.run_sync(rows.write)


async def insert_deferred_deliveries(
    shared: SharedTransaction, before_insert: Callable[[list[dict[str, Any]]], Awaitable[None]] | None = None,
) -> list[Any]:
    """Insert the batch's deferred deliveries after its messages (event_log: before it marks its events);
    returns them (ORM objects and BatchDelivery rows). `before_insert` gets the plain rows' values about to
    be inserted, and may change them (the hand-over inserts some `sending`)."""
    deferred = shared.facts.pop("deliveries", None)
    if not deferred:
        return []
    rows: BatchRows | None = deferred.get("core")
    if rows is not None and any(rows.pending.values()):
        if before_insert is not None and rows.pending["deliveries"]:
            await before_insert(rows.pending["deliveries"])
        await shared.session.run_sync(rows.write)
    inserted: list[Any] = list(rows.deliveries) if rows is not None else []
    if deferred["rows"]:
        await shared.session.flush()  # their messages first
        shared.session.add_all(deferred["rows"])
        await shared.session.flush()
        inserted += deferred["rows"]
    return inserted


def passive_hold(message: Message | None) -> datetime | None:
    """Until when the platform callback that brought `message` waits to carry the bot's answer itself
    (WeChat passive reply); the answer's delivery is not due for the worker before then."""
    until = (message.payload or {}).get(PASSIVE_REPLY_UNTIL) if message is not None else None
    if not isinstance(until, int | float):
        return None
    held = datetime.fromtimestamp(until, tz=UTC)
    return held if held > utcnow() else None


def outbound_from_delivery(d: Delivery) -> OutboundMessage:
    """Build the channel-neutral message the adapter sends."""
    p = d.payload or {}
    return OutboundMessage(
        delivery_id=d.id,
        idempotency_key=d.idempotency_key,
        inbox_id=d.inbox_id,
        recipient_id=d.recipient_id,
        text=p.get("text"),
        content_type=p.get("content_type") or "text",
        attachments=tuple(
            Attachment(**{k: v for k, v in a.items() if k in Attachment.__dataclass_fields__})
            for a in p.get("attachments") or []
        ),
        choices=tuple(Choice(c["label"], c["payload"]) for c in p.get("choices") or []),
        conversation_id=d.conversation_id,
        message_id=d.message_id,
        reply_to_external_id=p.get("reply_to_external_id"),
        automatic=bool(p.get("automatic")),
        recipient_data=p.get("recipient_data") or {},
        metadata=p.get("metadata") or {},
    )
