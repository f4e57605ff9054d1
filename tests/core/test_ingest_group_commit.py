"""Group commit: concurrent messages for one inbox share a transaction, with the single path's guarantees."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

from sqlalchemy import func, select

from scrm import events as ev
from scrm.db.models import Contact, ContactIdentity, Conversation, Message
from scrm.domain import ContactProfile, InboundMessage
from scrm.services.conversations.ingest import group_commit, ingest
from tests.conftest import make_inbox


async def count(ctx: Any, model: Any) -> int:
    async with ctx.db.session() as s:
        return int(await s.scalar(select(func.count()).select_from(model)) or 0)


def recorder(ctx: Any) -> list[ev.Event]:
    seen: list[ev.Event] = []

    async def listener(event: ev.Event) -> None:
        seen.append(event)

    ctx.bus.subscribe(listener, everywhere=True)
    return seen


async def burst(ctx: Any, inbox: Any, batches: list[list[InboundMessage]]) -> list[list[Any]]:
    """Submit every request at once so they queue behind one another (as under load)."""
    return await asyncio.gather(*[ingest(ctx, inbox, b) for b in batches])


async def test_concurrent_requests_share_transactions_and_each_gets_its_own_outcome(ctx):
    inbox = await make_inbox(ctx)
    commits = 0
    original = group_commit(ctx)._commit

    async def counting(batch: Any) -> None:
        nonlocal commits
        commits += 1
        await original(batch)

    group_commit(ctx)._commit = counting  # type: ignore[method-assign]
    requests = [[InboundMessage(f"gc-{i}", f"user-{i % 7}", f"第{i}条消息", profile=ContactProfile(name=f"客户{i % 7}"))]
                for i in range(60)]
    results = await burst(ctx, inbox, requests)
    assert commits < 60, "concurrent requests should have been grouped"
    assert [len(r) for r in results] == [1] * 60
    assert all(not r[0].duplicate and r[0].message_id for r in results)
    assert len({r[0].message_id for r in results}) == 60
    assert await count(ctx, Message) == 60
    assert await count(ctx, Contact) == 7 and await count(ctx, ContactIdentity) == 7
    assert await count(ctx, Conversation) == 7
    async with ctx.db.session() as s:
        conv_unread = dict((await s.execute(select(Conversation.id, Conversation.unread_count))).all())
        names = set((await s.scalars(select(Contact.name))).all())
    assert sorted(conv_unread.values()) == sorted([9, 9, 9, 9, 8, 8, 8])  # 60 messages over 7 senders
    assert names == {f"客户{i}" for i in range(7)}
    # Each sender's messages keep their arrival order within their conversation.
    async with ctx.db.session() as s:
        rows = (await s.execute(select(Message.text, Message.conversation_id).order_by(Message.id))).all()
    by_conv: dict[int, list[int]] = {}
    for text, cid in rows:
        by_conv.setdefault(cid, []).append(int(text[1:-3]))
    assert all(seq == sorted(seq) for seq in by_conv.values())


async def test_duplicates_inside_one_batch_and_across_batches_are_stored_once(ctx):
    inbox = await make_inbox(ctx)
    [first] = await ingest(ctx, inbox, [InboundMessage("early", "u1", "before")])
    requests = [[InboundMessage("same", "u2", "platform retry")] for _ in range(10)]
    requests += [[InboundMessage("early", "u1", "before")]]
    results = await burst(ctx, inbox, requests)
    stored = [r[0] for r in results[:10] if not r[0].duplicate]
    assert len(stored) == 1
    assert {r[0].message_id for r in results[:10]} == {stored[0].message_id}
    assert results[10][0].duplicate and results[10][0].message_id == first.message_id
    assert await count(ctx, Message) == 2


async def test_events_follow_commit_in_message_order(ctx):
    inbox = await make_inbox(ctx)
    seen = recorder(ctx)
    requests = [[InboundMessage(f"ev-{i}", "same-person", f"m{i}")] for i in range(8)]
    results = await burst(ctx, inbox, requests)
    await ctx.bus.drain()
    created = [e for e in seen if e.name == ev.MESSAGE_CREATED]
    assert [e.data["message_id"] for e in created] == sorted(r[0].message_id for r in results)
    assert sum(1 for e in seen if e.name == ev.CONVERSATION_CREATED) == 1
    assert sum(1 for e in seen if e.name == ev.CONTACT_UPDATED and e.data.get("created")) == 1


async def test_resolved_conversation_rules_apply_inside_a_batch(ctx):
    inbox = await make_inbox(ctx, reopen_policy="new")
    [a] = await ingest(ctx, inbox, [InboundMessage("n1", "u1", "first")])
    async with ctx.db.transaction() as s:
        conv = await s.get(Conversation, a.conversation_id)
        conv.status = "resolved"
    results = await burst(ctx, inbox, [[InboundMessage(f"n{i}", "u1", f"again {i}")] for i in range(2, 6)])
    new_ids = {r[0].conversation_id for r in results}
    assert len(new_ids) == 1 and a.conversation_id not in new_ids  # one new conversation, not four
    async with ctx.db.session() as s:
        assert (await s.get(Conversation, a.conversation_id)).status == "resolved"


async def test_one_bad_request_does_not_fail_its_neighbours(ctx):
    inbox = await make_inbox(ctx)
    good = [[InboundMessage(f"ok-{i}", f"p{i}", "fine")] for i in range(5)]
    bad = [InboundMessage("bad", "p-bad", "x" * 10, payload={"oops": object()})]  # not JSON-serialisable
    results = await asyncio.gather(*[ingest(ctx, inbox, b) for b in [*good[:2], bad, *good[2:]]], return_exceptions=True)
    assert isinstance(results[2], Exception)
    assert all(not isinstance(r, Exception) and not r[0].duplicate for i, r in enumerate(results) if i != 2)
    assert await count(ctx, Message) == 5


def fallbacks_in(metrics: str, source: str, target: str) -> float:
    """The count /metrics reports for fallbacks from `source` to `target` (any reason)."""
    pattern = re.compile(rf'^scrm_ingest_fallbacks_total{{from="{source}",reason="[^"]*",to="{target}"}} (\S+)$', re.M)
    return sum(float(v) for v in pattern.findall(metrics))


async def test_a_failed_batch_falls_back_to_one_at_a_time_with_a_warning_and_a_count(client, ctx, caplog):
    """A batch that cannot be stored is not silent: each request is then stored on its own, the fallback
    is logged at WARNING with its reason and counted in /metrics."""
    inbox = await make_inbox(ctx)
    before = await (await client.get("/metrics")).text()
    good = [[InboundMessage(f"fb-{i}", f"p{i}", "fine")] for i in range(4)]
    bad = [InboundMessage("fb-bad", "p-bad", "x", payload={"oops": object()})]  # not JSON-serialisable
    with caplog.at_level(logging.WARNING, logger="scrm.ingest"):
        results = await asyncio.gather(*[ingest(ctx, inbox, b) for b in [*good[:2], bad, *good[2:]]],
                                       return_exceptions=True)
    assert isinstance(results[2], Exception)
    assert all(not isinstance(r, Exception) and not r[0].duplicate for i, r in enumerate(results) if i != 2)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "fall back" in r.getMessage()]
    assert any("to the single path" in r.getMessage() and "TypeError" in r.getMessage() for r in warnings)
    after = await (await client.get("/metrics")).text()
    assert fallbacks_in(after, "batch", "single") == fallbacks_in(before, "batch", "single") + 1


async def test_a_batch_moves_every_clock_once_per_row(ctx):
    """Contact seen, identity wrote in (reachable again), conversation activity, preview, unread and waiting since."""
    inbox = await make_inbox(ctx)
    [first] = await ingest(ctx, inbox, [InboundMessage("c-0", "u1", "第一条")])
    async with ctx.db.transaction() as s:
        conv = await s.get(Conversation, first.conversation_id)
        waiting_since = conv.waiting_since
        conv.unread_count = 0  # an agent read it
        identity = await s.scalar(select(ContactIdentity).where(ContactIdentity.external_id == "u1"))
        identity.reachable, identity.unreachable_reason = False, "blocked"
    requests = [[InboundMessage(f"c-{i}", "u1" if i % 3 else "u2", f"消息 {i}\n  第二行")] for i in range(1, 10)]
    await burst(ctx, inbox, requests)
    async with ctx.db.session() as s:
        convs = {c.contact_id: c for c in (await s.scalars(select(Conversation))).all()}
        identities = {i.external_id: i for i in (await s.scalars(select(ContactIdentity))).all()}
        contacts = {c.id: c for c in (await s.scalars(select(Contact))).all()}
    u1, u2 = identities["u1"], identities["u2"]
    assert u1.reachable and u1.unreachable_reason is None
    assert convs[u1.contact_id].unread_count == 6 and convs[u2.contact_id].unread_count == 3
    assert convs[u1.contact_id].waiting_since == waiting_since  # still the oldest unanswered message
    assert convs[u2.contact_id].waiting_since is not None
    assert convs[u1.contact_id].last_message_preview == "消息 8 第二行"
    assert convs[u2.contact_id].last_message_preview == "消息 9 第二行"
    for identity in (u1, u2):
        conv = convs[identity.contact_id]
        assert conv.last_activity_at > waiting_since
        assert identity.last_inbound_at == contacts[identity.contact_id].last_seen_at == conv.last_activity_at
