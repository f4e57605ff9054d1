"""Ingest one item per transaction: the path every message can take (and events always take).

`store_message` stores one message with the rules of ingest_rules.py: dedup, identity, the
conversation it continues, opens or reopens (email threads and conversation hints included), the
row, the clocks and the events. The batch path (ingest_batch.py) uses it inside its own transaction
for what it does not store set-based, and `ingest_each` is the fallback of a failed batch.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, IntegrityError

from scrm import events as ev
from scrm.db.models import Contact, ContactIdentity, Conversation, Inbox, Message, utcnow
from scrm.db.sql import is_postgresql
from scrm.domain import ChannelEvent, InboundMessage, IngestOutcome
from scrm.metrics import INGEST_LATENCY, INGESTED
from scrm.services.conversations import ingest_rules as rules
from scrm.services.conversations.ingest_events import apply_event
from scrm.services.conversations.ingest_identity import resolve_identity
from scrm.services.conversations.ingest_writes import BatchClocks
from scrm.services.uow import Tx, unit_of_work

if TYPE_CHECKING:
    from scrm.context import AppContext

RETRIES = 4  # a concurrent duplicate (look again) or a deadlock victim (run again)


async def ingest_each(ctx: AppContext, inbox: Inbox, items: Sequence[InboundMessage | ChannelEvent]) -> list[IngestOutcome]:
    """Store items one transaction each (events, and the fallback of a failed batch)."""
    outcomes: list[IngestOutcome] = []
    for item in items:
        started = time.perf_counter()
        for attempt in range(RETRIES):
            try:
                async with unit_of_work(ctx) as tx:
                    if isinstance(item, InboundMessage):
                        outcome = await store_message(tx, inbox, item)
                    else:
                        outcome = await apply_event(tx, inbox, item)
                break
            except (IntegrityError, DBAPIError) as exc:
                # A concurrent transaction stored the same message / identity first (look again), or
                # PostgreSQL chose this transaction as a deadlock victim (run it again).
                if attempt == RETRIES - 1 or not (isinstance(exc, IntegrityError) or rules.is_retryable(exc)):
                    raise
        outcomes.append(outcome)
        kind = "duplicate" if outcome.duplicate else ("message" if isinstance(item, InboundMessage) else "event")
        INGESTED.labels(channel=inbox.channel_type, result=kind).inc()
        INGEST_LATENCY.labels(channel=inbox.channel_type).observe(time.perf_counter() - started)
    return outcomes


async def store_message(tx: Tx, inbox: Inbox, msg: InboundMessage) -> IngestOutcome:
    """Store one message in `tx` (dedup, identity, conversation, row, clocks, events)."""
    existing = await tx.session.execute(
        select(Message.id, Message.conversation_id).where(Message.inbox_id == inbox.id, Message.external_id == msg.external_id)
    )
    row = existing.first()
    if row is not None:
        return IngestOutcome(duplicate=True, message_id=row.id, conversation_id=row.conversation_id)

    now = utcnow()
    identity, contact, _ = await resolve_identity(tx, inbox, msg.sender_id, msg.profile, now)
    conversation, created, reopened = await open_or_reopen(
        tx, inbox, identity, contact, msg, now, await _candidate(tx, inbox, identity, contact, msg))

    reply_to_id = None
    if msg.reply_to_external_id:
        reply_to_id = await tx.session.scalar(
            select(Message.id).where(Message.inbox_id == inbox.id, Message.external_id == msg.reply_to_external_id)
        )
    message = Message(**rules.message_values(inbox, msg, conversation, reply_to_id, now))
    tx.session.add(message)
    clocks = BatchClocks()
    clocks.move(msg, identity, contact, conversation, now)
    await tx.session.flush()
    await clocks.write(tx.session, postgresql=is_postgresql(tx.session))
    return emit_stored(tx, inbox, msg, message.id, conversation, contact, created=created, reopened=reopened)


def emit_stored(
    tx: Tx, inbox: Inbox, msg: InboundMessage, message_id: int, conversation: Conversation, contact: Contact,
    *, created: bool, reopened: bool,
) -> IngestOutcome:
    """Queue the events of a flushed message (published after commit) and describe what was stored."""
    return rules.stored_events(tx.events, inbox, msg, message_id, conversation.id, conversation.handler, contact.id,
                               created=created, reopened=reopened)


async def _candidate(
    tx: Tx, inbox: Inbox, identity: ContactIdentity, contact: Contact, msg: InboundMessage
) -> Conversation | None:
    """The conversation the message continues, following the inbox's threading and reopen rules (None: a new one)."""
    if msg.conversation_hint is not None:
        hinted = await tx.session.get(Conversation, msg.conversation_hint)
        if hinted is not None and hinted.inbox_id == inbox.id and rules.may_join(hinted, contact, msg):
            return hinted
    if msg.thread_refs:
        refs = list(msg.thread_refs)
        rows = await tx.session.execute(
            select(Message.external_id, Message.conversation_id).where(
                Message.inbox_id == inbox.id, Message.external_id.in_(refs)
            )
        )
        by_ref = {r.external_id: r.conversation_id for r in rows}
        for ref in refs:  # most recent reference first
            if ref in by_ref:
                conv = await tx.session.get(Conversation, by_ref[ref])
                if conv is not None and rules.may_join(conv, contact, msg):
                    return conv
    if rules.is_threaded(tx.channels, inbox):
        return None
    latest = await tx.session.scalar(
        select(Conversation)
        .where(Conversation.identity_id == identity.id)
        .order_by(Conversation.last_activity_at.desc(), Conversation.id.desc())
        .limit(1)
    )
    return rules.continuable(inbox, latest)


async def open_or_reopen(
    tx: Tx, inbox: Inbox, identity: ContactIdentity, contact: Contact, msg: InboundMessage, now: datetime,
    candidate: Conversation | None,
) -> tuple[Conversation, bool, bool]:
    """(conversation, created, reopened): a new conversation when there is no candidate, else the
    candidate, opened again if it was not open (ingest_rules.reopen)."""
    if candidate is None:
        conversation = rules.new_conversation(inbox, identity, contact, msg, now)
        tx.session.add(conversation)
        await tx.session.flush()
        return conversation, True, False
    previous = rules.reopen(candidate)
    if previous is not None and previous != "resolved":  # a reopen is announced with the message (stored_events)
        tx.emit(ev.CONVERSATION_STATUS_CHANGED, conversation_id=candidate.id, status="open", previous=previous, by="contact")
    return candidate, False, previous == "resolved"
