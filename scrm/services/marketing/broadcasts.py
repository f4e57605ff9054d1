"""Broadcasts: compose, schedule, start (materialize recipients into outbox rows), pause, resume, cancel.

Starting takes a snapshot: the segment is resolved once and every targeted contact becomes a
recipient row, either queued with its delivery row (the outbox worker sends it at the channel's
rate limit) or skipped with a reason -- in one transaction, so a crash never half-starts it.
Deliveries have a deterministic idempotency key (broadcast + contact): nobody is materialized twice.
Pausing moves the broadcast's still-queued deliveries to status "paused" (the worker claims only
"queued"); resuming puts them back to "queued". Rows already claimed finish sending.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Text, and_, cast, select, update

from scrm import events as ev
from scrm.db.models import Contact, ContactIdentity, Delivery, utcnow
from scrm.db.models_marketing import Broadcast, BroadcastRecipient, Segment
from scrm.services.agents import audit
from scrm.services.conversations.reply_limits import counted_limits, identities_at_limit
from scrm.services.marketing import wechat_mass
from scrm.services.marketing.broadcast_bulk import BulkWriter, allocate_delivery_ids, group_decisions
from scrm.services.marketing.broadcast_compose import (
    BroadcastError,
    check_mode,
    check_template,
    delivery_payload,
    load_inboxes,
    unsubscribe_url,
)
from scrm.services.marketing.broadcast_rules import Chooser, compile_template
from scrm.services.marketing.broadcast_wechat import after_materialize, start_sendall, wechat_rules
from scrm.services.marketing.link_tracking import LinkRewriter
from scrm.services.marketing.segments import SegmentError, members_query
from scrm.services.uow import Tx, unit_of_work

if TYPE_CHECKING:
    from scrm.context import AppContext

log = logging.getLogger("scrm.broadcasts")
CHUNK = 5000
YIELD_EVERY = 250  # contacts built between two turns of the event loop
SCHEDULER_INTERVAL = 5.0


async def save(tx: Tx, agent_id: int | None, data: dict[str, Any], broadcast: Broadcast | None = None) -> Broadcast:
    """Create or edit a draft (fields: name, segment_id, rules, inbox_ids, template, subject, reply_window_days,
    delivery_mode, delivery_options)."""
    if broadcast is not None and broadcast.status not in ("draft", "scheduled"):
        raise BroadcastError(f"a {broadcast.status} broadcast cannot be edited")
    b = broadcast or Broadcast(status="draft", created_by=agent_id, rules={}, inbox_ids=[], reply_window_days=3)
    for key in ("name", "segment_id", "rules", "inbox_ids", "template", "subject", "reply_window_days",
                "delivery_mode", "delivery_options"):
        if key in data and data[key] is not None:
            setattr(b, key, data[key])
    if not b.template or not b.template.strip():
        raise BroadcastError("the message is empty", 400, "empty_template")
    await check_template(tx, b.template, b.subject)
    await check_mode(b, await load_inboxes(tx, list(b.inbox_ids)))
    if b.segment_id is not None and await tx.session.get(Segment, b.segment_id) is None:
        raise BroadcastError("segment not found", 400, "bad_segment")
    if broadcast is None:
        tx.session.add(b)
    await tx.session.flush()
    audit.record(tx, agent_id, "broadcast.save", "broadcast", b.id, name=b.name)
    return b


async def _rules(tx: Tx, b: Broadcast) -> Any:
    if b.segment_id is not None:
        segment = await tx.session.get(Segment, b.segment_id)
        if segment is not None:
            return segment.rules
    return b.rules or None


async def load(tx: Tx, broadcast_id: int, *, lock: bool = True) -> Broadcast:
    b = await tx.session.get(Broadcast, broadcast_id, with_for_update=lock)
    if b is None:
        raise BroadcastError("broadcast not found", 404, "not_found")
    return b


async def schedule(tx: Tx, b: Broadcast, at: datetime, agent_id: int | None) -> None:
    """Start automatically at `at` (the scheduler checks every few seconds)."""
    if b.status not in ("draft", "scheduled"):
        raise BroadcastError(f"a {b.status} broadcast cannot be scheduled")
    if at.tzinfo is None:
        raise BroadcastError("the time needs a timezone (e.g. 2026-05-01T09:00:00+08:00)", 400, "bad_time")
    b.status, b.scheduled_at, b.last_error = "scheduled", at, None
    audit.record(tx, agent_id, "broadcast.schedule", "broadcast", b.id, at=at.isoformat())


async def start(ctx: AppContext, broadcast_id: int, agent_id: int | None = None) -> dict[str, int]:
    """Resolve the segment once and materialize every recipient (queued with a delivery, or skipped).

    One transaction (a crash never half-starts a broadcast). The channel rules and personalization run
    in Python, once per contact; the rows go to the database in chunks while the next chunk is being
    built (COPY on PostgreSQL), with delivery ids drawn beforehand so no lookup is needed.
    """
    now = utcnow()
    public_url = ctx.settings.server.public_url
    async with unit_of_work(ctx) as tx:
        b = await load(tx, broadcast_id)
        if b.status not in ("draft", "scheduled"):
            raise BroadcastError(f"the broadcast is already {b.status}")
        await check_template(tx, b.template, b.subject)
        inboxes = await load_inboxes(tx, list(b.inbox_ids))
        await check_mode(b, inboxes)
        if b.delivery_mode == "mass" and (b.delivery_options or {}).get("target") in ("tag", "all"):
            return await start_sendall(tx, b, inboxes[0], agent_id, now)
        wechat = await wechat_rules(tx, b, inboxes, now)
        rules = await _rules(tx, b)
        try:
            members = (await members_query(tx.session, rules, now)).subquery()
        except SegmentError as exc:
            raise BroadcastError(f"segment: {exc}", 400, "bad_segment") from None
        by_id = {i.id: i for i in inboxes}
        t0 = time.perf_counter()
        rows = (await tx.session.execute(
            select(Contact.id, Contact.name, Contact.email, Contact.phone, Contact.language, Contact.attributes,
                   cast(Contact.opt_outs, Text).label("opt_outs"), ContactIdentity.id.label("iid"),
                   ContactIdentity.inbox_id, ContactIdentity.external_id, ContactIdentity.reachable,
                   ContactIdentity.subscribed, ContactIdentity.last_inbound_at,
                   cast(ContactIdentity.attributes, Text).label("iattrs"))
            .join(members, members.c.id == Contact.id)
            .outerjoin(ContactIdentity, and_(ContactIdentity.contact_id == Contact.id,
                                             ContactIdentity.inbox_id.in_(list(by_id))))
            .order_by(Contact.id)
        )).all()
        if not rows:
            raise BroadcastError("the segment has no members: nothing to send", 400, "empty_segment")
        t_query = time.perf_counter()
        # One id per contact (an upper bound: skipped contacts leave gaps in the sequence), drawn before
        # deciding so each chunk goes to the writer as soon as it is built and the inserts overlap the
        # channel rules of the next chunks.
        targeted = sum(1 for i, r in enumerate(rows) if i == 0 or r.id != rows[i - 1].id)
        delivery_ids = iter(await allocate_delivery_ids(tx, targeted))
        t_ids = time.perf_counter()
        limits = counted_limits(tx.channels, inboxes)  # WeCom 微信客服: 5 messages since the customer's last
        used = await identities_at_limit(tx.session, limits, now) if limits else frozenset()
        decisions = group_decisions(rows, Chooser(inboxes, now, tx.channels, wechat, used))
        mass_members: list[tuple[int, str]] = []  # (delivery id, OpenID) of 群发 recipients, in id order
        subscribed: list[int] = []  # identities whose one-time consent this broadcast spends
        queued = 0
        writer = BulkWriter(tx)
        try:
            fill = compile_template(b.template)
            links = LinkRewriter(b.id, b.template, public_url, now)  # per-recipient short links /r/{token}
            inbox_ids: set[int] = set()
            deliveries: list[dict[str, Any]] = []
            recipients: list[dict[str, Any]] = []
            link_rows: list[dict[str, Any]] = []
            for n, (cid, contact, d) in enumerate(decisions, 1):
                if n % YIELD_EVERY == 0:
                    if len(recipients) >= CHUNK:
                        await writer.write(deliveries, recipients, link_rows)
                        deliveries, recipients, link_rows = [], [], []
                    else:
                        # Let the writer read the database's answer and send the next chunk: the COPY
                        # stalls while this loop holds the event loop.
                        await asyncio.sleep(0)
                rec: dict[str, Any] = {"broadcast_id": b.id, "contact_id": cid, "created_at": now,
                                       "inbox_id": d.inbox.id if d.inbox else None,
                                       "identity_id": d.identity.id if d.identity else None,
                                       "channel": d.inbox.channel_type if d.inbox else None,
                                       "status": "skipped" if d.reason else "queued", "reason": d.reason,
                                       "unsubscribe_token": None, "delivery_id": None}
                recipients.append(rec)
                if d.reason is not None:
                    continue
                assert d.identity is not None and d.inbox is not None
                token = secrets.token_urlsafe(24) if d.inbox.channel_type == "email" else None
                url = unsubscribe_url(public_url, token) if token else ""
                body = fill(contact, {"unsubscribe_url": url})
                if d.mode != "mass":  # 群发 sends one identical text per batch: no per-recipient links to count
                    body = links.rewrite(cid, body, link_rows)
                text, ctype, meta = delivery_payload(b, d, contact, token, public_url, body)
                rec["unsubscribe_token"], rec["delivery_id"] = token, next(delivery_ids)
                queued += 1
                inbox_ids.add(d.inbox.id)
                if d.mode == "mass":
                    mass_members.append((rec["delivery_id"], d.identity.external_id))
                elif d.mode == "subscribe":
                    subscribed.append(d.identity.id)
                deliveries.append({
                    "id": rec["delivery_id"], "idempotency_key": f"broadcast:{b.id}:{cid}", "inbox_id": d.inbox.id,
                    "identity_id": d.identity.id, "recipient_id": d.identity.external_id,
                    "ordering_key": f"{d.inbox.id}:{d.identity.external_id}",
                    "kind": "broadcast", "attempts": 0, "next_attempt_at": now,
                    # Staff-confirmed channels (WeCom 群发): grouped per sender by their own job, not sent one by
                    # one; WeChat OA 群发: sent by their batch (wechat_mass), which they wait for.
                    "status": "waiting" if d.mode in ("staff_confirmed", "mass") else "queued",
                    "claimed_by": wechat_mass.waiting_owner(b.id) if d.mode == "mass" else None,
                    "created_at": now, "message_id": None, "conversation_id": None,
                    "payload": {"text": text, "content_type": ctype, "attachments": [], "choices": [],
                                "metadata": meta, "automatic": False, "reply_to_external_id": None,
                                "recipient_data": dict(d.identity.attributes)},
                })
            await writer.write(deliveries, recipients, link_rows)
            t_built = time.perf_counter()
            await writer.close()
        finally:
            writer.cancel()
        await after_materialize(tx, b, inboxes, mass_members, subscribed, queued, now)
        t_end = time.perf_counter()
        # Where the time of a large start goes (the database's share is the writer's).
        log.info("broadcast %s materialized %d recipients in %.2fs: query %.2fs, ids %.2fs, channel rules and "
                 "rows %.2fs, inserts %.2fs (%.2fs of them after the last row was built)", b.id, targeted,
                 t_end - t0, t_query - t0, t_ids - t_query, t_built - t_ids, writer.busy, t_end - t_built)
        b.status, b.started_at, b.rules, b.last_error = "running", now, rules or {}, None
        audit.record(tx, agent_id, "broadcast.start", "broadcast", b.id, targeted=targeted, queued=queued)
        for inbox_id in inbox_ids:
            tx.emit(ev.OUTBOX_ENQUEUED, inbox_id=inbox_id)
    return {"targeted": targeted, "queued": queued, "skipped": targeted - queued}


def _own_deliveries(broadcast_id: int) -> Any:
    # Its recipients' deliveries, and the control deliveries of its 群发 batches (pause holds those too).
    return Delivery.id.in_(select(BroadcastRecipient.delivery_id).where(
        BroadcastRecipient.broadcast_id == broadcast_id, BroadcastRecipient.delivery_id.is_not(None))) | \
        Delivery.id.in_(wechat_mass.control_deliveries(broadcast_id))


async def pause(tx: Tx, b: Broadcast, agent_id: int | None) -> int:
    """Hold every not-yet-claimed delivery (status "paused"); returns how many were held."""
    if b.status != "running":
        raise BroadcastError(f"only a running broadcast can be paused (it is {b.status})")
    res = await tx.session.execute(
        update(Delivery).where(_own_deliveries(b.id), Delivery.status == "queued").values(status="paused")
        .execution_options(synchronize_session=False))
    b.status = "paused"
    audit.record(tx, agent_id, "broadcast.pause", "broadcast", b.id, held=int(res.rowcount or 0))  # type: ignore[attr-defined]
    return int(res.rowcount or 0)  # type: ignore[attr-defined]


async def resume(tx: Tx, b: Broadcast, agent_id: int | None) -> int:
    """Queue the held deliveries again."""
    if b.status != "paused":
        raise BroadcastError(f"only a paused broadcast can be resumed (it is {b.status})")
    res = await tx.session.execute(
        update(Delivery).where(_own_deliveries(b.id), Delivery.status == "paused")
        .values(status="queued", next_attempt_at=utcnow()).execution_options(synchronize_session=False))
    b.status = "running"
    audit.record(tx, agent_id, "broadcast.resume", "broadcast", b.id)
    for inbox_id in list(b.inbox_ids):
        tx.emit(ev.OUTBOX_ENQUEUED, inbox_id=inbox_id)
    return int(res.rowcount or 0)  # type: ignore[attr-defined]


async def delete_draft(tx: Tx, b: Broadcast, agent_id: int | None) -> None:
    """Delete a draft or scheduled broadcast; one that started is kept for its report (cancel it instead)."""
    if b.status not in ("draft", "scheduled"):
        raise BroadcastError(f"a {b.status} broadcast is kept for its report; cancel it instead")
    await tx.session.delete(b)
    audit.record(tx, agent_id, "broadcast.delete", "broadcast", b.id)


async def cancel(tx: Tx, b: Broadcast, agent_id: int | None) -> int:
    """Stop for good: deliveries not yet claimed become "cancelled"."""
    if b.status in ("completed", "cancelled"):
        raise BroadcastError(f"the broadcast is already {b.status}")
    await wechat_mass.cancel_pending(tx, b.id)  # first: it needs the batches' control rows still queued
    res = await tx.session.execute(
        update(Delivery).where(_own_deliveries(b.id), Delivery.status.in_(("queued", "paused")))
        .values(status="cancelled").execution_options(synchronize_session=False))
    b.status, b.finished_at = "cancelled", utcnow()
    audit.record(tx, agent_id, "broadcast.cancel", "broadcast", b.id)
    return int(res.rowcount or 0)  # type: ignore[attr-defined]


async def finish_completed(ctx: AppContext) -> int:
    """Mark running broadcasts with nothing left in flight as completed."""
    done = 0
    async with unit_of_work(ctx) as tx:
        running = (await tx.session.scalars(select(Broadcast).where(Broadcast.status == "running"))).all()
        for b in running:
            pending = await tx.session.scalar(select(Delivery.id).where(
                _own_deliveries(b.id), Delivery.status.in_(("queued", "claimed", "sending", "paused", "waiting"))).limit(1))
            if pending is None and not await wechat_mass.pending_batches(tx.session, b.id):
                b.status, b.finished_at = "completed", utcnow()
                done += 1
    return done


async def start_due(ctx: AppContext) -> list[int]:
    """Start every scheduled broadcast whose time has come; a failure is recorded on the broadcast."""
    async with ctx.db.session() as s:
        due = list((await s.scalars(select(Broadcast.id).where(
            Broadcast.status == "scheduled", Broadcast.scheduled_at <= utcnow()))).all())
    started = []
    for bid in due:
        try:
            await start(ctx, bid)
            started.append(bid)
        except BroadcastError as exc:
            if exc.code == "conflict":
                continue  # another process started it first
            async with unit_of_work(ctx) as tx:
                b = await load(tx, bid)
                if b.status == "scheduled":
                    b.status, b.last_error = "draft", str(exc)
            log.warning("scheduled broadcast %s could not start: %s", bid, exc)
    return started


async def run_scheduler(ctx: AppContext, stop: asyncio.Event) -> None:
    """Periodic job: start due scheduled broadcasts and close finished ones."""
    interval = float(ctx.extras.get("broadcast_scheduler_interval", SCHEDULER_INTERVAL))
    while not stop.is_set():
        try:
            await start_due(ctx)
            await finish_completed(ctx)
        except Exception:
            log.exception("broadcast scheduler step failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
