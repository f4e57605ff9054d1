"""Broadcast progress and report, computed from the recipients joined with their outbox rows.

A recipient's live status is its delivery's: so the report always equals what the workers did.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from scrm.db.models import Contact, Delivery
from scrm.db.models_marketing import Broadcast, BroadcastRecipient
from scrm.domain import safe_row
from scrm.services.marketing import wechat_mass
from scrm.services.marketing.conversions import funnel

PENDING = ("queued", "claimed", "sending")


def effective_status(recipient_status: str, delivery_status: str | None) -> str:
    """queued | waiting (for staff confirmation) | paused | sent | delivered | failed | skipped | cancelled."""
    if recipient_status == "skipped":
        return "skipped"
    if delivery_status is None:
        return "failed"  # the outbox row was deleted with its inbox
    if delivery_status in PENDING:
        return "queued"
    return delivery_status


def _failure_reason(code: str | None, error: str | None) -> str:
    if code:
        return code
    return (error or "unknown")[:80]


async def report(session: AsyncSession, b: Broadcast) -> dict[str, Any]:
    """Targeted, skipped by reason, sent, delivered, failed by reason, replied, opted out, progress."""
    rows = (await session.execute(
        select(BroadcastRecipient.status, BroadcastRecipient.reason, BroadcastRecipient.channel, Delivery.status,
               Delivery.error_code, Delivery.last_error, func.count(), func.count(BroadcastRecipient.replied_at),
               func.count(BroadcastRecipient.opted_out_at))
        .outerjoin(Delivery, Delivery.id == BroadcastRecipient.delivery_id)
        .where(BroadcastRecipient.broadcast_id == b.id)
        .group_by(BroadcastRecipient.status, BroadcastRecipient.reason, BroadcastRecipient.channel, Delivery.status,
                  Delivery.error_code, Delivery.last_error)
    )).all()
    counts: dict[str, int] = defaultdict(int)
    skipped: dict[str, int] = defaultdict(int)
    failed: dict[str, int] = defaultdict(int)
    by_channel: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    replied = opted_out = targeted = 0
    for rstatus, reason, channel, dstatus, code, error, n, n_replied, n_opted in rows:
        status = effective_status(rstatus, dstatus)
        targeted += n
        replied += n_replied
        opted_out += n_opted
        counts[status] += n
        by_channel[channel or "none"][status] += n
        if status == "skipped":
            skipped[reason or "unknown"] += n
        elif status == "failed":
            failed[_failure_reason(code, error)] += n
    to_send = targeted - counts["skipped"]
    processed = counts["sent"] + counts["delivered"] + counts["failed"] + counts["cancelled"]
    return {
        "id": b.id,
        "name": b.name,
        "status": b.status,
        "targeted": targeted,
        "queued": counts["queued"],
        "paused": counts["paused"],
        "waiting": counts["waiting"],  # WeCom 群发: waiting for the staff member to confirm in WeCom
        "skipped": counts["skipped"],
        "skipped_by_reason": dict(skipped),
        "sent": counts["sent"] + counts["delivered"],  # delivered messages were sent too
        "delivered": counts["delivered"],
        "failed": counts["failed"],
        "failed_by_reason": dict(failed),
        "cancelled": counts["cancelled"],
        "replied": replied,
        "opted_out": opted_out,
        "by_channel": {k: dict(v) for k, v in by_channel.items()},
        "progress": round(processed / to_send, 4) if to_send else 1.0,
        # reached -> clicked -> replied -> converted (with the orders' value): the campaign funnel
        "funnel": await funnel(session, b, counts["sent"] + counts["delivered"], replied),
        "started_at": b.started_at,
        "finished_at": b.finished_at,
        # WeChat OA 群发: the batches and WeChat's own counts (MASSSENDJOBFINISH), None otherwise.
        "wechat_mass": await wechat_mass.results(session, b.id),
    }


async def recipients_csv(session: AsyncSession, broadcast_id: int) -> str:
    """Every recipient with status and reason, as CSV (UTF-8 with BOM so Excel reads Chinese names)."""
    rows = (await session.execute(
        select(BroadcastRecipient, Contact.name, Contact.email, Delivery.status, Delivery.error_code,
               Delivery.last_error, Delivery.sent_at)
        .join(Contact, Contact.id == BroadcastRecipient.contact_id)
        .outerjoin(Delivery, Delivery.id == BroadcastRecipient.delivery_id)
        .where(BroadcastRecipient.broadcast_id == broadcast_id)
        .order_by(BroadcastRecipient.id)
    )).all()
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["contact_id", "name", "email", "channel", "inbox_id", "status", "reason", "sent_at", "replied_at",
                "opted_out_at"])
    for r, name, email, dstatus, code, error, sent_at in rows:
        status = effective_status(r.status, dstatus)
        reason = r.reason if status == "skipped" else (_failure_reason(code, error) if status == "failed" else "")
        w.writerow(safe_row([r.contact_id, name or "", email or "", r.channel or "", r.inbox_id or "", status,
                             reason or "", sent_at.isoformat() if sent_at else "",
                             r.replied_at.isoformat() if r.replied_at else "",
                             r.opted_out_at.isoformat() if r.opted_out_at else ""]))
    return "\ufeff" + buf.getvalue()
