"""What a consumer's batch reads, loaded once per table for all its events (set-based follow-up).

The listeners a batch calls (bot round, desk bookkeeping, notifications, opt-out) read the same rows
for every event: the message, its conversation, the conversation's contact, identity, inbox and desk
stats. Loaded here with one query per table into the shared session, their own `session.get` calls
are answered from the session's identity map instead of a statement each. What they ask about each
customer message (the contact's tags, a ticket waiting on the customer, a broadcast awaiting a reply) is
asked once for the batch too (`SharedTransaction.facts`, read with `batch_fact`; dropped when the batch
writes the table). The decisions stay in the pure functions (bot_flows engine, FAQ matcher); their
writes are flushed together: on PostgreSQL new messages take ids from the sequence a chunk at a time
(services/outbox.py), so a batch's messages, deliveries and FAQ outcomes are one INSERT per table.
"""

from __future__ import annotations

import functools
from datetime import timedelta
from typing import Any, NamedTuple

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Integer,
    String,
    Text,
    and_,
    any_,
    bindparam,
    cast,
    func,
    inspect,
    literal,
    null,
    select,
    text,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import ORMExecuteState, Session, aliased
from sqlalchemy.orm.attributes import PASSIVE_NO_INITIALIZE, set_committed_value
from sqlalchemy.orm.util import identity_key
from sqlalchemy.sql.selectable import CompoundSelect

from scrm import events as ev
from scrm import json_codec
from scrm.db.database import SKIPS_HELD_BACK_STATS, SharedTransaction, shared_for
from scrm.db.models import (
    Contact,
    ContactIdentity,
    ContactTag,
    Conversation,
    Delivery,
    Inbox,
    Message,
    Ticket,
    utcnow,
)
from scrm.db.models_desk import ConversationStats
from scrm.db.models_marketing import BroadcastRecipient
from scrm.event_rows import TABLES, array_kind, statement_tables
from scrm.services.bot.state import answered_up_to
from scrm.services.outbox import CLOCKS_DEFERRED


def _ids(values: Any) -> list[int]:
    return sorted({v for v in values if isinstance(v, int) and not isinstance(v, bool)})


def _reads_conversation(event: ev.Event) -> bool:
    if event.name == ev.MESSAGE_CREATED:
        return event.data.get("direction") == "in"
    return event.name.startswith("conversation.") or event.name == ev.TICKET_OPENED


def _reads_message(event: ev.Event) -> bool:
    """The listeners read the message of a customer's or an agent's new message (bot, desk, opt-out,
    notifications); the bot's own messages and delivery updates (message.updated), most of a batch's
    message ids, are not read: loading them built ORM objects nobody used. A listener that does read
    another message still finds it with a statement of its own."""
    if event.name != ev.MESSAGE_CREATED:
        return False
    return event.data.get("direction") == "in" or event.data.get("sender_kind") == "agent"


async def preload(shared: SharedTransaction, events: list[ev.Event]) -> None:
    """Load the batch's conversations (whose turns it holds) and what hangs off them into the session."""
    session = shared.session
    # Conversations with work that reads them: a customer's message, a change of the conversation. The
    # bot's and agents' own messages mostly move nothing (desk: an agent's reply, loaded on demand).
    conversation_ids = _ids(e.data.get("conversation_id") for e in events if _reads_conversation(e))
    if not conversation_ids:
        return
    # A batch's session is new (nothing loaded yet): no row read here can overwrite an object it holds, so the
    # reads skip populate_existing (re-populating the batch's one inbox on every conversation's row).
    refresh = len(session.sync_session.identity_map) > 0
    statements = _preload_statements(session.get_bind().dialect.name == "postgresql", refresh)
    message_ids = _ids(e.data.get("message_id") for e in events if _reads_message(e))
    # One statement: the conversations with their contact, identity, inbox, stats row (locked in conversation
    # order, as ensure_stats would lock each one: sla.py skips the lock for these) and the batch's messages.
    rows = (await session.execute(statements.conversations, {"ids": conversation_ids, "message_ids": message_ids})).all()
    conversations = list({row[0].id: row[0] for row in rows}.values())
    shared.loaded += [obj for row in rows for obj in row if obj is not None]
    missing = set(conversation_ids)
    found: set[int] = set()
    for *_, stats, message in rows:
        if stats is not None:
            shared.locked.add(("desk_conversation_stats", stats.conversation_id))
            missing.discard(stats.conversation_id)
        if message is not None:
            found.add(message.id)
    if others := [mid for mid in message_ids if mid not in found]:  # an agent's message in another conversation
        shared.loaded += (await session.scalars(statements.messages, {"ids": others})).all()
    shared.facts["stats_missing"] = missing  # sla.ensure_stats inserts these without looking first
    # New conversations: the desk books each one's conversation.created, and sla.ensure_stats inserts all
    # their rows with the first of them (one INSERT for the batch).
    shared.facts["stats_new"] = missing & {e.data.get("conversation_id") for e in events
                                           if e.name == ev.CONVERSATION_CREATED}
    asked = [e for e in events if e.name == ev.MESSAGE_CREATED
             and e.data.get("direction") == "in" and e.data.get("sender_kind", "contact") == "contact"]
    asked_ids = {e.data.get("conversation_id") for e in asked}
    if customers := [c for c in conversations if c.id in asked_ids]:
        await _read_facts(shared, customers, statements, len(asked))


# Which question a row of _read_facts answers.
_TAG, _TICKET, _BROADCAST, _FIRST_IN, _MESSAGE_ID = 0, 1, 2, 3, 4
# PostgreSQL: message ids the facts read take from the sequence per customer message of the batch (a reply,
# and a greeting or a handoff's note), so the bot's rounds need no statement of their own for them.
MESSAGE_IDS_PER_QUESTION = 2


class _Preload(NamedTuple):
    conversations: Any
    messages: Any
    facts: Any


@functools.cache
def _preload_statements(postgresql: bool, refresh: bool = True) -> _Preload:
    """The batch's reads, built once: building and hashing them anew for every batch cost about as much
    Python as running them. On PostgreSQL a list of ids is one array parameter (= ANY), so the text is the
    same whatever the batch's size: an IN list's text changes with its length, and each new length was a
    new statement for PostgreSQL to prepare (and pushed warm ones out of the connection's statement cache)."""

    def one_of(column: Any, name: str) -> Any:
        if postgresql:
            return column == any_(bindparam(name, type_=ARRAY(BigInteger)))
        return column.in_(bindparam(name, expanding=True))

    # Fresh rows: the turn is ours now, but the rows may have changed since this session last saw them
    # (`refresh`: it holds objects already; a new session has none to refresh).
    fresh = {"populate_existing": refresh}
    # With each its contact, identity, inbox, desk stats row (locked: FOR UPDATE in a subquery locks its rows
    # in its order) and the batch's messages of it: one round trip (the batch waits for each), where it was three.
    locked_stats = (select(ConversationStats).where(one_of(ConversationStats.conversation_id, "ids"))
                    .order_by(ConversationStats.conversation_id).with_for_update().subquery())
    stats = aliased(ConversationStats, locked_stats)
    conversations = (select(Conversation, Contact, ContactIdentity, Inbox, stats, Message)
                     .outerjoin(Contact, Contact.id == Conversation.contact_id)
                     .outerjoin(ContactIdentity, ContactIdentity.id == Conversation.identity_id)
                     .outerjoin(Inbox, Inbox.id == Conversation.inbox_id)
                     .outerjoin(stats, stats.conversation_id == Conversation.id)
                     .outerjoin(Message, and_(Message.conversation_id == Conversation.id, one_of(Message.id, "message_ids")))
                     .where(one_of(Conversation.id, "ids")).execution_options(**fresh))
    messages = select(Message).where(one_of(Message.id, "ids")).execution_options(**fresh)
    # The questions of _read_facts in one round trip: (which, key, tag, number) rows.
    no_text, no_id = cast(null(), String), cast(null(), BigInteger)
    branches = [
        select(literal(_TAG), ContactTag.contact_id, ContactTag.tag, no_id)
        .where(one_of(ContactTag.contact_id, "contacts")),
        select(literal(_TICKET), Ticket.conversation_id, no_text, no_id).distinct()
        .where(one_of(Ticket.conversation_id, "conversations"), Ticket.status.in_(("pending", "solved"))),
        select(literal(_BROADCAST), BroadcastRecipient.contact_id, no_text, cast(BroadcastRecipient.inbox_id, BigInteger))
        .distinct()
        .join(Delivery, Delivery.id == BroadcastRecipient.delivery_id)
        .where(one_of(BroadcastRecipient.contact_id, "contacts"), BroadcastRecipient.replied_at.is_(None),
               Delivery.sent_at >= bindparam("since", type_=Delivery.__table__.c.sent_at.type)),
    ]
    # The bot's "is this the customer's first message?" for conversations it has not answered yet: the id of
    # each one's first customer message. On PostgreSQL one index probe per conversation (the (conversation_id,
    # id) index in order, stopped at the first match), not an aggregate over its whole history.
    first_in = (Message.direction == "in", Message.content_type != "event")
    if postgresql:
        unanswered = func.unnest(bindparam("unanswered", type_=ARRAY(BigInteger))).table_valued("cid").render_derived()
        first = (select(Message.id).where(Message.conversation_id == unanswered.c.cid, *first_in)
                 .order_by(Message.id).limit(1).scalar_subquery())
        branches.append(select(literal(_FIRST_IN), unanswered.c.cid, no_text, first))
    else:
        branches.append(select(literal(_FIRST_IN), Message.conversation_id, no_text, cast(func.min(Message.id), BigInteger))
                        .where(one_of(Message.conversation_id, "unanswered"), *first_in)
                        .group_by(Message.conversation_id))
    if postgresql:
        ids = func.nextval(func.pg_get_serial_sequence("messages", "id"))
        branches.append(select(literal(_MESSAGE_ID), cast(null(), BigInteger), no_text, ids)
                        .select_from(func.generate_series(1, bindparam("message_ids", type_=Integer))))
    facts: CompoundSelect[Any] = union_all(*branches)
    return _Preload(conversations, messages, facts)


async def _read_facts(shared: SharedTransaction, conversations: list[Conversation], statements: _Preload,
                      questions: int) -> None:
    """What the listeners ask about each customer message, asked once for the batch's conversations:
    the contact's tags (bot), which conversations have a ticket waiting on the customer (desk), which
    contacts await a reply to a broadcast on the inbox (opt-out), the first customer message of the
    conversations the bot has not answered yet (bot), and on PostgreSQL ids for the bot's messages. Read
    at the batch's start: a change committed meanwhile counts as made after these messages."""
    from scrm.services.marketing.optout import MAX_REPLY_WINDOW_DAYS

    contact_ids = _ids(c.contact_id for c in conversations)
    tags: dict[int, list[str]] = {cid: [] for cid in contact_ids}
    waiting = dict.fromkeys(_ids(c.id for c in conversations), False)  # conversation -> has a ticket waiting
    awaiting: dict[int, set[int]] = {cid: set() for cid in contact_ids}  # contact -> inboxes
    # conversation -> id of its first customer message (None: none yet), for those the bot never answered
    first_in: dict[int, int | None] = dict.fromkeys(_ids(c.id for c in conversations
                                                         if c.handler == "bot" and not answered_up_to(c.bot_state)))
    message_ids: list[int] = []
    since = utcnow() - timedelta(days=MAX_REPLY_WINDOW_DAYS)
    asked = {"contacts": contact_ids, "conversations": list(waiting), "unanswered": list(first_in), "since": since,
             "message_ids": questions * MESSAGE_IDS_PER_QUESTION}
    for which, key, tag, number in await shared.session.execute(statements.facts, asked):
        if which == _MESSAGE_ID:
            message_ids.append(number)
        elif key is None:
            continue
        elif which == _TAG:
            tags[key].append(tag)
        elif which == _TICKET:
            waiting[key] = True
        elif which == _FIRST_IN:
            first_in[key] = number
        elif number is not None:
            awaiting[key].add(number)
    shared.facts |= {"contact_tags": tags, "tickets_waiting": waiting, "broadcast_awaiting": awaiting,
                     "first_customer_message": first_in}
    if message_ids:
        shared.facts.setdefault("message_ids", []).extend(sorted(message_ids))


# A fact is dropped when the batch writes its table (the reader then asks the database itself).
_FACT_TABLES = {"contact_tags": "contact_tags", "tickets": "tickets_waiting", "broadcast_recipients": "broadcast_awaiting",
                "desk_sla_policies": "sla_policies", "desk_teams": "teams_for_inbox"}


def _drop_facts(shared: SharedTransaction, table: str | None) -> None:
    fact = _FACT_TABLES.get(table or "")
    if fact is not None:
        shared.facts.pop(fact, None)


def _drop_facts_of_pending(shared: SharedTransaction, session: Session) -> None:
    """Drop the facts of the tables the session's pending changes write (at a flush, or where one is skipped)."""
    if shared.facts:
        for obj in (*session.new, *session.dirty, *session.deleted):
            _drop_facts(shared, getattr(obj, "__tablename__", None))



@functools.cache
def _conversation_columns() -> frozenset[str]:
    return frozenset(attr.key for attr in inspect(Conversation).column_attrs)


@functools.cache
def _stats_columns() -> frozenset[str]:
    return frozenset(attr.key for attr in inspect(ConversationStats).column_attrs)


_STATS = ConversationStats.__tablename__


def _take_changes(obj: Any, columns: frozenset[str]) -> dict[str, Any]:
    """The columns of `obj` set since its last flush, now marked committed (no UPDATE for them at the flush)."""
    state = inspect(obj)
    changed = {}
    # Only the attributes set since the last flush (committed_state) can have changes: not every column.
    for key in list(state.committed_state):
        # state.get_history, not state.attrs[key].history: `attrs` builds a view of every attribute.
        if key in columns and state.get_history(key, PASSIVE_NO_INITIALIZE).has_changes():
            changed[key] = value = getattr(obj, key)
            set_committed_value(obj, key, value)  # no UPDATE now: nothing left to flush
    return changed


def hold_back_conversation_writes(shared: SharedTransaction) -> None:
    """Collect the ORM changes of the batch's conversations instead of flushing them (see the module
    docstring); write_held_back writes them. Objects keep showing the new values to the listeners.

    The desk's stats rows the batch holds locked too (SLA clock started, handoffs counted...): written
    once per batch, one UPDATE for all of them, not an UPDATE per change each time a statement autoflushes;
    written first whenever a statement may read them. Not while the batch is redone event by event: a
    failing listener's savepoint must undo its changes, and held-back values would outlive it."""

    columns, stats_columns = _conversation_columns(), _stats_columns()

    def hold_stats(session: Session) -> None:
        if shared.savepoints:
            return
        for obj in list(session.dirty):
            if isinstance(obj, ConversationStats) and (_STATS, obj.conversation_id) in shared.locked:
                if changed := _take_changes(obj, stats_columns):
                    shared.held_back_stats.setdefault(obj.conversation_id, {}).update(changed)

    def before_flush(session: Session, _context: object, _instances: object) -> None:
        hold_stats(session)
        for obj in list(session.dirty):
            if isinstance(obj, Conversation) and obj.id in shared.turns:
                _hold_back(shared, obj, columns)

    def dml(state: ORMExecuteState) -> None:
        if state.is_insert or state.is_update or state.is_delete:
            _drop_facts(shared, getattr(getattr(state.statement, "table", None), "name", None))
        if state.execution_options.get(SKIPS_HELD_BACK_STATS):
            return
        if not shared.held_back_stats and shared.savepoints:
            return
        tables = statement_tables(state.statement)
        if tables is None or _STATS in tables:
            # What it reads of the stats rows is what the batch made of them, changes since the last flush included.
            hold_stats(state.session)
            write_held_back_stats(state.session, shared)

    def facts_flush(session: Session, _context: object, _instances: object) -> None:
        _drop_facts_of_pending(shared, session)

    shared.listen("before_flush", before_flush)
    shared.listen("before_flush", facts_flush)
    shared.listen("do_orm_execute", dml)


def _hold_back(shared: SharedTransaction, conversation: Conversation, columns: frozenset[str]) -> None:
    """The conversation's ORM changes since the last flush, as its next held-back write."""
    changed = _take_changes(conversation, columns)
    if changed:
        ops = shared.held_back.setdefault(conversation.id, [])
        if ops and ops[-1][0] == "set":
            ops[-1] = ("set", {**ops[-1][1], **changed})
        else:
            ops.append(("set", changed))


def _statement(op: tuple[Any, ...]) -> tuple[Any, dict[str, Any]]:
    """The statement (shared by every conversation with a write of the same shape) and its parameters."""
    if op[0] == "clocks":
        return CLOCKS_DEFERRED[op[1]], op[2]
    if op[0] == "clocks+set":
        return (_clocks_set_statement(op[1], tuple(sorted(op[3]))),
                op[2] | {f"s_{key}": value for key, value in op[3].items()})
    return _set_statement(tuple(sorted(op[1]))), {f"b_{key}": value for key, value in op[1].items()}


# The columns a reply's clocks read and write (CLOCKS_DEFERRED).
_CLOCK_COLUMNS = frozenset({"last_activity_at", "last_message_preview", "waiting_since"})


def _merged(ops: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """A conversation's writes in as few UPDATEs as give the same row (one new row version each, and on
    PostgreSQL one statement per round of write_held_back):
    - clocks then a change of its columns, as one: every SET expression reads the row as it was, and the
      change's values are constants that win over the clocks' where both set a column;
    - clocks then later clocks of the same kind (a greeting and an answer), as the later one: the stored
      time is above both or not above the later one, and either way the row ends as the later one leaves it;
    - a change then clocks, when the change sets no column the clocks read or write (they commute)."""
    out: list[tuple[Any, ...]] = []
    for op in ops:
        last = out[-1] if out else None
        if op[0] == "set" and last is not None and last[0] == "clocks":
            out[-1] = ("clocks+set", last[1], last[2], op[1])
        elif op[0] == "set" and last is not None and last[0] == "clocks+set":
            out[-1] = ("clocks+set", last[1], last[2], {**last[3], **op[1]})
        elif (op[0] == "clocks" and last is not None and last[0] in ("clocks", "clocks+set") and last[1] == op[1]
              and _not_before(op[2]["b_now"], last[2]["b_now"])
              and (last[0] == "clocks" or not _CLOCK_COLUMNS.intersection(last[3]))):
            out[-1] = (*last[:2], op[2], *last[3:])
        elif op[0] == "clocks" and last is not None and last[0] == "set" and not _CLOCK_COLUMNS.intersection(last[1]):
            out[-1] = ("clocks+set", op[1], op[2], last[1])
        else:
            out.append(op)
    return out


def _not_before(later: Any, earlier: Any) -> bool:
    try:
        return bool(later >= earlier)
    except TypeError:  # not comparable (naive and aware): keep both writes
        return False


def _set_values(keys: tuple[str, ...], prefix: str) -> dict[str, Any]:
    table = Conversation.__table__
    sets: dict[str, Any] = {}
    for key in keys:
        param = bindparam(f"{prefix}{key}", type_=table.c[key].type)
        # The first reply stays the first one, whoever wrote it meanwhile (set-once, never from a stale row).
        sets[key] = func.coalesce(table.c[key], param) if key == "first_reply_at" else param
    return sets


@functools.lru_cache(maxsize=64)
def _set_statement(keys: tuple[str, ...]) -> Any:
    table = Conversation.__table__
    return update(table).where(table.c.id == bindparam("b_id")).values(_set_values(keys, "b_"))


@functools.lru_cache(maxsize=64)
def _clocks_set_statement(answers: bool, keys: tuple[str, ...]) -> Any:
    clocks = CLOCKS_DEFERRED[answers]
    return clocks.values(_set_values(keys, "s_"))  # a column in both: the change's value (set after the clocks)


def write_held_back_stats(session: Session, shared: SharedTransaction) -> None:
    """Write the batch's held-back stats changes (in the caller's greenlet: a session event or run_sync): one
    UPDATE per set of columns over arrays on PostgreSQL, an executemany on SQLite."""
    if not shared.held_back_stats:
        return
    held, shared.held_back_stats = shared.held_back_stats, {}
    shapes: dict[tuple[str, ...], list[tuple[int, dict[str, Any]]]] = {}
    for conversation_id, changed in sorted(held.items()):  # in id order, as the rows were locked
        shapes.setdefault(tuple(sorted(changed)), []).append((conversation_id, changed))
    connection = session.connection()
    postgresql = connection.dialect.name == "postgresql"
    for keys, rows in shapes.items():
        statement = _pg_stats_statement(keys) if postgresql else None
        if statement is None:
            connection.execute(_stats_statement(keys), [{"b_id": cid, **{f"b_{k}": v for k, v in changed.items()}}
                                                        for cid, changed in rows])
            continue
        params: dict[str, list[Any]] = {"ids": [cid for cid, _ in rows]}
        for n, key in enumerate(keys):
            values = [changed[key] for _, changed in rows]
            if (array_kind(ConversationStats.__table__.c[key].type) or (None, ""))[1] == "json":
                values = [json_codec.dumps(value) for value in values]
            params[f"k{n}"] = values
        connection.execute(statement, params)


@functools.lru_cache(maxsize=64)
def _stats_statement(keys: tuple[str, ...]) -> Any:
    table = ConversationStats.__table__
    return (update(table).where(table.c.conversation_id == bindparam("b_id"))
            .values({key: bindparam(f"b_{key}", type_=table.c[key].type) for key in keys}))


@functools.lru_cache(maxsize=64)
def _pg_stats_statement(keys: tuple[str, ...]) -> Any:
    """UPDATE desk_conversation_stats over arrays (one execution for the batch's rows of one shape); None
    when a column's type has no array form here."""
    table = ConversationStats.__table__
    kinds = [array_kind(table.c[key].type) for key in keys]
    if None in kinds:
        return None
    arrays: list[tuple[str, Any]] = [("ids", BigInteger)]
    sets = []
    for n, (key, kind) in enumerate(zip(keys, kinds, strict=True)):
        element, cast_to = kind  # type: ignore[misc]
        arrays.append((f"k{n}", element))
        sets.append(f"{table.c[key].name} = " + (f"v.k{n}::json" if cast_to == "json" else f"v.k{n}"))
    names = [name for name, _ in arrays]
    statement = text(
        f"UPDATE {table.name} SET {', '.join(sets)} "
        f"FROM unnest({', '.join(f':{name}' for name in names)}) AS v({', '.join(names)}) "
        f"WHERE {table.name}.conversation_id = v.ids")
    return statement.bindparams(*(bindparam(name, type_=ARRAY(element)) for name, element in arrays))


async def write_held_back(shared: SharedTransaction, conversation_id: int | None = None) -> None:
    """Write the held-back conversation changes and reply clocks: the batch's last statements before
    its commit. Round k writes every conversation's k-th change (a conversation's changes stay in
    order), one executemany per statement shape, conversations in id order (as other writers lock rows).
    With `conversation_id`: that conversation's now (a listener locks and reads its row again)."""
    session = shared.session
    await session.flush()  # the last ORM changes of the batch's conversations join the held-back ones
    if conversation_id is None and shared.held_back_stats:
        await session.run_sync(lambda sync: write_held_back_stats(sync, shared))
    if conversation_id is not None:
        pending = {conversation_id: _merged(shared.held_back.pop(conversation_id, []))}
    else:
        pending = {cid: _merged(ops) for cid, ops in sorted(shared.held_back.items()) if ops}
        shared.held_back = {}
    postgresql = session.get_bind().dialect.name == "postgresql"
    for round_ in range(max((len(ops) for ops in pending.values()), default=0)):
        if postgresql:
            await _write_round_pg(session, [(cid, ops[round_]) for cid, ops in pending.items() if round_ < len(ops)])
            continue
        shapes: dict[Any, list[dict[str, Any]]] = {}
        for conversation_id, ops in pending.items():
            if round_ < len(ops):
                statement, params = _statement(ops[round_])
                shapes.setdefault(statement, []).append({**params, "b_id": conversation_id})
        for statement, rows in shapes.items():
            await session.execute(statement, rows)


# PostgreSQL: a round's writes as one UPDATE per shape over `unnest`ed arrays (one execution, not one per
# conversation: an executemany binds and PostgreSQL executes each row apart), as ingest writes its clocks.
# A shape: whether the write moves the reply clocks (and whether it answers), and which columns it sets.
def _pg_kind(key: str) -> tuple[Any, str] | None:
    """How a conversation column travels in an array (event_rows' rule; None: a type it does not handle)."""
    return array_kind(Conversation.__table__.c[key].type)


@functools.lru_cache(maxsize=64)
def _pg_round_statement(clocks: bool, answers: bool, keys: tuple[str, ...]) -> Any:
    """UPDATE conversations over arrays, every write of a round in one statement whatever its shape: per row
    whether it moves the reply clocks (`v.clocks`, relative to the stored row as CLOCKS_DEFERRED) and whether
    they answer (`v.answers`), then which of `keys` it sets (`v.m<n>`; a column in both: the change's value,
    as _clocks_set_statement). A row leaves what it does not write as it is. `clocks`/`answers`: whether
    any row does (the statement's text then has those columns). None when a column's type has no array
    form here."""
    kinds = [_pg_kind(key) for key in keys]
    if None in kinds:
        return None
    arrays: list[tuple[str, Any]] = [("ids", BigInteger)]
    sets: dict[str, str] = {}
    if clocks:
        arrays += [("clocks", Boolean), ("answers", Boolean), ("nows", DateTime(timezone=True)), ("previews", Text)]
        # Not the row's (a write of no clocks), or a later message stored meanwhile (ingest takes no turn).
        keep = "NOT v.clocks OR conversations.last_activity_at > v.nows"
        sets["last_activity_at"] = f"CASE WHEN {keep} THEN conversations.last_activity_at ELSE v.nows END"
        sets["last_message_preview"] = f"CASE WHEN {keep} THEN conversations.last_message_preview ELSE v.previews END"
        if answers:
            sets["waiting_since"] = (f"CASE WHEN NOT v.answers OR {keep} THEN conversations.waiting_since "
                                     "ELSE NULL END")
    for n, (key, kind) in enumerate(zip(keys, kinds, strict=True)):
        element, cast_to = kind  # type: ignore[misc]
        arrays += [(f"k{n}", element), (f"m{n}", Boolean)]
        value = f"v.k{n}::json" if cast_to == "json" else f"v.k{n}"
        # The first reply stays the first one, whoever wrote it meanwhile (as _set_values).
        value = f"coalesce(conversations.first_reply_at, {value})" if key == "first_reply_at" else value
        sets[key] = f"CASE WHEN v.m{n} THEN {value} ELSE {sets.get(key, f'conversations.{key}')} END"
    names = [name for name, _ in arrays]
    statement = text(
        f"UPDATE conversations SET {', '.join(f'{key} = {value}' for key, value in sets.items())} "
        f"FROM unnest({', '.join(f':{name}' for name in names)}) AS v({', '.join(names)}) "
        "WHERE conversations.id = v.ids")
    return statement.bindparams(*(bindparam(name, type_=ARRAY(element)) for name, element in arrays))


def _op_parts(op: tuple[Any, ...]) -> tuple[bool | None, dict[str, Any] | None, dict[str, Any]]:
    """(answers, or None: no clocks; the clocks' parameters; the columns set) of a held-back write."""
    if op[0] == "clocks":
        return bool(op[1]), op[2], {}
    if op[0] == "clocks+set":
        return bool(op[1]), op[2], op[3]
    return None, None, op[1]


async def _write_round_pg(session: Any, writes: list[tuple[int, tuple[Any, ...]]]) -> None:
    """One round of write_held_back on PostgreSQL (at most one write per conversation, in id order): one
    UPDATE for all its writes (_pg_round_statement)."""
    parts = [(conversation_id, *_op_parts(op)) for conversation_id, op in writes]
    keys = tuple(sorted({key for *_, changed in parts for key in changed}))
    clocks = any(answers is not None for _, answers, _, _ in parts)
    answers_any = any(answers for _, answers, _, _ in parts)
    statement = _pg_round_statement(clocks, answers_any, keys)
    if statement is None:  # a column this path does not handle: the statements of SQLite
        by_statement: dict[Any, list[dict[str, Any]]] = {}
        for conversation_id, op in writes:
            stmt, one = _statement(op)
            by_statement.setdefault(stmt, []).append({**one, "b_id": conversation_id})
        for stmt, params_list in by_statement.items():
            await session.execute(stmt, params_list)
        return
    params: dict[str, list[Any]] = {"ids": [conversation_id for conversation_id, *_ in parts]}
    if clocks:
        params["clocks"] = [answers is not None for _, answers, _, _ in parts]
        params["answers"] = [bool(answers) for _, answers, _, _ in parts]
        params["nows"] = [clock["b_now"] if clock else None for _, _, clock, _ in parts]
        params["previews"] = [clock["b_preview"] if clock else None for _, _, clock, _ in parts]
    for n, key in enumerate(keys):
        values = [changed.get(key) for *_, changed in parts]
        if (_pg_kind(key) or (None, ""))[1] == "json":
            values = [json_codec.dumps(value) for value in values]  # None as JSON null, as the JSON type binds it
        params[f"k{n}"] = values
        params[f"m{n}"] = [key in changed for *_, changed in parts]
    await session.execute(statement, params)


# Its tables declared: the batch's pending bot messages need not be inserted before it (a handoff mid-batch
# inserted them there, an INSERT more per handoff, where the batch's end inserts them all at once).
_LOCK_IN_ORDER = text("SELECT id FROM conversations WHERE id = ANY(:ids) ORDER BY id FOR NO KEY UPDATE").bindparams(
    bindparam("ids", type_=ARRAY(BigInteger))).execution_options(**{SKIPS_HELD_BACK_STATS: True,
                                                                    TABLES: ("conversations",)})


async def lock_in_order(shared: SharedTransaction, conversation_id: int) -> None:
    """Before a listener writes one of the batch's conversations mid-batch (its row then stays locked to the
    commit), lock the batch's conversations below it that are not locked yet, in id order. The batch then
    takes its conversation rows in ascending id order, as ingest does (scrm_ingest_batch, migration 0028):
    a handoff's conversation locked first and a lower one at the end could each be held by one of the two
    while the other waits for it, a deadlock PostgreSQL breaks only after deadlock_timeout (1 s), holding
    up every acknowledgement behind it. SQLite: one writer at a time, nothing to order."""
    if shared.session.get_bind().dialect.name != "postgresql":
        return
    below = sorted(c for c in shared.turns if shared.conversations_locked_to < c < conversation_id)
    shared.conversations_locked_to = max(shared.conversations_locked_to, conversation_id)
    if below:
        with shared.session.no_autoflush:
            await shared.session.execute(_LOCK_IN_ORDER, {"ids": below})


async def before_reading_again(session: Any, conversation_id: int) -> None:
    """A listener is about to lock or read the conversation's row again (populate_existing): its
    held-back changes are written first, or the read would undo them on the object. Rare (handoffs,
    status changes by the bot): the row stays locked from here to the batch's commit, as it must for
    a status or handler change (conversations.load)."""
    shared = shared_for(session)
    if shared is not None and conversation_id in shared.turns:
        await lock_in_order(shared, conversation_id)
        await write_held_back(shared, conversation_id)


@functools.lru_cache(maxsize=64)
def _returning(statement: Any) -> Any:
    """`statement` (an UPDATE of one conversation) loading the row it leaves into the session."""
    return (select(Conversation).from_statement(statement.returning(*Conversation.__table__.c))
            .execution_options(populate_existing=True))


async def read_again_written(session: Any, conversation_id: int) -> Conversation | None:
    """before_reading_again and the read in one statement: the conversation's held-back changes written
    with an UPDATE ... RETURNING that loads the row as it leaves it (fresh, and locked: the UPDATE's row
    lock is stronger than the FOR KEY SHARE of conversations.load). None when the batch holds no change
    of it (the caller reads and locks the row itself)."""
    shared = shared_for(session)
    if shared is None or conversation_id not in shared.turns:
        return None
    # The last ORM changes of the conversation join the held-back ones, without a flush: the batch's other
    # new rows (a handoff's note and audit entry, another handoff's before it) wait for the batch's next
    # flush and go in with one INSERT per table there, not one each per handoff. The UPDATE below reads
    # and writes this one row only, so nothing pending has to be written before it.
    loaded = session.sync_session.identity_map.get(identity_key(Conversation, conversation_id))
    if loaded is not None:
        _hold_back(shared, loaded, _conversation_columns())
    _drop_facts_of_pending(shared, session.sync_session)  # as the skipped flush would have
    ops = _merged(shared.held_back.pop(conversation_id, []))
    if not ops:
        return None
    await lock_in_order(shared, conversation_id)
    with session.no_autoflush:
        for op in ops[:-1]:
            statement, params = _statement(op)
            await session.execute(statement, {**params, "b_id": conversation_id})
        statement, params = _statement(ops[-1])
        conversation: Conversation | None = (await session.scalars(_returning(statement),
                                                                    {**params, "b_id": conversation_id})).first()
    return conversation
