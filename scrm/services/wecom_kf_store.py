"""Storing a pulled kf/sync_msg page: customer profiles first, items through the ingest sink, effects in order.

Profiles come from kf/customer/batchget (at most 100 ids a call) for customers not seen recently
(a shared-cache mark per customer), so a new customer's first message already carries their
nickname, avatar and UnionID. Items go to the ingest sink in runs; a WeCom effect (servicer message,
session state, welcome) is applied where it sits in the page, after the items before it.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from channels.wecom.api import WeComAPIError, WeComNetworkError
from channels.wecom.kf_inbound import KfRecord
from scrm.db.models import Inbox
from scrm.domain import ChannelEvent, ContactProfile, Inbound, InboundMessage
from scrm.services.ingest import ingest
from scrm.services.wecom_kf_effects import apply_effect
from scrm.services.wecom_unionid import record_unionids

if TYPE_CHECKING:
    from scrm.context import AppContext

log = logging.getLogger("scrm.wecom.store")
PROFILE_TTL = 86400.0  # seconds before a customer's profile is fetched again
GENDERS = {1: "male", 2: "female"}


async def store_records(ctx: AppContext, inbox: Inbox, adapter: Any, records: Sequence[KfRecord]) -> int:
    """Store one page; returns how many new customer messages were stored."""
    profiles = await fetch_profiles(ctx, inbox, adapter, records)
    stored = 0
    run: list[Inbound] = []
    for record in records:
        if record.ignored:
            continue
        run += [_with_profile(item, profiles) for item in record.items]
        if record.effect is not None:
            stored += await _ingest(ctx, inbox, run)
            run = []
            await apply_effect(ctx, inbox, record)
    stored += await _ingest(ctx, inbox, run)
    unionids = {euid: p.attributes["wechat_unionid"] for euid, p in profiles.items()
                if p.attributes.get("wechat_unionid")}
    if unionids:
        await record_unionids(ctx, inbox.id, unionids)
    return stored


async def _ingest(ctx: AppContext, inbox: Inbox, items: list[Inbound]) -> int:
    if not items:
        return 0
    outcomes = await ingest(ctx, inbox, items)
    return sum(1 for item, o in zip(items, outcomes, strict=True)
               if isinstance(item, InboundMessage) and not o.duplicate and o.message_id is not None)


def _with_profile(item: Inbound, profiles: dict[str, ContactProfile]) -> Inbound:
    profile = profiles.get(item.sender_id or "") if item.sender_id else None
    if profile is None:
        return item
    if isinstance(item, InboundMessage) and item.profile is None:
        return dataclasses.replace(item, profile=profile)
    if isinstance(item, ChannelEvent) and item.profile is not None and item.kind == "contact.updated":
        merged = ContactProfile(name=profile.name, avatar_url=profile.avatar_url,
                                attributes={**profile.attributes, **item.profile.attributes})
        return dataclasses.replace(item, profile=merged)
    return item


async def fetch_profiles(ctx: AppContext, inbox: Inbox, adapter: Any,
                         records: Sequence[KfRecord]) -> dict[str, ContactProfile]:
    """Profiles of the page's customers not fetched within PROFILE_TTL (a failure leaves them for later)."""
    corp = (inbox.settings or {}).get("corp_id", "")
    seen: dict[str, float] = ctx.extras.setdefault("wecom_kf_profiles_seen", {})  # this process's memo
    now = time.monotonic()
    wanted: list[str] = []
    for record in records:
        euid = record.external_userid
        if not euid or euid in wanted or not record.items or seen.get(f"{corp}:{euid}", 0) > now:
            continue
        if await ctx.cache.get(f"wecom:kf:profile:{corp}:{euid}") is None:
            wanted.append(euid)
        else:
            seen[f"{corp}:{euid}"] = now + PROFILE_TTL / 24
    if not wanted:
        return {}
    try:
        found = await adapter.customers(wanted)
    except (WeComAPIError, WeComNetworkError) as exc:
        log.warning("wecom kf inbox %s: customer profiles not fetched (%s); the messages are stored", inbox.id, exc)
        return {}
    profiles: dict[str, ContactProfile] = {}
    for customer in found:
        euid = customer.get("external_userid")
        if not isinstance(euid, str):
            continue
        attrs: dict[str, Any] = {}
        gender = GENDERS.get(customer.get("gender") or 0)
        if gender:
            attrs["gender"] = gender
        if customer.get("unionid"):
            attrs["wechat_unionid"] = str(customer["unionid"])
        profiles[euid] = ContactProfile(name=customer.get("nickname") or None,
                                        avatar_url=customer.get("avatar") or None, attributes=attrs)
    if len(seen) > 100_000:
        seen.clear()
    for euid in wanted:
        await ctx.cache.set(f"wecom:kf:profile:{corp}:{euid}", "1", ttl=PROFILE_TTL)
        seen[f"{corp}:{euid}"] = now + PROFILE_TTL / 24
    return profiles
