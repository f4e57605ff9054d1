"""PostgreSQL: the batch function (scrm_ingest_batch) stores what the Python batch path stores.

The same story is told twice, to an inbox whose batches go through the function and to one whose
batches take the Python path, and everything a user could see is compared: messages, conversations
(reopened, opened anew), contacts and identities, the acknowledgements and the events.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, select, text

from scrm import events as ev
from scrm.context import AppContext
from scrm.db.models import Contact, ContactIdentity, Conversation, Inbox, Message
from scrm.db.models_events import EventRecord
from scrm.domain import Attachment, ContactProfile, InboundMessage
from scrm.event_interest import logged as is_logged
from scrm.event_log import listening
from scrm.services.conversations import ingest_pg
from scrm.services.conversations.ingest import group_commit, ingest
from tests.conftest import make_inbox

pytestmark = pytest.mark.usefixtures("backend")


SENDERS = ["s1", "s2", "s3", "s4", "s5", "s6"]


async def tell_story(ctx: AppContext, inbox: Inbox, *, fast: bool) -> tuple[list[Any], list[ev.Event]]:
    group_commit(ctx).fast = fast
    await asyncio.gather(*[ingest(ctx, inbox, [InboundMessage(f"{inbox.id}-first-{s}", s, f"first {s}",
                                                              profile=ContactProfile(name=f"name {s}"))])
                           for s in SENDERS])
    async with ctx.db.transaction() as s:
        idents = {i.external_id: i for i in await s.scalars(select(ContactIdentity).where(ContactIdentity.inbox_id == inbox.id))}
        convs = {c.identity_id: c for c in await s.scalars(select(Conversation).where(Conversation.inbox_id == inbox.id))}
        contacts = {c.id: c for c in await s.scalars(select(Contact))}
        resolved = convs[idents["s2"].id]
        resolved.status, resolved.handler, resolved.bot_state = "resolved", "human", {"step": 3}
        resolved.resolved_at, resolved.waiting_since, resolved.unread_count = datetime.now(UTC), None, 0
        snoozed = convs[idents["s3"].id]
        snoozed.status, snoozed.handler = "snoozed", "human"
        snoozed.snoozed_until = datetime.now(UTC) + timedelta(hours=1)
        idents["s4"].reachable, idents["s4"].unreachable_reason = False, "blocked"
        kept = contacts[idents["s5"].contact_id]
        kept.email, kept.phone = "kept@example.com", "+86 10 1234"
        contacts[idents["s6"].contact_id].merged_into_id = idents["s1"].contact_id

    seen: list[ev.Event] = []

    async def record(event: ev.Event) -> None:
        if event.data.get("inbox_id", inbox.id) == inbox.id:
            seen.append(event)

    unsubscribe = ctx.bus.subscribe(record, everywhere=True)
    async with ctx.db.session() as s:
        logged_from = await s.scalar(select(func.coalesce(func.max(EventRecord.id), 0)))
    p = inbox.id
    requests = [
        [InboundMessage(f"{p}-a", "s1", "换个名字", profile=ContactProfile(name="新名字", username="s1_handle"),
                        auto_submitted=True)],
        [InboundMessage(f"{p}-b", "s2", "又来了", payload={"subject": "重新打开"})],
        [InboundMessage(f"{p}-c", "s3", "  snoozed\n  wakes   up ",
                        profile=ContactProfile(language="en", attributes={"source": "oamenu3", "tier": 2}))],
        [InboundMessage(f"{p}-d", "s4", None, content_type="image",
                        attachments=(Attachment(kind="image", filename="a.png", mime_type="image/png", size=3, url="https://x/a.png"),),
                        sent_at=datetime(2026, 11, 1, 8, 0, tzinfo=UTC), payload={"choice": "yes"})],
        [InboundMessage(f"{p}-e", "s5", "email?", profile=ContactProfile(email="new@example.com", phone="+1 555"))],
        [InboundMessage(f"{p}-f", "s6", "merged")],
        [InboundMessage(f"{p}-g", "s7", "new person", profile=ContactProfile(
            name="Newcomer", attributes={"gender": "female", "wechat_unionid": "oU7", "source": "kf_link"})),
         InboundMessage(f"{p}-g2", "s7", "same batch", profile=ContactProfile(attributes={"source": "later", "gender": "f"}))],
        [InboundMessage(f"{p}-first-s1", "s1", "first s1")],  # a platform's retry of an old message
        [InboundMessage(f"{p}-h", "s1", "second in batch"), InboundMessage(f"{p}-h", "s1", "second in batch")],
        [InboundMessage(f"{p}-i", "s2", "and again", profile=ContactProfile(name="name s2"))],
        [InboundMessage(f"{p}-j", "s5", "x" * 300, profile=ContactProfile(attributes={"vip": True}))],
    ]
    acks = await asyncio.gather(*[ingest(ctx, inbox, r) for r in requests])
    await asyncio.sleep(0.05)
    unsubscribe()
    async with ctx.db.session() as s:  # the event log: what consumers will work (nobody works it here)
        logged = [ev.Event(r.name, r.payload) for r in await s.scalars(
            select(EventRecord).where(EventRecord.id > logged_from).order_by(EventRecord.id))]
    # Logged in the transaction that stored the messages: every event a consumer may act on, nothing else.
    snapshot = await listening(ctx)
    assert sorted((e.name, sorted(e.data.items())) for e in logged) == sorted(
        (e.name, sorted(e.data.items())) for e in seen if is_logged(e, snapshot))
    return acks, seen


async def snapshot(ctx: AppContext, inbox: Inbox, acks: list[Any], events: list[ev.Event]) -> dict[str, Any]:
    """What a user sees, with database ids replaced by the story's names."""
    prefix = f"{inbox.id}-"
    async with ctx.db.session() as s:
        idents = {i.id: i for i in await s.scalars(select(ContactIdentity).where(ContactIdentity.inbox_id == inbox.id))}
        contacts = {c.id: c for c in await s.scalars(select(Contact))}
        convs = {c.id: c for c in await s.scalars(select(Conversation).where(Conversation.inbox_id == inbox.id))}
        messages = list(await s.scalars(select(Message).where(Message.inbox_id == inbox.id).order_by(Message.id)))
    sender_of_contact = {cid: "+".join(sorted(i.external_id for i in idents.values() if i.contact_id == cid))
                         for cid in {i.contact_id for i in idents.values()}}  # s6's identity follows its merge
    conv_name = {}
    for cid in sorted(convs):
        sender = idents[convs[cid].identity_id].external_id
        conv_name[cid] = f"{sender}#{sum(1 for n in conv_name.values() if n.startswith(sender + '#'))}"
    msg_name = {m.id: m.external_id.removeprefix(prefix) for m in messages}

    def name(key: str, value: Any) -> Any:
        if key == "conversation_id":
            return conv_name.get(value, value)
        if key == "message_id":
            return msg_name.get(value, value)
        if key == "contact_id":
            return sender_of_contact.get(value, value)
        if key == "inbox_id":
            return "inbox"
        return value

    return {
        # Each conversation's messages in order (a batch's senders are stored on two paths, so the
        # ids of different conversations' messages may interleave differently).
        "messages": [row[:1] + row[2:] for row in sorted(
            (conv_name[m.conversation_id], m.id, msg_name[m.id], m.text, m.content_type, m.attachments, m.payload,
             m.sent_at, m.direction, m.sender_kind, m.private, m.edit_history) for m in messages)],
        "conversations": sorted((conv_name[c.id], c.status, c.handler, c.unread_count, c.waiting_since is not None,
                                 c.last_message_preview, c.subject, c.bot_state, c.resolved_at is None,
                                 c.snoozed_until is None) for c in convs.values()),
        "identities": sorted((i.external_id, i.username, i.reachable, i.unreachable_reason, i.last_inbound_at is not None,
                              sender_of_contact.get(i.contact_id), i.source) for i in idents.values()),
        "contacts": sorted((sender_of_contact[c.id], c.name, c.email, c.phone, c.language, c.merged_into_id is not None,
                            json.dumps(c.attributes, sort_keys=True)) for c in contacts.values() if c.id in sender_of_contact),
        "acks": [[(a.duplicate, name("message_id", a.message_id), name("conversation_id", a.conversation_id)) for a in ack]
                 for ack in acks],
        "events": sorted((e.name, tuple(sorted((k, str(name(k, v))) for k, v in e.data.items()))) for e in events),
    }


@pytest.mark.parametrize("policy", ["reopen", "new"])
async def test_the_function_stores_what_the_python_path_stores(quiet_ctx: AppContext, policy: str) -> None:
    ctx = quiet_ctx
    fast_inbox = await make_inbox(ctx, name="fast", reopen_policy=policy)
    python_inbox = await make_inbox(ctx, name="python", reopen_policy=policy)
    fast = await snapshot(ctx, fast_inbox, *await tell_story(ctx, fast_inbox, fast=True))
    assert group_commit(ctx).fast is True  # the function took its part (no fall back to the batch path)
    with_attributes = InboundMessage("x", "s", "hi", profile=ContactProfile(attributes={"gender": "female"}))
    assert ingest_pg.handled(with_attributes, threaded=False)  # a new 微信客服 customer's profile: the function's
    python = await snapshot(ctx, python_inbox, *await tell_story(ctx, python_inbox, fast=False))
    for part in python:
        assert fast[part] == python[part], part
    # The story did what it says (so the comparison is not between two empty stories).
    convs = {c[0]: c for c in fast["conversations"]}
    if policy == "reopen":
        assert convs["s2#0"][1:3] == ("open", "bot") and convs["s2#0"][7] == {}
    else:
        assert convs["s2#0"][1] == "resolved" and convs["s2#1"][1:3] == ("open", "bot")
        assert convs["s2#1"][6] == "重新打开"
    assert convs["s3#0"][1:3] == ("open", "human") and convs["s3#0"][5] == "snoozed wakes up"
    identities = {i[0]: i for i in fast["identities"]}
    assert identities["s4"][2:4] == (True, None) and identities["s1"][1] == "s1_handle"
    contacts = {c[0]: c for c in fast["contacts"]}
    assert contacts["s1+s6"][1] == "新名字" and contacts["s3"][4] == "en"
    assert contacts["s5"][2:4] == ("kept@example.com", "+86 10 1234")
    # Custom attributes: keys replace, "source" is first-touch on the contact and the identity.
    assert json.loads(contacts["s7"][6]) == {"gender": "f", "wechat_unionid": "oU7", "source": "kf_link"}
    assert identities["s7"][6] == "kf_link" and identities["s3"][6] == "oamenu3"
    assert json.loads(contacts["s5"][6])["vip"] is True
    retried, twice = fast["acks"][7], fast["acks"][8]
    assert retried[0][0] is True and [a[0] for a in twice] == [False, True] and twice[0][1:] == twice[1][1:]
    assert any(name == ev.CONVERSATION_STATUS_CHANGED and ("previous", "snoozed") in data for name, data in fast["events"])


async def test_without_the_function_batches_take_the_python_path(quiet_ctx: AppContext, caplog: Any) -> None:
    """A database not yet migrated to the function still stores every message, and says what to run."""
    ctx = quiet_ctx
    inbox = await make_inbox(ctx)
    await ingest(ctx, inbox, [InboundMessage("before", "u1", "hello")])
    async with ctx.db.transaction() as s:
        await s.execute(text("DROP FUNCTION scrm_ingest_batch"))
    labels = {"from": "function", "to": "batch", "reason": "UndefinedFunctionError"}
    counted = REGISTRY.get_sample_value("scrm_ingest_fallbacks_total", labels) or 0
    try:
        acks = await asyncio.gather(*[ingest(ctx, inbox, [InboundMessage(f"m{i}", f"u{i % 3}", f"消息 {i}")])
                                      for i in range(12)])
        assert all(not a[0].duplicate and a[0].message_id for a in acks)
        async with ctx.db.session() as s:
            assert await s.scalar(select(func.count()).select_from(Message)) == 13
        assert group_commit(ctx).fast is False
        assert any(r.levelno == logging.WARNING and "run `scrm migrate`" in r.getMessage()
                   and "from the function path to the batch path" in r.getMessage() for r in caplog.records)
        assert (REGISTRY.get_sample_value("scrm_ingest_fallbacks_total", labels) or 0) > counted
    finally:  # the next tests share this database: the function as the newest migration that defines it
        migration = importlib.import_module("scrm.db.migrations.versions.0028_i23l_ingest_lock_order")
        async with ctx.db.transaction() as s:
            for statement in migration.statements():
                await s.execute(text(statement))
