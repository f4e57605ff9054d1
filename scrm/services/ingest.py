"""The ingest service: the single sink every channel calls.

For each InboundMessage, in one transaction: dedup (inbox + external id), identity -> contact,
find or open the conversation, store the message, update timestamps. Events are published after
commit. A concurrent duplicate loses the unique-constraint race and is retried, then seen as a
duplicate, so 20 identical posts store one message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, IntegrityError

from scrm import events as ev
from scrm.db.models import Contact, ContactIdentity, Conversation, Delivery, Inbox, Message, utcnow
from scrm.db.sql import is_postgresql
from scrm.domain import ChannelEvent, ChannelEventKind, ContactProfile, InboundMessage, IngestOutcome
from scrm.metrics import INGEST_LATENCY, INGESTED
from scrm.services.inbound_clean import clean_items
from scrm.services.ingest_writes import BatchClocks
from scrm.services.uow import Tx, unit_of_work

if TYPE_CHECKING:
    from scrm.context import AppContext
    from scrm.services.ingest_batch import GroupCommit

log = logging.getLogger("scrm.ingest")

HARD_BOUNCES_UNREACHABLE = 2  # repeated hard bounces make an email identity unreachable
_RETRIES = 4


def is_retryable(exc: BaseException) -> bool:
    """A deadlock or serialization failure: the whole transaction may simply be run again."""
    code = getattr(getattr(exc, "orig", None), "sqlstate", None) or getattr(getattr(exc, "orig", None), "pgcode", None)
    return code in ("40P01", "40001") or "deadlock detected" in str(exc)


async def ingest(ctx: AppContext, inbox: Inbox, items: Sequence[InboundMessage | ChannelEvent]) -> list[IngestOutcome]:
    """Store every item exactly once; returns one outcome per item, after the commit that stored it.

    Messages go through the process's group commit (concurrent requests share a transaction);
    requests that carry channel events are stored item by item, in order. Values no database can
    store (NUL characters, unpaired surrogates, ...) are cleaned first (inbound_clean.py).
    """
    items = clean_items(items)
    if items and all(isinstance(item, InboundMessage) for item in items):
        return await group_commit(ctx).submit(inbox, list(items))  # type: ignore[arg-type]
    return await ingest_each(ctx, inbox, items)


def group_commit(ctx: AppContext) -> GroupCommit:
    from scrm.services.ingest_batch import GroupCommit

    batcher = ctx.extras.get("group_commit")
    if batcher is None:
        batcher = ctx.extras["group_commit"] = GroupCommit(ctx)
    return batcher


async def ingest_each(ctx: AppContext, inbox: Inbox, items: Sequence[InboundMessage | ChannelEvent]) -> list[IngestOutcome]:
    """Store items one transaction each (events, and the fallback of a failed batch)."""
    outcomes: list[IngestOutcome] = []
    for item in items:
        started = time.perf_counter()
        for attempt in range(_RETRIES):
            try:
                async with unit_of_work(ctx) as tx:
                    if isinstance(item, InboundMessage):
                        outcome = await store_message(tx, inbox, item)
                    else:
                        outcome = await _apply_event(tx, inbox, item)
                break
            except (IntegrityError, DBAPIError) as exc:
                # A concurrent transaction stored the same message / identity first (look again), or
                # PostgreSQL chose this transaction as a deadlock victim (run it again).
                if attempt == _RETRIES - 1 or not (isinstance(exc, IntegrityError) or is_retryable(exc)):
                    raise
        outcomes.append(outcome)
        kind = "duplicate" if outcome.duplicate else ("message" if isinstance(item, InboundMessage) else "event")
        INGESTED.labels(channel=inbox.channel_type, result=kind).inc()
        INGEST_LATENCY.labels(channel=inbox.channel_type).observe(time.perf_counter() - started)
    return outcomes


async def _find_identity(tx: Tx, inbox_id: int, external_id: str, *, lock: bool) -> ContactIdentity | None:
    stmt = select(ContactIdentity).where(ContactIdentity.inbox_id == inbox_id, ContactIdentity.external_id == external_id)
    if lock:
        # Serializes conversation choice per identity on PostgreSQL. NO KEY UPDATE: foreign-key checks
        # of concurrent inserts (a bot reply's delivery row) must not wait on it, or they deadlock.
        stmt = stmt.with_for_update(key_share=True)
    return await tx.session.scalar(stmt)


async def resolve_identity(
    tx: Tx, inbox: Inbox, external_id: str, profile: ContactProfile | None, now: datetime
) -> tuple[ContactIdentity, Contact, bool]:
    """Find the identity (inbox + external user id) and its contact, creating both when new."""
    identity = await _find_identity(tx, inbox.id, external_id, lock=True)
    if identity is not None:
        contact = await tx.session.get(Contact, identity.contact_id)
        assert contact is not None
        while contact.merged_into_id is not None:  # follow merges to the surviving contact
            merged = await tx.session.get(Contact, contact.merged_into_id)
            assert merged is not None
            contact = merged
            identity.contact_id = contact.id
        if profile is not None:
            apply_profile(tx, contact, identity, profile)
        return identity, contact, False
    contact = new_contact(now)
    tx.session.add(contact)
    await tx.session.flush()
    identity = ContactIdentity(inbox_id=inbox.id, external_id=external_id, contact_id=contact.id, attributes={})
    tx.session.add(identity)
    if profile is not None:
        apply_profile(tx, contact, identity, profile)
    await tx.session.flush()  # raises IntegrityError if a concurrent request created it first
    tx.emit(ev.CONTACT_UPDATED, contact_id=contact.id, created=True)
    return identity, contact, True


def new_contact(now: datetime) -> Contact:
    return Contact(first_seen_at=now, last_seen_at=now, attributes={}, opt_outs={})


def apply_profile(tx: Tx, contact: Contact, identity: ContactIdentity, profile: ContactProfile) -> None:
    changed = False
    for name in ("name", "language", "avatar_url"):
        value = getattr(profile, name)
        if value and getattr(contact, name) != value:
            setattr(contact, name, value)
            changed = True
    for name in ("email", "phone"):  # never overwrite what an agent or the customer already set
        value = getattr(profile, name)
        if value and not getattr(contact, name):
            setattr(contact, name, value)
            changed = True
    if profile.username and identity.username != profile.username:
        identity.username = profile.username
    if profile.attributes:
        attrs = dict(contact.attributes or {})
        for key, value in profile.attributes.items():
            if key == "source":
                identity.source = identity.source or str(value)
                attrs.setdefault("source", value)  # first-touch attribution
            else:
                attrs[key] = value
        if attrs != contact.attributes:
            contact.attributes = attrs
            changed = True
    if changed and contact.id is not None:
        tx.emit(ev.CONTACT_UPDATED, contact_id=contact.id)


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
    conversation, created, reopened = await _choose_conversation(tx, inbox, identity, contact, msg, now)

    reply_to_id = None
    if msg.reply_to_external_id:
        reply_to_id = await tx.session.scalar(
            select(Message.id).where(Message.inbox_id == inbox.id, Message.external_id == msg.reply_to_external_id)
        )
    message = Message(**message_values(inbox, msg, conversation, reply_to_id, now))
    tx.session.add(message)
    clocks = BatchClocks()
    clocks.move(msg, identity, contact, conversation, now)
    await tx.session.flush()
    await clocks.write(tx.session, postgresql=is_postgresql(tx.session))
    return emit_stored(tx, inbox, msg, message.id, conversation, contact, created=created, reopened=reopened)


def message_values(
    inbox: Inbox, msg: InboundMessage, conversation: Conversation, reply_to_id: int | None, now: datetime,
) -> dict[str, Any]:
    """The columns of an inbound message's row (the batch path inserts many with one statement)."""
    return {
        "conversation_id": conversation.id,
        "inbox_id": inbox.id,
        "direction": "in",
        "sender_kind": "contact",
        **message_content(msg),
        "reply_to_id": reply_to_id,
        "created_at": now,
        "edit_history": [],
    }


def message_content(msg: InboundMessage) -> dict[str, Any]:
    """The columns of an inbound message's row that come from the message itself."""
    return {
        "content_type": str(msg.content_type),
        "text": msg.text,
        "attachments": [_attachment_dict(a) for a in msg.attachments],
        "external_id": msg.external_id,
        "payload": dict(msg.payload) | ({"auto_submitted": True} if msg.auto_submitted else {}),
        "sent_at": msg.sent_at.astimezone(UTC) if msg.sent_at and msg.sent_at.tzinfo else None,
    }


def emit_stored(
    tx: Tx, inbox: Inbox, msg: InboundMessage, message_id: int, conversation: Conversation, contact: Contact,
    *, created: bool, reopened: bool,
) -> IngestOutcome:
    """Queue the events of a flushed message (published after commit) and describe what was stored."""
    return stored_events(tx.events, inbox, msg, message_id, conversation.id, conversation.handler, contact.id,
                         created=created, reopened=reopened)


def stored_events(
    events: list[ev.Event], inbox: Inbox, msg: InboundMessage, message_id: int, conversation_id: int, handler: str,
    contact_id: int, *, created: bool, reopened: bool,
) -> IngestOutcome:
    """Append the events of a stored message to `events` and describe what was stored."""
    if created:
        events.append(ev.Event(ev.CONVERSATION_CREATED, {"conversation_id": conversation_id, "inbox_id": inbox.id,
                                                         "contact_id": contact_id}))
    if reopened:
        events.append(ev.Event(ev.CONVERSATION_STATUS_CHANGED, {"conversation_id": conversation_id, "status": "open",
                                                                "previous": "resolved", "by": "contact"}))
    events.append(ev.Event(ev.MESSAGE_CREATED, {
        "message_id": message_id,
        "conversation_id": conversation_id,
        "inbox_id": inbox.id,
        "channel": inbox.channel_type,
        "direction": "in",
        "sender_kind": "contact",
        "handler": handler,
        "content_type": str(msg.content_type),
        "auto_submitted": msg.auto_submitted,
    }))
    changed = ["status"] if created or reopened else []
    events.append(ev.Event(ev.CONVERSATION_UPDATED, {"conversation_id": conversation_id, "inbox_id": inbox.id,
                                                     "changed": [*changed, "activity"]}))
    return IngestOutcome(duplicate=False, message_id=message_id, conversation_id=conversation_id, contact_id=contact_id)


def _attachment_dict(a: Any) -> dict[str, Any]:
    d = asdict(a)
    d["source"] = dict(d.get("source") or {})
    return {k: v for k, v in d.items() if v not in (None, {}, "")}


async def _choose_conversation(
    tx: Tx, inbox: Inbox, identity: ContactIdentity, contact: Contact, msg: InboundMessage, now: datetime
) -> tuple[Conversation, bool, bool]:
    """Return (conversation, created, reopened) following the inbox's threading and reopen rules."""
    threaded = is_threaded(inbox)
    candidate: Conversation | None = None
    if msg.conversation_hint is not None:
        hinted = await tx.session.get(Conversation, msg.conversation_hint)
        if hinted is not None and hinted.inbox_id == inbox.id and _may_join(hinted, contact, msg):
            candidate = hinted
    if candidate is None and msg.thread_refs:
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
                if conv is not None and _may_join(conv, contact, msg):
                    candidate = conv
                    break
    if candidate is None and not threaded:
        candidate = await tx.session.scalar(
            select(Conversation)
            .where(Conversation.identity_id == identity.id)
            .order_by(Conversation.last_activity_at.desc(), Conversation.id.desc())
            .limit(1)
        )
        candidate = continuable(inbox, candidate)
    return await open_or_reopen(tx, inbox, identity, contact, msg, now, candidate)


def follows_latest(msg: InboundMessage, threaded: bool) -> bool:
    """The message goes to its sender's latest conversation (no thread, no conversation named): the
    batch paths handle it set-based; the rest take store_message."""
    return not threaded and msg.conversation_hint is None and not msg.thread_refs


def continuable(inbox: Inbox, latest: Conversation | None) -> Conversation | None:
    """The contact's latest conversation, unless it is resolved and the inbox opens a new one then."""
    if latest is not None and latest.status == "resolved" and inbox.reopen_policy == "new":
        return None
    return latest


def new_conversation(inbox: Inbox, identity: ContactIdentity, contact: Contact, msg: InboundMessage, now: datetime) -> Conversation:
    """A new open conversation, handled by the bot first (not yet added to the session)."""
    return Conversation(
        inbox_id=inbox.id,
        contact_id=contact.id,
        identity_id=identity.id,
        status="open",
        handler="bot",
        priority="normal",
        subject=(msg.payload.get("subject") if isinstance(msg.payload, dict) else None),
        last_activity_at=now,
        created_at=now,
        unread_count=0,
        bot_state={},
        meta={},
    )


async def open_or_reopen(
    tx: Tx, inbox: Inbox, identity: ContactIdentity, contact: Contact, msg: InboundMessage, now: datetime,
    candidate: Conversation | None,
) -> tuple[Conversation, bool, bool]:
    """Open a new conversation when there is no candidate, else reopen the candidate if needed."""
    if candidate is None:
        conversation = new_conversation(inbox, identity, contact, msg, now)
        tx.session.add(conversation)
        await tx.session.flush()
        return conversation, True, False
    reopened = False
    if candidate.status != "open":
        reopened = candidate.status == "resolved"
        previous = candidate.status
        candidate.status = "open"
        candidate.snoozed_until = None
        candidate.resolved_at = None
        if reopened:
            candidate.handler = "bot"  # a customer reopening a resolved conversation starts with the bot
            candidate.bot_state = {}  # ... afresh, not halfway through an old flow
            candidate.waiting_since = None
        elif previous != "open":
            tx.emit(ev.CONVERSATION_STATUS_CHANGED, conversation_id=candidate.id, status="open", previous=previous, by="contact")
    return candidate, False, reopened


def is_threaded(inbox: Inbox) -> bool:
    from channels.registry import get_adapter_class

    try:
        return bool(getattr(get_adapter_class(inbox.channel_type).capabilities, "threaded", False))
    except KeyError:
        return False


def _may_join(conv: Conversation, contact: Contact, msg: InboundMessage) -> bool:
    """A message joins another contact's thread only when that thread was addressed to the sender."""
    if conv.contact_id == contact.id:
        return True
    participants = set((conv.meta or {}).get("participants", []))
    return msg.sender_id.lower() in participants


async def _apply_event(tx: Tx, inbox: Inbox, event: ChannelEvent) -> IngestOutcome:
    kind = event.kind
    now = utcnow()
    if kind == ChannelEventKind.UNROUTABLE:
        from scrm.services.unroutable import store_unroutable

        return await store_unroutable(tx, inbox, event)
    if kind == ChannelEventKind.MESSAGE_EDITED:
        message = await tx.session.scalar(
            select(Message).where(Message.inbox_id == inbox.id, Message.external_id == event.external_id)
        )
        if message is None:
            return IngestOutcome(duplicate=False, ignored_reason="edited message unknown")
        new_text = event.data.get("text")
        if new_text == message.text:
            return IngestOutcome(duplicate=True, message_id=message.id, conversation_id=message.conversation_id)
        history = list(message.edit_history or [])
        history.append({"text": message.text, "replaced_at": now.isoformat()})
        message.edit_history = history
        message.text = new_text
        tx.emit(ev.MESSAGE_UPDATED, message_id=message.id, conversation_id=message.conversation_id, edited=True)
        return IngestOutcome(duplicate=False, message_id=message.id, conversation_id=message.conversation_id)

    if kind == ChannelEventKind.DELIVERY_STATUS:
        delivery = await tx.session.scalar(
            select(Delivery).where(Delivery.inbox_id == inbox.id, Delivery.external_id == event.external_id)
        )
        if delivery is None:
            return IngestOutcome(duplicate=False, ignored_reason="delivery unknown")
        if delivery.kind == "wechat_mass":  # MASSSENDJOBFINISH: WeChat's counts for a 群发 batch
            from scrm.services.wechat_mass import record_job_finish

            await record_job_finish(tx, inbox.id, str(event.external_id), event.data)
        status = str(event.data.get("status", "delivered"))
        if status not in ("delivered", "failed"):
            return IngestOutcome(duplicate=False, ignored_reason=f"status {status!r} not tracked")
        delivery.status = status
        if status == "failed":
            delivery.last_error = str(event.data.get("error") or "failed")
        if delivery.message_id is not None:
            message = await tx.session.get(Message, delivery.message_id)
            if message is not None:
                message.delivery_status = status
                message.delivery_error = delivery.last_error if status == "failed" else None
                tx.emit(ev.MESSAGE_UPDATED, message_id=message.id, conversation_id=message.conversation_id)
        tx.emit(ev.DELIVERY_UPDATED, delivery_id=delivery.id, status=status)
        return IngestOutcome(duplicate=False, message_id=delivery.message_id, conversation_id=delivery.conversation_id)

    if not event.sender_id:
        return IngestOutcome(duplicate=False, ignored_reason=f"{kind} without sender")
    creates = kind in (ChannelEventKind.CONTACT_SUBSCRIBED, ChannelEventKind.INTERACTION, ChannelEventKind.CONTACT_UPDATED)
    if creates:
        identity, contact, _ = await resolve_identity(tx, inbox, event.sender_id, event.profile, now)
    else:
        identity = await _find_identity(tx, inbox.id, event.sender_id, lock=True)
        if identity is None:
            return IngestOutcome(duplicate=False, ignored_reason=f"{kind} for unknown contact")
        contact = await tx.session.get(Contact, identity.contact_id)
        assert contact is not None
    if kind == ChannelEventKind.CONTACT_UNREACHABLE:
        if event.data.get("bounce"):
            attrs = dict(identity.attributes or {})
            attrs["hard_bounces"] = int(attrs.get("hard_bounces", 0)) + 1
            identity.attributes = attrs
            if attrs["hard_bounces"] >= HARD_BOUNCES_UNREACHABLE:
                identity.reachable = False
        else:
            identity.reachable = False
        identity.unreachable_reason = str(event.data.get("reason") or kind)
    elif kind == ChannelEventKind.CONTACT_REACHABLE:
        identity.reachable = True
        identity.unreachable_reason = None
    elif kind == ChannelEventKind.CONTACT_UNSUBSCRIBED:
        identity.subscribed = False
    elif kind == ChannelEventKind.CONTACT_SUBSCRIBED:
        identity.subscribed = True
        identity.last_inbound_at = now
        source = event.data.get("source")
        if source:
            identity.source = identity.source or str(source)
            if "source" not in (contact.attributes or {}):
                contact.attributes = dict(contact.attributes or {}) | {"source": source}
    elif kind == ChannelEventKind.INTERACTION:
        identity.last_inbound_at = now
    if isinstance(event.data.get("subscribe_msg"), Mapping):  # WeChat 订阅通知 consent or send result
        from scrm.services.wechat_subscribe import record_consent

        await record_consent(tx, identity, event.external_id, event.data["subscribe_msg"])
    if inbox.channel_type == "wechat_oa" and kind in (ChannelEventKind.CONTACT_SUBSCRIBED, ChannelEventKind.INTERACTION):
        from scrm.services.campaigns import touch_from_event  # campaign QR codes: attribution, welcome text

        await touch_from_event(tx, inbox, contact, identity, event, now)
    contact.last_seen_at = now if creates else contact.last_seen_at
    tx.emit(ev.CONTACT_UPDATED, contact_id=contact.id, identity_id=identity.id, change=str(kind))
    return IngestOutcome(duplicate=False, contact_id=contact.id)
