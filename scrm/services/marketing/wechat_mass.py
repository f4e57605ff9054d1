"""Official Account 群发 (mass send) as a broadcast delivery mode: quota, batches, results.

Starting a 群发 broadcast records every batch with its `clientmsgid` and one control delivery
(kind "wechat_mass") per batch, in the transaction that starts it, before anything is sent. The
recipients' own deliveries wait ("waiting", claimed by "wechat-mass:<broadcast>") and follow their
batch: sent when WeChat accepts the job, failed with WeChat's reason otherwise (`settle_batch`, run
by the worker in the transaction that records the control delivery's outcome). A worker killed
mid-call resends the same clientmsgid: WeChat answers 45065 with the msg_id it already accepted.
MASSSENDJOBFINISH (TotalCount, FilterCount, SentCount, ErrorCount) and message/mass/get record the
outcome on the batch; the broadcast report adds them up.

Quota (WeChat's rule, checked before sending and shown beforehand): a subscription account (订阅号)
may 群发 once a Beijing-time day; a service account (服务号) reaches each follower at most four times a
calendar month, so followers at four are skipped ("mass_quota") and a send to all or to a tag is
refused once all followers had four.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, update

from scrm.db.models import Delivery, Inbox, utcnow
from scrm.db.models_marketing import Broadcast, BroadcastRecipient
from scrm.db.models_wechat import WeChatMassBatch
from scrm.services.marketing.broadcast_rules import SHANGHAI
from scrm.services.uow import Tx

if TYPE_CHECKING:
    from scrm.context import AppContext

MAX_OPENIDS = 10_000  # message/mass/send: 2 to 10,000 OpenIDs per call
SERVICE_MONTHLY = 4
SUBSCRIPTION_DAILY = 1
KIND = "wechat_mass"
TARGETS = ("list", "tag", "all")
MODES = ("standard", "mass", "subscribe")


class MassSendError(ValueError):
    """The 群发 cannot go out as asked; `code` names why (the API answers 400 or 409 with it)."""

    def __init__(self, message: str, code: str, status: int = 409) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


def waiting_owner(broadcast_id: int) -> str:
    """`claimed_by` of a 群发 broadcast's recipient deliveries while their batch is pending."""
    return f"wechat-mass:{broadcast_id}"


def account_type(inbox: Inbox | Any) -> str:
    settings = getattr(inbox, "settings", None) or {}
    return "subscription" if settings.get("account_type") == "subscription" else "service"


def _day_start(now: datetime) -> datetime:
    local = now.astimezone(SHANGHAI)
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


def _month_start(now: datetime) -> datetime:
    return _day_start(now).replace(day=1)


def _counted(query: Any) -> Any:
    """Batches that count against the quota: everything WeChat may have accepted (not refused ones)."""
    return query.where(WeChatMassBatch.status != "failed")


async def quota(tx: Tx, inbox: Inbox, now: datetime | None = None) -> dict[str, Any]:
    """The account's 群发 quota as WeChat counts it, for display before sending."""
    now = now or utcnow()
    s = tx.session
    if account_type(inbox) == "subscription":
        used = int(await s.scalar(_counted(select(func.count(WeChatMassBatch.id)).where(
            WeChatMassBatch.inbox_id == inbox.id, WeChatMassBatch.created_at >= _day_start(now)))) or 0)
        return {"inbox_id": inbox.id, "account_type": "subscription", "period": "day", "limit": SUBSCRIPTION_DAILY,
                "used": used, "remaining": max(0, SUBSCRIPTION_DAILY - used),
                "rule": "subscription accounts may mass-send once a day (订阅号每天 1 次群发)"}
    to_all = await _sends_to_all(tx, inbox.id, now)
    capped = len(await capped_followers(tx, inbox.id, now))
    return {"inbox_id": inbox.id, "account_type": "service", "period": "month", "limit": SERVICE_MONTHLY,
            "used": to_all, "remaining": max(0, SERVICE_MONTHLY - to_all), "followers_at_limit": capped,
            "rule": "service accounts reach each follower at most 4 times a month (服务号每位粉丝每月 4 次群发)"}


async def _sends_to_all(tx: Tx, inbox_id: int, now: datetime, tag_id: int | None = None) -> int:
    """群发 this month that reached every follower (to all), or every member of `tag_id`."""
    cond = WeChatMassBatch.target == "all"
    if tag_id is not None:
        cond = cond | ((WeChatMassBatch.target == "tag") & (WeChatMassBatch.tag_id == tag_id))
    return int(await tx.session.scalar(_counted(select(func.count(WeChatMassBatch.id)).where(
        WeChatMassBatch.inbox_id == inbox_id, WeChatMassBatch.created_at >= _month_start(now), cond))) or 0)


async def capped_followers(tx: Tx, inbox_id: int, now: datetime) -> frozenset[int]:
    """Identities that already got four 群发 this month (service accounts): by list, plus sends to all."""
    to_all = await _sends_to_all(tx, inbox_id, now)
    if to_all >= SERVICE_MONTHLY:
        return frozenset({-1})  # everyone: the caller refuses the whole broadcast
    rows = (await tx.session.execute(
        select(BroadcastRecipient.identity_id, func.count())
        .join(Broadcast, Broadcast.id == BroadcastRecipient.broadcast_id)
        .join(Delivery, Delivery.id == BroadcastRecipient.delivery_id)
        .where(Broadcast.delivery_mode == "mass", BroadcastRecipient.inbox_id == inbox_id,
               Broadcast.started_at >= _month_start(now), Delivery.status.in_(("waiting", "sent", "delivered")))
        .group_by(BroadcastRecipient.identity_id))).all()
    return frozenset(i for i, n in rows if i is not None and n + to_all >= SERVICE_MONTHLY)


def validate(mode: str, options: Mapping[str, Any], inboxes: Sequence[Any], template_vars: Sequence[str]) -> None:
    """Refuse a delivery mode the broadcast cannot use (before it is saved)."""
    if mode not in MODES:
        raise MassSendError(f"unknown delivery mode {mode!r} (use {', '.join(MODES)})", "bad_mode", 400)
    if mode == "standard":
        return
    if len(inboxes) != 1 or inboxes[0].channel_type != "wechat_oa":
        raise MassSendError(f"the {mode} mode needs exactly one WeChat Official Account inbox", "bad_mode", 400)
    if mode == "subscribe":
        if not str(options.get("template_id") or "").strip():
            raise MassSendError("a subscription message needs its template_id (订阅通知模板 ID)", "no_template", 400)
        return
    target = options.get("target", "list")
    if target not in TARGETS:
        raise MassSendError(f"unknown 群发 target {target!r} (use list, tag or all)", "bad_target", 400)
    size = options.get("batch_size", MAX_OPENIDS)
    if not isinstance(size, int) or not 2 <= size <= MAX_OPENIDS:
        raise MassSendError(f"batch_size must be 2 to {MAX_OPENIDS} OpenIDs (WeChat's limit per call)", "bad_target",
                            400)
    if target == "tag" and not isinstance(options.get("tag_id"), int):
        raise MassSendError("a 群发 by tag needs the WeChat tag_id (a number)", "bad_target", 400)
    if template_vars:
        raise MassSendError("a 群发 is one message for every follower: remove the {{variables}}", "bad_template", 400)


async def check_account_quota(tx: Tx, inbox: Inbox, target: str, batches: int, tag_id: int | None = None,
                              now: datetime | None = None) -> None:
    """Refuse, with WeChat's rule as the reason, a 群发 the account's quota cannot carry."""
    now = now or utcnow()
    q = await quota(tx, inbox, now)
    if q["account_type"] == "subscription":
        if q["used"] + batches > SUBSCRIPTION_DAILY:
            extra = (f"; by OpenID list it reaches at most {MAX_OPENIDS} followers a day: send to a tag or to all"
                     if batches > 1 else "")
            raise MassSendError(f"quota exceeded: {q['rule']}; used today: {q['used']}{extra}", "mass_quota")
        return
    if target in ("all", "tag") and await _sends_to_all(tx, inbox.id, now, tag_id) >= SERVICE_MONTHLY:
        who = "every follower" if target == "all" else f"the followers of tag {tag_id}"
        raise MassSendError(f"quota exceeded: {q['rule']}; {who} already got {SERVICE_MONTHLY} this month",
                            "mass_quota")


def _control(b: Broadcast, inbox_id: int, batch: WeChatMassBatch, text: str, spec: dict[str, Any],
             now: datetime) -> Delivery:
    return Delivery(
        idempotency_key=f"wechat-mass:{batch.clientmsgid}"[:64], inbox_id=inbox_id,
        # Batches are independent 群发 jobs: each its own ordering key, so they go out side by side.
        recipient_id=f"mass:{batch.target}", ordering_key=f"{inbox_id}:mass:{batch.clientmsgid}", kind=KIND,
        status="queued",
        attempts=0, next_attempt_at=now,
        payload={"text": text, "content_type": "text", "attachments": [], "choices": [], "automatic": False,
                 "recipient_data": {}, "metadata": {"broadcast_id": b.id, "mass_batch_id": batch.id,
                                                    "wechat": {"op": "mass", **spec,
                                                               "clientmsgid": batch.clientmsgid}}})


def batch_size(b: Broadcast) -> int:
    """OpenIDs per message/mass/send call: WeChat's 10,000 unless the broadcast asks for smaller batches."""
    return int((b.delivery_options or {}).get("batch_size") or MAX_OPENIDS)


def _clientmsgid(b: Broadcast, n: int) -> str:
    # Random part: WeChat keeps clientmsgids for 24 h per account, and a reinstalled database reuses ids.
    return f"scrm-{b.id}-{n}-{secrets.token_hex(6)}"


async def create_batches(tx: Tx, b: Broadcast, inbox: Inbox, text: str,
                         members: Sequence[tuple[int, str]], now: datetime) -> list[WeChatMassBatch]:
    """Record the list batches (delivery id, OpenID in id order) and their control deliveries."""
    s = tx.session
    batches = []
    size = batch_size(b)
    chunks = [list(members[i:i + size]) for i in range(0, len(members), size)]
    if len(chunks) > 1 and len(chunks[-1]) < 2:  # WeChat needs at least two OpenIDs per call
        chunks[-2], chunks[-1] = chunks[-2][:-1], [chunks[-2][-1], *chunks[-1]]
    for n, chunk in enumerate(chunks, 1):
        batch = WeChatMassBatch(broadcast_id=b.id, inbox_id=inbox.id, clientmsgid=_clientmsgid(b, n),
                                target="list", recipients=len(chunk), first_delivery_id=chunk[0][0],
                                last_delivery_id=chunk[-1][0], status="queued", created_at=now)
        s.add(batch)
        await s.flush()
        control = _control(b, inbox.id, batch, text, {"target": "list", "openids": [o for _, o in chunk]}, now)
        s.add(control)
        await s.flush()
        batch.control_delivery_id = control.id
        batches.append(batch)
    return batches


async def create_sendall(tx: Tx, b: Broadcast, inbox: Inbox, text: str, now: datetime) -> WeChatMassBatch:
    """Record the one batch of a 群发 to all followers or to a tag, and its control delivery."""
    options = b.delivery_options or {}
    target = options.get("target")
    tag_id = options.get("tag_id") if target == "tag" else None
    batch = WeChatMassBatch(broadcast_id=b.id, inbox_id=inbox.id, clientmsgid=_clientmsgid(b, 1), target=target,
                            tag_id=tag_id, recipients=0, status="queued", created_at=now)
    tx.session.add(batch)
    await tx.session.flush()
    control = _control(b, inbox.id, batch, text, {"target": target, "tag_id": tag_id}, now)
    tx.session.add(control)
    await tx.session.flush()
    batch.control_delivery_id = control.id
    return batch


async def settle_batch(tx: Tx, control: Any, status: str, external_id: str | None, error: str | None,
                       error_code: str | None) -> None:
    """The control delivery's outcome is its batch's: recipients sent (job accepted) or failed (refused).

    Runs in the worker's transaction that records the outcome, so a batch never disagrees with it.
    """
    if status not in ("sent", "delivered", "failed"):
        return  # a retry: still pending
    s = tx.session
    batch = await s.scalar(select(WeChatMassBatch).where(WeChatMassBatch.control_delivery_id == control.id))
    if batch is None or batch.status != "queued":
        return
    now = utcnow()
    ok = status != "failed"
    batch.status = "submitted" if ok else "failed"
    batch.msg_id, batch.submitted_at = (external_id, now) if ok else (None, None)
    batch.last_error = None if ok else error
    if batch.target != "list" or batch.broadcast_id is None:
        return
    values: dict[str, Any] = ({"status": "sent", "sent_at": now, "last_error": None} if ok
                              else {"status": "failed", "last_error": error, "error_code": error_code})
    await s.execute(update(Delivery).where(
        Delivery.inbox_id == batch.inbox_id, Delivery.id >= batch.first_delivery_id,
        Delivery.id <= batch.last_delivery_id, Delivery.status == "waiting",
        Delivery.claimed_by == waiting_owner(batch.broadcast_id),
    ).values(claimed_by=None, **values).execution_options(synchronize_session=False))


async def record_job_finish(tx: Tx, inbox_id: int, msg_id: str, data: Mapping[str, Any]) -> bool:
    """MASSSENDJOBFINISH: WeChat's counts for one 群发 job, recorded on its batch; False if not ours."""
    batch = await tx.session.scalar(select(WeChatMassBatch).where(
        WeChatMassBatch.inbox_id == inbox_id, WeChatMassBatch.msg_id == msg_id).with_for_update())
    if batch is None:
        return False
    batch.job_status = str(data.get("job_status") or data.get("error") or data.get("status") or "")[:64]
    for name in ("total_count", "filter_count", "sent_count", "error_count"):
        value = data.get(name)
        if isinstance(value, int):
            setattr(batch, name, value)
    batch.status, batch.finished_at = "finished", utcnow()
    if data.get("status") == "failed":
        batch.last_error = f"WeChat reported {batch.job_status}"
    return True


async def refresh_status(ctx: AppContext, broadcast_id: int) -> list[dict[str, Any]]:
    """Ask message/mass/get where each accepted batch stands (when MASSSENDJOBFINISH did not come)."""
    async with ctx.db.session() as s:
        batches = (await s.scalars(select(WeChatMassBatch).where(
            WeChatMassBatch.broadcast_id == broadcast_id, WeChatMassBatch.msg_id.is_not(None)))).all()
    out = []
    for batch in batches:
        adapter = await ctx.adapters.get(batch.inbox_id)
        if adapter is None:
            continue
        status = await adapter.mass_status(str(batch.msg_id))  # type: ignore[attr-defined]
        async with ctx.db.transaction() as s:
            await s.execute(update(WeChatMassBatch).where(WeChatMassBatch.id == batch.id).values(msg_status=status))
        out.append({"batch_id": batch.id, "msg_id": batch.msg_id, "msg_status": status})
    return out


def batch_dict(b: WeChatMassBatch) -> dict[str, Any]:
    return {"id": b.id, "target": b.target, "tag_id": b.tag_id, "recipients": b.recipients,
            "clientmsgid": b.clientmsgid, "status": b.status, "msg_id": b.msg_id, "msg_status": b.msg_status,
            "job_status": b.job_status, "total_count": b.total_count, "filter_count": b.filter_count,
            "sent_count": b.sent_count, "error_count": b.error_count, "last_error": b.last_error}


async def results(session: Any, broadcast_id: int) -> dict[str, Any] | None:
    """The broadcast's 群发 batches and WeChat's counts added up (None: not a 群发)."""
    batches = (await session.scalars(select(WeChatMassBatch).where(
        WeChatMassBatch.broadcast_id == broadcast_id).order_by(WeChatMassBatch.id))).all()
    if not batches:
        return None
    totals = {name: sum(getattr(b, name) or 0 for b in batches)
              for name in ("total_count", "filter_count", "sent_count", "error_count")}
    return {"batches": [batch_dict(b) for b in batches], **totals,
            "finished": sum(1 for b in batches if b.status == "finished"),
            "pending": sum(1 for b in batches if b.status in ("queued", "submitted"))}


def control_deliveries(broadcast_id: int) -> Any:
    """The control deliveries of a broadcast's 群发 batches (a subquery)."""
    return select(WeChatMassBatch.control_delivery_id).where(WeChatMassBatch.broadcast_id == broadcast_id,
                                                             WeChatMassBatch.control_delivery_id.is_not(None))


async def pending_batches(session: Any, broadcast_id: int) -> bool:
    """A batch not yet handed to WeChat keeps the broadcast running."""
    return await session.scalar(select(WeChatMassBatch.id).where(
        WeChatMassBatch.broadcast_id == broadcast_id, WeChatMassBatch.status == "queued").limit(1)) is not None


async def cancel_pending(tx: Tx, broadcast_id: int) -> int:
    """Cancelling the broadcast: batches not yet handed to a worker's send are not sent; their
    recipients are cancelled with them. A batch already being sent finishes (WeChat may have it)."""
    s = tx.session
    batches = (await s.scalars(select(WeChatMassBatch).where(
        WeChatMassBatch.broadcast_id == broadcast_id, WeChatMassBatch.status == "queued").with_for_update())).all()
    cancelled = 0
    for batch in batches:
        res = await s.execute(update(Delivery).where(
            Delivery.id == batch.control_delivery_id, Delivery.status.in_(("queued", "paused")))
            .values(status="cancelled"))
        if not res.rowcount:  # type: ignore[attr-defined]
            continue  # claimed: being sent right now
        batch.status, batch.last_error = "failed", "cancelled before sending"
        cancelled += 1
        if batch.target == "list":
            await s.execute(update(Delivery).where(
                Delivery.inbox_id == batch.inbox_id, Delivery.id >= batch.first_delivery_id,
                Delivery.id <= batch.last_delivery_id, Delivery.status == "waiting",
                Delivery.claimed_by == waiting_owner(broadcast_id),
            ).values(status="cancelled", claimed_by=None).execution_options(synchronize_session=False))
    return cancelled


async def enqueue_preview(tx: Tx, b: Broadcast, inbox: Inbox, openid: str) -> Delivery:
    """message/mass/preview to one follower (a marketer's own OpenID), through the outbox like any send."""
    now = utcnow()
    delivery = Delivery(
        idempotency_key=f"wechat-preview:{b.id}:{secrets.token_hex(8)}", inbox_id=inbox.id, recipient_id=openid,
        ordering_key=f"{inbox.id}:{openid}", kind="broadcast", status="queued", attempts=0, next_attempt_at=now,
        payload={"text": b.template, "content_type": "text", "attachments": [], "choices": [], "automatic": False,
                 "recipient_data": {}, "metadata": {"broadcast_id": b.id, "test": True,
                                                    "wechat": {"op": "preview"}}})
    tx.session.add(delivery)
    await tx.session.flush()
    return delivery
