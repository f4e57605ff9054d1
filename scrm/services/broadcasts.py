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
import json
import logging
import operator
import secrets
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, Text, and_, cast, func, insert, select, text, update

from channels.registry import get_adapter_class
from scrm import events as ev
from scrm.db.models import Contact, ContactIdentity, Delivery, Inbox, utcnow
from scrm.db.models_campaigns import TrackedLink
from scrm.db.models_marketing import Broadcast, BroadcastRecipient, Segment
from scrm.domain import ContentType
from scrm.services import audit, wechat_mass, wechat_subscribe
from scrm.services.attributes import attribute_types
from scrm.services.broadcast_rules import (
    VAR_RE,
    Chooser,
    Decision,
    IdentityInfo,
    InboxInfo,
    TemplateError,
    WeChatRules,
    check_identity,
    choose,
    compile_template,
    render,
    template_variables,
)
from scrm.services.link_tracking import LinkRewriter
from scrm.services.outbox import enqueue_delivery
from scrm.services.segments import SegmentError, members_query
from scrm.services.uow import Tx, unit_of_work

if TYPE_CHECKING:
    from scrm.context import AppContext

log = logging.getLogger("scrm.broadcasts")
CHUNK = 5000
YIELD_EVERY = 250  # contacts built between two turns of the event loop
SCHEDULER_INTERVAL = 5.0


class BroadcastError(ValueError):
    """The broadcast cannot do that; `status` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 409, code: str = "conflict") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def unsubscribe_url(base: str | None, token: str) -> str:
    return f"{(base or '').rstrip('/')}/unsubscribe/{token}"


async def _inboxes(tx: Tx, inbox_ids: Sequence[int]) -> list[InboxInfo]:
    if not inbox_ids:
        raise BroadcastError("pick at least one inbox (channel)", 400, "no_channel")
    rows = {i.id: i for i in (await tx.session.scalars(select(Inbox).where(Inbox.id.in_(inbox_ids)))).all()}
    missing = [i for i in inbox_ids if i not in rows]
    if missing:
        raise BroadcastError(f"inbox {missing[0]} not found", 400, "bad_inbox")
    return [InboxInfo(i, rows[i].channel_type, rows[i].active, dict(rows[i].settings or {})) for i in inbox_ids]


async def check_template(tx: Tx, template: str, subject: str | None = None) -> None:
    """Reject unknown variables before anything is stored or sent."""
    keys = list((await attribute_types(tx.session)).keys())
    try:
        template_variables(template, keys)
        if subject:
            template_variables(subject, keys)
    except TemplateError as exc:
        raise BroadcastError(str(exc), 400, "bad_template") from None


async def _check_mode(b: Broadcast, inboxes: list[InboxInfo]) -> None:
    """The WeChat delivery mode (群发 / 订阅通知) must suit the inboxes and the message."""
    if not isinstance(b.delivery_options or {}, dict):
        raise BroadcastError("delivery_options must be an object", 400, "bad_mode")
    try:
        wechat_mass.validate(b.delivery_mode or "standard", b.delivery_options or {}, inboxes,
                             [m.group(1) for m in VAR_RE.finditer(b.template)])
    except wechat_mass.MassSendError as exc:
        raise BroadcastError(str(exc), exc.status, exc.code) from None


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
    await _check_mode(b, await _inboxes(tx, list(b.inbox_ids)))
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


def _contact_dict(row: Any) -> dict[str, Any]:
    return {"id": row.id, "name": row.name, "email": row.email, "phone": row.phone, "language": row.language,
            "attributes": row.attributes or {}, "opt_outs": row.opt_outs or {}}


def _payload(b: Broadcast, d: Decision, contact: dict[str, Any], token: str | None, public_url: str | None,
             text: str) -> tuple[str, str, dict[str, Any]]:
    """(text, content_type, metadata) for one recipient's delivery."""
    assert d.inbox is not None
    meta: dict[str, Any] = {"broadcast_id": b.id}
    content_type = ContentType.TEXT.value
    if d.inbox.channel_type == "email":
        assert token is not None
        url = unsubscribe_url(public_url, token)
        text = f"{text}\n\n--\n退订 / Unsubscribe: {url}"
        meta["subject"] = render(b.subject or b.name, contact)
        meta["unsubscribe_url"] = url
        # RFC 2369 + RFC 8058 one-click: mail clients show an unsubscribe button.
        meta["headers"] = {"List-Unsubscribe": f"<{url}>", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}
    if d.mode == "template":
        content_type = ContentType.TEMPLATE.value
    elif d.mode == "subscribe":  # 订阅通知: the template's fields, filled for this follower
        options = b.delivery_options or {}
        fields = options.get("fields") or {"thing1": "text"}
        meta["wechat"] = {"op": "subscribe", "template_id": options.get("template_id"), "url": options.get("url"),
                          "data": {k: text if v == "text" else render(str(v), contact) for k, v in fields.items()}}
    return text, content_type, meta


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
        inboxes = await _inboxes(tx, list(b.inbox_ids))
        await _check_mode(b, inboxes)
        if b.delivery_mode == "mass" and (b.delivery_options or {}).get("target") in ("tag", "all"):
            return await _start_sendall(tx, b, inboxes[0], agent_id, now)
        wechat = await _wechat_rules(tx, b, inboxes, now)
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
        delivery_ids = iter(await _allocate_delivery_ids(tx, targeted))
        t_ids = time.perf_counter()
        decisions = _decisions(rows, Chooser(inboxes, now, wechat))
        mass_members: list[tuple[int, str]] = []  # (delivery id, OpenID) of 群发 recipients, in id order
        subscribed: list[int] = []  # identities whose one-time consent this broadcast spends
        queued = 0
        writer = _BulkWriter(tx)
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
                text, ctype, meta = _payload(b, d, contact, token, public_url, body)
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
        await _after_materialize(tx, b, inboxes, mass_members, subscribed, queued, now)
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


async def _wechat_rules(tx: Tx, b: Broadcast, inboxes: list[InboxInfo], now: datetime) -> WeChatRules | None:
    """Consents to the subscription template and followers at their 群发 quota, looked up once."""
    wechat_inboxes = [i for i in inboxes if i.channel_type == "wechat_oa"]
    if not wechat_inboxes:
        return None
    mode, options = b.delivery_mode or "standard", b.delivery_options or {}
    consented: frozenset[int] = frozenset()
    template_id = str(options.get("template_id") or "")
    if template_id and mode in ("standard", "subscribe"):
        for i in wechat_inboxes:
            consented |= await wechat_subscribe.usable(tx.session, i.id, template_id)
    capped: frozenset[int] = frozenset()
    if mode == "mass" and wechat_inboxes[0].settings.get("account_type") != "subscription":
        capped = await wechat_mass.capped_followers(tx, wechat_inboxes[0].id, now)
        if -1 in capped:
            raise BroadcastError(f"quota exceeded: every follower already got {wechat_mass.SERVICE_MONTHLY} 群发 "
                                 "this month (服务号每位粉丝每月 4 次)", 409, "mass_quota")
    return WeChatRules(mode, consented, capped)


async def _after_materialize(tx: Tx, b: Broadcast, inboxes: list[InboxInfo], mass_members: list[tuple[int, str]],
                             subscribed: list[int], queued: int, now: datetime) -> None:
    """群发: check the account's quota and record the batches; 订阅通知: spend the one-time consents."""
    if b.delivery_mode == "mass":
        if not mass_members:
            raise BroadcastError("no follower can receive this 群发 (see the skip reasons: quota, unsubscribed, "
                                 "opted out)", 409, "mass_quota" if queued == 0 else "empty_segment")
        if len(mass_members) < 2:
            raise BroadcastError("a 群发 by OpenID list needs at least 2 followers (WeChat's rule)", 400,
                                 "too_few_followers")
        inbox = await tx.session.get(Inbox, inboxes[0].id)
        assert inbox is not None
        batches = -(-len(mass_members) // wechat_mass.batch_size(b))
        try:
            await wechat_mass.check_account_quota(tx, inbox, "list", batches, now=now)
        except wechat_mass.MassSendError as exc:
            raise BroadcastError(str(exc), exc.status, exc.code) from None
        await wechat_mass.create_batches(tx, b, inbox, b.template, mass_members, now)
    if subscribed:
        await wechat_subscribe.use_up(tx, str((b.delivery_options or {}).get("template_id")), subscribed)


async def _start_sendall(tx: Tx, b: Broadcast, info: InboxInfo, agent_id: int | None, now: datetime) -> dict[str, int]:
    """A 群发 to all followers or to a tag: one batch, no recipient list (WeChat knows the audience)."""
    if not info.active:
        raise BroadcastError("the inbox is disabled", 409, "inbox_disabled")
    inbox = await tx.session.get(Inbox, info.id)
    assert inbox is not None
    options = b.delivery_options or {}
    try:
        await wechat_mass.check_account_quota(tx, inbox, str(options.get("target")), 1, options.get("tag_id"), now)
    except wechat_mass.MassSendError as exc:
        raise BroadcastError(str(exc), exc.status, exc.code) from None
    batch = await wechat_mass.create_sendall(tx, b, inbox, b.template, now)
    b.status, b.started_at, b.last_error = "running", now, None
    audit.record(tx, agent_id, "broadcast.start", "broadcast", b.id, mass=batch.target, clientmsgid=batch.clientmsgid)
    tx.emit(ev.OUTBOX_ENQUEUED, inbox_id=inbox.id)
    return {"targeted": 0, "queued": 0, "skipped": 0, "batches": 1}


def _decisions(rows: Sequence[Any], chooser: Chooser) -> Iterator[tuple[int, dict[str, Any], Decision]]:
    """Group the (contact x identity) rows by contact and pick each contact's channel."""
    cid: int | None = None
    contact: dict[str, Any] = {}
    idents: list[IdentityInfo] = []
    for r in rows:  # ordered by contact id
        if r.id != cid:
            if cid is not None:
                yield cid, contact, chooser(contact, idents)
            cid, contact, idents = r.id, _contact_dict(r), []
            contact["opt_outs"] = _json_object(r.opt_outs)
        if r.iid is not None:
            idents.append(IdentityInfo(r.iid, r.inbox_id, r.external_id, r.reachable, r.subscribed,
                                       r.last_inbound_at, _json_object(r.iattrs)))
    if cid is not None:
        yield cid, contact, chooser(contact, idents)


def _json_object(raw: str | None) -> dict[str, Any]:
    """A JSON column read as text: most are empty, and skipping their decoding adds up over 100k rows."""
    if not raw or raw in ("{}", "null"):
        return {}
    value = json.loads(raw)
    return value if isinstance(value, dict) else {}


async def _allocate_delivery_ids(tx: Tx, n: int) -> list[int]:
    """Ids for `n` new deliveries, drawn before inserting so recipients can point at them directly."""
    if n == 0:
        return []
    s = tx.session
    if s.bind.dialect.name == "postgresql":
        # One array, not n rows: decoding 100k result rows cost more than drawing the numbers.
        return list(await s.scalar(text(
            "SELECT array_agg(nextval(pg_get_serial_sequence('deliveries', 'id'))) FROM generate_series(1, :n)"),
            {"n": n}) or [])
    # SQLite: write transactions hold the database's write lock (BEGIN IMMEDIATE), so max(id) is ours.
    top = await s.scalar(select(func.max(Delivery.id))) or 0
    return list(range(top + 1, top + 1 + n))


class _BulkWriter:
    """Inserts deliveries and recipients in the background while the caller builds the next chunk."""

    def __init__(self, tx: Tx) -> None:
        self.tx = tx
        self.queue: asyncio.Queue[tuple[list[dict[str, Any]], ...] | None] = asyncio.Queue()
        self.task = asyncio.create_task(self._run())
        self.busy = 0.0  # seconds spent in the database's inserts

    async def write(self, deliveries: list[dict[str, Any]], recipients: list[dict[str, Any]],
                    links: list[dict[str, Any]] | None = None) -> None:
        if self.task.done():
            await self.task  # raises what went wrong
        self.queue.put_nowait((deliveries, recipients, links or []))
        await asyncio.sleep(0)  # let the writer send this chunk before the next one is built

    async def close(self) -> None:
        self.queue.put_nowait(None)
        await self.task

    def cancel(self) -> None:
        """Stop the writer if the caller failed half-way (the transaction is rolled back)."""
        if not self.task.done():
            self.task.cancel()

    async def _run(self) -> None:
        s = self.tx.session
        copy = None
        if s.bind.dialect.name == "postgresql":
            raw = await (await s.connection()).get_raw_connection()
            copy = raw.driver_connection.copy_records_to_table  # type: ignore[union-attr]
        while (item := await self.queue.get()) is not None:
            deliveries, recipients, links = item
            for table, rows in ((Delivery.__table__, deliveries), (BroadcastRecipient.__table__, recipients),
                                (TrackedLink.__table__, links)):
                if not rows:
                    continue
                t0 = time.perf_counter()
                if copy is None:
                    await s.execute(insert(table), rows)
                else:
                    # Plain columns through one C-level itemgetter per row, then the JSON ones
                    # serialized (per-cell generator expressions were a third of the Python time).
                    json_cols = [c for c in rows[0] if isinstance(table.c[c].type, JSON)]
                    plain = [c for c in rows[0] if c not in json_cols]
                    get = operator.itemgetter(*plain) if len(plain) > 1 else lambda r, c=plain[0]: (r[c],)
                    dumps = json.JSONEncoder(ensure_ascii=False).encode
                    if json_cols:
                        get_json = operator.itemgetter(*json_cols) if len(json_cols) > 1 else None
                        if get_json is None:
                            only = json_cols[0]
                            records = [(*get(r), dumps(r[only])) for r in rows]
                        else:
                            records = [(*get(r), *map(dumps, get_json(r))) for r in rows]
                    else:
                        records = [get(r) for r in rows]
                    t0 = time.perf_counter()
                    await copy(table.name, records=records, columns=plain + json_cols)
                self.busy += time.perf_counter() - t0


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


async def _contact_and_identities(tx: Tx, contact_id: int, inboxes: list[InboxInfo]) -> tuple[dict[str, Any],
                                                                                             list[IdentityInfo]]:
    c = await tx.session.get(Contact, contact_id)
    if c is None:
        raise BroadcastError("contact not found", 404, "not_found")
    idents = (await tx.session.scalars(select(ContactIdentity).where(
        ContactIdentity.contact_id == contact_id, ContactIdentity.inbox_id.in_([i.id for i in inboxes])))).all()
    return _contact_dict(c), [IdentityInfo(i.id, i.inbox_id, i.external_id, i.reachable, i.subscribed,
                                           i.last_inbound_at, i.attributes or {}) for i in idents]


async def send_test(ctx: AppContext, b: Broadcast, contact_id: int, tx: Tx) -> dict[str, Any]:
    """Send the personalized message to one named contact (yourself), under the same channel rules."""
    inboxes = await _inboxes(tx, list(b.inbox_ids))
    contact, idents = await _contact_and_identities(tx, contact_id, inboxes)
    d = choose(contact, idents, inboxes, utcnow())
    if d.reason is not None:
        raise BroadcastError(f"this contact cannot receive it: {d.reason}", 409, d.reason)
    assert d.identity is not None and d.inbox is not None
    token = "test" if d.inbox.channel_type == "email" else None
    url = unsubscribe_url(ctx.settings.server.public_url, token) if token else ""
    # A test send keeps the written links: its clicks must not count in the report.
    text, ctype, meta = _payload(b, d, contact, token, ctx.settings.server.public_url,
                                 render(b.template, contact, {"unsubscribe_url": url}))
    inbox = await tx.session.get(Inbox, d.inbox.id)
    identity = await tx.session.get(ContactIdentity, d.identity.id)
    assert inbox is not None and identity is not None
    delivery = enqueue_delivery(tx, inbox=inbox, identity=identity, conversation_id=None, message_id=None, text=text,
                                content_type=ctype, metadata=meta | {"test": True}, kind="broadcast")
    await tx.session.flush()
    return {"delivery_id": delivery.id, "inbox_id": inbox.id, "channel": inbox.channel_type, "text": text}


async def preview(ctx: AppContext, tx: Tx, b: Broadcast, contact_id: int | None) -> list[dict[str, Any]]:
    """What the message looks like on each of the broadcast's channels (for one contact, or a sample)."""
    inboxes = await _inboxes(tx, list(b.inbox_ids))
    contact: dict[str, Any] = {"name": None, "attributes": {}, "opt_outs": {}}
    idents: list[IdentityInfo] = []
    if contact_id is not None:
        contact, idents = await _contact_and_identities(tx, contact_id, inboxes)
    now = utcnow()
    links = LinkRewriter(b.id, b.template, ctx.settings.server.public_url, now)
    out = []
    for inbox in inboxes:
        ident = next((i for i in idents if i.inbox_id == inbox.id), None)
        d = check_identity(contact, ident, inbox, now) if ident else Decision(None, inbox, "message")
        token = "preview" if inbox.channel_type == "email" else None
        url = unsubscribe_url(ctx.settings.server.public_url, token) if token else ""
        text, ctype, meta = _payload(b, Decision(ident, inbox, d.mode or "message"), contact, token,
                                     ctx.settings.server.public_url,
                                     links.preview(render(b.template, contact, {"unsubscribe_url": url})))
        try:
            limit = get_adapter_class(inbox.channel_type).capabilities.max_text_length
        except KeyError:
            limit = None
        out.append({"inbox_id": inbox.id, "channel": inbox.channel_type, "text": text, "content_type": ctype,
                    "subject": meta.get("subject"), "headers": meta.get("headers", {}),
                    "parts": -(-len(text) // limit) if limit else 1,
                    "eligible": d.reason is None if ident else None, "skip_reason": d.reason})
    return out


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


def count_by(items: Sequence[tuple[str | None, int]]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for k, n in items:
        out[k or "unknown"] += n
    return dict(out)
