"""PostgreSQL fast path of the group commit: a batch stored, and its events logged, by one statement.

The function (migrations 0013, 0026: custom attributes; 0027: with its event log rows) does in the
database what ingest_batch.store_batch does for the common case, in one round trip that is its own
transaction: it restates in SQL the rules of ingest_rules.py (tests/core/test_ingest_pg.py keeps the
two equal). What it does not handle (a merged contact) comes
back as `slow`, untouched, and so does every message of a sender the function is not given at all
(threads, reply references, email participants): the caller stores those with the
Python path. A sender is wholly on one path, so its messages keep their order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import BigInteger, Boolean, DateTime, Text, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY

from scrm import event_interest as interest
from scrm import events as ev
from scrm.db.models import Inbox, utcnow
from scrm.domain import InboundMessage, IngestOutcome
from scrm.services.conversations import ingest_rules as rules

if TYPE_CHECKING:
    from scrm.context import ChannelRules
    from scrm.db.database import Database

_ARRAYS: dict[str, Any] = {
    "external_ids": Text, "senders": Text, "texts": Text, "content_types": Text, "previews": Text,
    "attachments": Text, "payloads": Text, "sent_ats": DateTime(timezone=True), "subjects": Text,
    "names": Text, "emails": Text, "phones": Text, "languages": Text, "avatars": Text, "usernames": Text,
    "profile_attributes": Text,  # a JSON object per message, NULL for none (migration 0026)
}
# The call and the event log rows of what it stored, in one statement and so in one transaction (a
# data-modifying CTE always runs): the follow-up work of an acknowledged message can never be lost. Both are
# done by scrm_ingest_logged (migration 0027), which logs the events the Python path logs (uow/event_log), in
# the order store_fast lists them; a contact's change only while a consumer may act on it (:log_new_contacts,
# :log_changed_contacts: event_interest.py, as the Python path's append decides). A function, not this CTE
# sent as text: the CTE was planned anew on every call (~0.3 ms), the function keeps generic plans.
_CALL = text(f"""
SELECT idx, outcome, message_id, conversation_id, contact_id, handler, previous_status, contact_changed,
       contact_created
FROM scrm_ingest_logged(:inbox, :new_on_resolved, :now, {', '.join(f':{name}' for name in _ARRAYS)},
                        :channel, :event_content_types, :auto_submitted, :log_new_contacts, :log_changed_contacts)
""").bindparams(
    bindparam("inbox", type_=BigInteger), bindparam("new_on_resolved", type_=Boolean),
    bindparam("now", type_=DateTime(timezone=True)), *[bindparam(n, type_=ARRAY(t)) for n, t in _ARRAYS.items()],
    bindparam("channel", type_=Text), bindparam("event_content_types", type_=ARRAY(Text)),
    bindparam("auto_submitted", type_=ARRAY(Boolean)), bindparam("log_new_contacts", type_=Boolean),
    bindparam("log_changed_contacts", type_=Boolean),
)


@dataclass
class FastOutcome:
    """What the call stored: outcomes by message index, their events, and the indexes left to store."""

    outcomes: dict[int, IngestOutcome] = field(default_factory=dict)
    events: list[ev.Event] = field(default_factory=list)
    rest: list[int] = field(default_factory=list)


def handled(msg: InboundMessage, threaded: bool) -> bool:
    """Whether the function can store this message (else its sender takes the Python path)."""
    return (
        rules.follows_latest(msg, threaded) and not msg.reply_to_external_id
        and not (isinstance(msg.payload, dict) and msg.payload.get("recipients"))
    )


async def store_fast(db: Database, channels: ChannelRules, inbox: Inbox, messages: list[InboundMessage],
                     listening: interest.Listening = interest.ANY) -> FastOutcome:
    """Store what the function handles of `messages` (one inbox, arrival order) in one call; `listening`
    decides whether contact changes are logged (event_log.listening)."""
    threaded = rules.is_threaded(channels, inbox)
    python_senders = {m.sender_id for m in messages if not handled(m, threaded)}
    # Given to the function: each external id once (a repeat inside the batch is a duplicate of its first copy).
    eligible = [i for i, m in enumerate(messages) if m.sender_id not in python_senders]
    firsts, repeated = rules.repeats([messages[i] for i in eligible])
    sent = [eligible[j] for j in firsts]
    copies = {eligible[j]: eligible[k] for j, k in repeated.items()}
    result = FastOutcome()
    if sent:
        rows = await db.hot_call(_CALL, _arguments(inbox, [messages[i] for i in sent]) | {
            "log_new_contacts": interest.logged(ev.Event(ev.CONTACT_UPDATED, {"created": True}), listening),
            "log_changed_contacts": interest.logged(ev.Event(ev.CONTACT_UPDATED, {}), listening)})
        stored: list[tuple[int, Any]] = []
        for row in sorted(rows, key=lambda r: r.idx):
            index = sent[row.idx - 1]
            if row.outcome == "slow":
                python_senders.add(messages[index].sender_id)
            elif row.outcome == "duplicate":
                result.outcomes[index] = IngestOutcome(duplicate=True, message_id=row.message_id,
                                                       conversation_id=row.conversation_id)
            else:
                stored.append((index, row))
        # Events in the order the Python path queues them: new people, profile and status changes, then the messages.
        for _, row in sorted((r for r in stored if r[1].contact_created), key=lambda r: messages[r[0]].sender_id):
            result.events.append(ev.Event(ev.CONTACT_UPDATED, {"contact_id": row.contact_id, "created": True}))
        for _, row in stored:
            if row.contact_changed:
                result.events.append(ev.Event(ev.CONTACT_UPDATED, {"contact_id": row.contact_id}))
            if row.previous_status:
                result.events.append(ev.Event(ev.CONVERSATION_STATUS_CHANGED, {
                    "conversation_id": row.conversation_id, "status": "open", "previous": row.previous_status,
                    "by": "contact"}))
        for index, row in stored:
            result.outcomes[index] = rules.stored_events(
                result.events, inbox, messages[index], row.message_id, row.conversation_id, row.handler,
                row.contact_id, created=row.outcome == "created", reopened=row.outcome == "reopened")
    for index, original in copies.items():
        if original in result.outcomes:
            result.outcomes[index] = rules.duplicate_of(result.outcomes[original])
    result.rest = [i for i, m in enumerate(messages) if i not in result.outcomes]
    return result


def _arguments(inbox: Inbox, messages: list[InboundMessage]) -> dict[str, Any]:
    columns: dict[str, list[Any]] = {name: [] for name in _ARRAYS}
    for msg in messages:
        values = rules.message_content(msg)
        profile = msg.profile
        columns["external_ids"].append(msg.external_id)
        columns["senders"].append(msg.sender_id)
        columns["texts"].append(msg.text)
        columns["content_types"].append(values["content_type"])
        columns["previews"].append(rules.preview(msg.text, msg.content_type))
        columns["attachments"].append(json.dumps(values["attachments"]))
        columns["payloads"].append(json.dumps(values["payload"]))
        columns["sent_ats"].append(values["sent_at"])
        columns["subjects"].append(msg.payload.get("subject") if isinstance(msg.payload, dict) else None)
        for name, attr in (("names", "name"), ("emails", "email"), ("phones", "phone"), ("languages", "language"),
                           ("avatars", "avatar_url"), ("usernames", "username")):
            columns[name].append(getattr(profile, attr, None) if profile is not None else None)
        attributes = profile.attributes if profile is not None else None
        columns["profile_attributes"].append(json.dumps(dict(attributes)) if attributes else None)
    return {"inbox": inbox.id, "new_on_resolved": inbox.reopen_policy == "new", "now": utcnow(), **columns,
            "channel": inbox.channel_type, "event_content_types": [str(m.content_type) for m in messages],
            "auto_submitted": [bool(m.auto_submitted) for m in messages]}
