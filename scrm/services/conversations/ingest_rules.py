"""The ingest rules, stated once: what an inbound message does to the rows it touches.

Both ways of storing messages (one at a time, ingest_one.py; a batch set-based, ingest_batch.py)
decide with these functions and differ only in how they read and write rows. Nothing here talks to
the database: the functions take rows (ORM objects not yet flushed are fine) and return values.

- dedup: a message is known by (inbox, external id); a repeat, stored or earlier in the same batch, is a duplicate;
- profile: names, language and avatar follow the platform; email and phone are only filled in, never
  overwritten; `source` is first-touch (attributes["source"] and identity.source keep the first);
- conversation: an explicit hint or a thread reference wins (only into the sender's own thread, or one
  addressed to them); otherwise the sender's latest conversation continues, unless it is resolved and
  the inbox opens a new one then; a resolved conversation reopens to the bot, afresh;
- clocks: the contact was seen, the identity wrote in (and is reachable again), the conversation's
  activity, preview, unread count (+1 per message) and "waiting since" (kept if already waiting) move;
- lock order: a batch locks its senders' identities sorted by external id, so batches never deadlock on them,
  and its conversations in id order, as a worker's event-log batch does (migration 0028), so neither waits
  for the other in a cycle.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from scrm import events as ev
from scrm.db.models import Contact, ContactIdentity, Conversation, Inbox
from scrm.domain import ContactProfile, InboundMessage, IngestOutcome

if TYPE_CHECKING:
    from scrm.context import ChannelRules

_REPLACED = ("name", "language", "avatar_url")  # the platform knows best
_FILLED_IN = ("email", "phone")  # never overwrite what an agent or the customer already set


def is_threaded(channels: ChannelRules, inbox: Inbox) -> bool:
    """Whether the inbox's channel threads conversations itself (email): messages follow references."""
    caps = channels.capabilities(inbox.channel_type)
    return bool(caps is not None and caps.threaded)


def is_retryable(exc: BaseException) -> bool:
    """A deadlock or serialization failure: the whole transaction may simply be run again."""
    orig = getattr(exc, "orig", None)
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return code in ("40P01", "40001") or "deadlock detected" in str(exc)


def failure_reason(exc: BaseException) -> str:
    """A short, bounded name for why a path failed (a metric label): the driver's error class."""
    orig = getattr(exc, "orig", None)
    cause = getattr(orig, "__cause__", None) or orig or exc
    return type(cause).__name__


def lock_order(senders: Iterable[str]) -> list[str]:
    """The order a batch locks its senders' identities in: every process and path the same."""
    return sorted(set(senders))


def repeats(messages: Sequence[InboundMessage]) -> tuple[list[int], dict[int, int]]:
    """(indexes of each external id's first copy, repeat index -> first copy's index) of a batch."""
    first: dict[str, int] = {}
    copies: dict[int, int] = {}
    for index, msg in enumerate(messages):
        if msg.external_id in first:
            copies[index] = first[msg.external_id]
        else:
            first[msg.external_id] = index
    return list(first.values()), copies


def duplicate_of(outcome: IngestOutcome) -> IngestOutcome:
    """The outcome of a repeat of an already stored message."""
    return IngestOutcome(duplicate=True, message_id=outcome.message_id, conversation_id=outcome.conversation_id)


def follows_latest(msg: InboundMessage, threaded: bool) -> bool:
    """The message goes to its sender's latest conversation (no thread, no conversation named): the
    batch path handles it set-based; the rest take the one-at-a-time path."""
    return not threaded and msg.conversation_hint is None and not msg.thread_refs


def may_join(conv: Conversation, contact: Contact, msg: InboundMessage) -> bool:
    """A message joins another contact's thread only when that thread was addressed to the sender."""
    if conv.contact_id == contact.id:
        return True
    participants = set((conv.meta or {}).get("participants", []))
    return msg.sender_id.lower() in participants


def continuable(inbox: Inbox, latest: Conversation | None) -> Conversation | None:
    """The contact's latest conversation, unless it is resolved and the inbox opens a new one then."""
    if latest is not None and latest.status == "resolved" and inbox.reopen_policy == "new":
        return None
    return latest


def new_contact(now: datetime) -> Contact:
    return Contact(first_seen_at=now, last_seen_at=now, attributes={}, opt_outs={})


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


def reopen(conv: Conversation) -> str | None:
    """A message arrived in `conv`: open it again. Returns its previous status if it was not open.
    A resolved conversation starts with the bot, afresh (not halfway through an old flow)."""
    previous = conv.status
    if previous == "open":
        return None
    conv.status = "open"
    conv.snoozed_until = None
    conv.resolved_at = None
    if previous == "resolved":
        conv.handler = "bot"
        conv.bot_state = {}
        conv.waiting_since = None
    return previous


def apply_profile(contact: Contact, identity: ContactIdentity, profile: ContactProfile) -> bool:
    """Update the contact and identity from what the platform says; True if the contact changed."""
    changed = False
    for name in _REPLACED:
        value = getattr(profile, name)
        if value and getattr(contact, name) != value:
            setattr(contact, name, value)
            changed = True
    for name in _FILLED_IN:
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
    return changed


def wrote_in(msg: InboundMessage, identity: ContactIdentity, conversation: Conversation) -> None:
    """The rare clock changes of an inbound message, on the rows: the identity is reachable again (they
    wrote, the channel works) and an email's recipients join the conversation's participants. The
    frequent ones (seen, activity, unread, waiting since) are written set-based (ingest_writes.BatchClocks)."""
    if not identity.reachable and msg.content_type != "event":
        identity.reachable = True
        identity.unreachable_reason = None
    recipients = msg.payload.get("recipients") if isinstance(msg.payload, dict) else None
    if recipients:
        meta = dict(conversation.meta or {})
        meta["participants"] = sorted(set(meta.get("participants", [])) | {str(r).lower() for r in recipients})
        conversation.meta = meta


def preview(text: str | None, content_type: str) -> str:
    """A one-line preview for the conversation list."""
    if text:
        line = " ".join(text.split())
        return line[:197] + "…" if len(line) > 198 else line
    return f"[{content_type}]"


def message_values(
    inbox: Inbox, msg: InboundMessage, conversation: Conversation, reply_to_id: int | None, now: datetime,
) -> dict[str, Any]:
    """The columns of an inbound message's row."""
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


def _attachment_dict(a: Any) -> dict[str, Any]:
    d = asdict(a)
    d["source"] = dict(d.get("source") or {})
    return {k: v for k, v in d.items() if v not in (None, {}, "")}


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
