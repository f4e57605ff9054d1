"""Broadcasts to WeCom external contacts through add_msg_template (群发助手).

A started broadcast leaves its 客户联系 deliveries "waiting" (broadcasts.start). Here they are grouped
into one task per sending staff member (the one who has followed the customer longest) and each task
becomes one outbox row (kind "wecom_mass") that the worker submits with add_msg_template. Nothing
reaches a customer until the staff member confirms it in the WeCom client: until then the
recipients show "waiting for staff confirmation". get_groupmsg_task / get_groupmsg_send_result are
polled for each recipient's outcome: sent, not a friend, or already received a 群发 today.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from channels.wecom.api import WeComAPIError, WeComNetworkError
from scrm import events as ev
from scrm.db.models import ContactIdentity, Delivery, Inbox, utcnow
from scrm.db.models_wecom import WeComMassTask
from scrm.services.marketing.broadcast_rules import SHANGHAI
from scrm.services.uow import unit_of_work

if TYPE_CHECKING:
    from scrm.context import AppContext

log = logging.getLogger("scrm.wecom.mass")
MAX_RECIPIENTS = 10_000  # per add_msg_template
WAITING = "waiting for staff confirmation in WeCom (群发助手)"
RESULTS = {2: ("not_a_friend", "the customer is no longer the staff member's contact (客户不是好友)"),
           3: ("daily_cap", "the customer already received a 群发 today (今日已收到群发)")}
POLL_EVERY = timedelta(seconds=30)


def _sender(attrs: dict[str, Any]) -> str | None:
    follows = [f for f in attrs.get("follow_users") or [] if f.get("userid")]
    follows.sort(key=lambda f: f.get("createtime") or 0)
    return follows[0]["userid"] if follows else None


async def dispatch(ctx: AppContext) -> int:
    """Group waiting 客户联系 broadcast deliveries into one task per (broadcast, staff member); returns tasks."""
    created = 0
    async with unit_of_work(ctx) as tx:
        s = tx.session
        rows = (await s.execute(select(Delivery, Inbox).join(Inbox, Inbox.id == Delivery.inbox_id).where(
            Delivery.status == "waiting", Delivery.claimed_by.is_(None), Delivery.kind == "broadcast",
            Inbox.channel_type == "wecom_contacts").order_by(Delivery.id).with_for_update(of=Delivery))).all()
        groups: dict[tuple[int, int | None, str, str], list[Delivery]] = defaultdict(list)
        for delivery, inbox in rows:
            payload = delivery.payload or {}
            sender = _sender(dict(payload.get("recipient_data") or {}))
            if sender is None:
                delivery.status, delivery.last_error, delivery.error_code = "failed", "no staff member follows", "no_staff"
                continue
            broadcast_id = (payload.get("metadata") or {}).get("broadcast_id")
            groups[(inbox.id, broadcast_id, sender, payload.get("text") or "")].append(delivery)
        now = utcnow()
        for (inbox_id, broadcast_id, sender, text), members in groups.items():
            for start in range(0, len(members), MAX_RECIPIENTS):
                chunk = members[start:start + MAX_RECIPIENTS]
                task = WeComMassTask(broadcast_id=broadcast_id, inbox_id=inbox_id, sender_userid=sender,
                                     status="queued", delivery_ids=[d.id for d in chunk], created_at=now)
                s.add(task)
                await s.flush()
                control = Delivery(
                    idempotency_key=f"wecom-mass-{task.id}", inbox_id=inbox_id, recipient_id=sender,
                    ordering_key=f"{inbox_id}:mass:{task.id}", kind="wecom_mass", status="queued", attempts=0,
                    next_attempt_at=now, payload={"text": text, "content_type": "text", "attachments": [],
                                                  "choices": [], "automatic": False, "recipient_data": {},
                                                  "metadata": {"wecom": {"op": "mass", "sender": sender,
                                                               "external_userids": [d.recipient_id for d in chunk]},
                                                               "broadcast_id": broadcast_id}})
                s.add(control)
                await s.flush()
                task.control_delivery_id = control.id
                for d in chunk:
                    d.claimed_by, d.last_error = f"wecom-mass:{task.id}", f"{WAITING}: {sender}"
                tx.emit(ev.OUTBOX_ENQUEUED, inbox_id=inbox_id)
                created += 1
    return created


async def poll(ctx: AppContext, *, force: bool = False) -> int:
    """Record the outcome of submitted tasks; returns how many recipients got a final status."""
    now = utcnow()
    async with ctx.db.session() as s:
        tasks = (await s.scalars(select(WeComMassTask).where(WeComMassTask.status.in_(("queued", "waiting"))))).all()
    settled = 0
    for task in tasks:
        if not force and task.polled_at is not None and task.polled_at > now - POLL_EVERY:
            continue
        try:
            settled += await _poll_task(ctx, task.id)
        except (WeComAPIError, WeComNetworkError) as exc:
            log.info("wecom 群发 task %s not polled yet: %s", task.id, exc)  # 41063: still being dispatched
    return settled


async def _poll_task(ctx: AppContext, task_id: int) -> int:
    async with ctx.db.session() as s:
        task = await s.get(WeComMassTask, task_id)
        control = await s.get(Delivery, task.control_delivery_id) if task and task.control_delivery_id else None
    if task is None:
        return 0
    if task.status == "queued":
        if control is None or control.status in ("queued", "claimed", "sending"):
            return 0
        if control.status == "failed":
            return await _settle(ctx, task_id, {d: (None, control.last_error or "add_msg_template failed")
                                                for d in task.delivery_ids}, final_status="failed")
        await _update_task(ctx, task_id, status="waiting", msgid=control.external_id)
        task.msgid = control.external_id
    adapter = await ctx.adapters.get(task.inbox_id)
    if adapter is None or not task.msgid:
        return 0
    progress = await adapter.groupmsg_task(task.msgid)  # type: ignore[attr-defined]
    mine = next((t for t in progress if t.get("userid") == task.sender_userid), None)
    if mine is None or not mine.get("status"):  # 0: the staff member has not sent it yet
        await _update_task(ctx, task_id)
        return 0
    results = await adapter.groupmsg_results(task.msgid, task.sender_userid)  # type: ignore[attr-defined]
    by_customer = {r.get("external_userid"): int(r.get("status") or 0) for r in results}
    async with ctx.db.session() as s:
        deliveries = (await s.scalars(select(Delivery).where(Delivery.id.in_(task.delivery_ids)))).all()
    outcomes: dict[int, tuple[str | None, str | None]] = {}
    for d in deliveries:
        status = by_customer.get(d.recipient_id)
        if status == 1:
            outcomes[d.id] = ("sent", None)
        elif status in RESULTS:
            outcomes[d.id] = RESULTS[status][0], RESULTS[status][1]
        elif status is None and d.status == "waiting" and results:
            outcomes[d.id] = ("failed_refused", "WeCom did not accept this recipient (fail_list)")
    return await _settle(ctx, task_id, outcomes)


async def _update_task(ctx: AppContext, task_id: int, **values: Any) -> None:
    async with unit_of_work(ctx) as tx:
        task = await tx.session.get(WeComMassTask, task_id)
        if task is not None:
            for key, value in values.items():
                setattr(task, key, value)
            task.polled_at = utcnow()


async def _settle(ctx: AppContext, task_id: int, outcomes: dict[int, tuple[str | None, str | None]],
                  final_status: str | None = None) -> int:
    """Write recipients' outcomes (sent, or failed with the reason); the task is done when none waits."""
    now = utcnow()
    today = now.astimezone(SHANGHAI).date().isoformat()
    settled = 0
    async with unit_of_work(ctx) as tx:
        task = await tx.session.get(WeComMassTask, task_id)
        if task is None:
            return 0
        deliveries = (await tx.session.scalars(select(Delivery).where(Delivery.id.in_(task.delivery_ids))
                                               .with_for_update())).all()
        for d in deliveries:
            if d.status != "waiting" or d.id not in outcomes:
                continue
            code, reason = outcomes[d.id]
            if code == "sent":
                d.status, d.sent_at, d.last_error, d.error_code = "sent", now, None, None
                identity = await tx.session.get(ContactIdentity, d.identity_id) if d.identity_id else None
                if identity is not None:
                    identity.attributes = dict(identity.attributes or {}) | {"wecom_mass_day": today}
            else:
                d.status, d.last_error, d.error_code = "failed", reason, code
            settled += 1
            tx.emit(ev.DELIVERY_UPDATED, delivery_id=d.id, status=d.status, kind="broadcast")
        task.polled_at = now
        if final_status is not None:
            task.status, task.last_error = final_status, next(iter(outcomes.values()), (None, None))[1]
        elif all(d.status != "waiting" for d in deliveries):
            task.status = "done"
    return settled
