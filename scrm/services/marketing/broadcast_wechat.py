"""The WeChat steps of starting a broadcast: consents and quotas looked up once, 群发 batches, spent consents.

Called by broadcasts.start; the batches themselves are wechat_mass's, the consents wechat_subscribe's.
"""

from __future__ import annotations

from datetime import datetime

from scrm import events as ev
from scrm.db.models import Inbox
from scrm.db.models_marketing import Broadcast
from scrm.services.agents import audit
from scrm.services.marketing import wechat_mass, wechat_subscribe
from scrm.services.marketing.broadcast_compose import BroadcastError
from scrm.services.marketing.broadcast_rules import InboxInfo, WeChatRules
from scrm.services.uow import Tx


async def wechat_rules(tx: Tx, b: Broadcast, inboxes: list[InboxInfo], now: datetime) -> WeChatRules | None:
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


async def after_materialize(tx: Tx, b: Broadcast, inboxes: list[InboxInfo], mass_members: list[tuple[int, str]],
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


async def start_sendall(tx: Tx, b: Broadcast, info: InboxInfo, agent_id: int | None, now: datetime) -> dict[str, int]:
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
