"""Storing a pulled kf/sync_msg page: customer profiles first, items through the ingest sink, effects in order.

Profiles come from kf/customer/batchget (at most 100 ids a call) for customers not seen recently
(a shared-cache mark per customer), so a new customer's first message already carries their
nickname, avatar and UnionID; the puller fetches them while the previous pages are being stored.
Items go to the ingest sink in runs; a WeCom effect (servicer message, session state, welcome) is
applied where it sits in the page, after the items before it. A run of customer messages is cut into
ingest batches by customer (each customer's messages in one batch, in order) that are stored at the
same time: the group commit keeps two transactions per inbox in flight, and batches with disjoint
customers cannot store one customer's messages out of order.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from channels.wecom.api import WeComAPIError, WeComNetworkError
from channels.wecom.kf_inbound import KfRecord
from scrm.db.models import Inbox
from scrm.domain import ChannelEvent, ContactProfile, Inbound, InboundMessage, IngestOutcome
from scrm.services.conversations.ingest import group_commit, ingest
from scrm.services.wecom.kf_effects import apply_effect
from scrm.services.wecom.unionid import record_unionids

if TYPE_CHECKING:
    from scrm.context import AppContext

log = logging.getLogger("scrm.wecom.store")
PROFILE_TTL = 86400.0  # seconds before a customer's profile is fetched again
GENDERS = {1: "male", 2: "female"}
CACHE_CONCURRENCY = 16
T = TypeVar("T")


class CustomerOrder:
    """Ingest batches of one pull that run while earlier pages' batches are still being stored: a batch
    first waits for the earlier batches holding any of its customers, so each customer's messages are
    stored in their order (and not at all after an earlier batch of theirs failed)."""

    def __init__(self) -> None:
        self._last: dict[str, asyncio.Future[bool]] = {}

    async def ingest(self, ctx: AppContext, inbox: Inbox, chunk: list[InboundMessage]) -> list[IngestOutcome]:
        senders = {m.sender_id for m in chunk}
        before = {f for s in senders if (f := self._last.get(s)) is not None}
        mine: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        for sender in senders:
            self._last[sender] = mine
        try:
            if not all(await asyncio.gather(*before)):
                raise RuntimeError("an earlier ingest batch of the same customer failed")
            outcomes = await ingest(ctx, inbox, chunk)
        except BaseException:
            mine.set_result(False)
            raise
        mine.set_result(True)
        for sender in senders:
            if self._last.get(sender) is mine:
                del self._last[sender]
        return outcomes


def messages_only(records: Sequence[KfRecord]) -> bool:
    """Whether the records are customer messages only (no effect, no channel event): their batches may
    be stored while earlier ones still are (CustomerOrder keeps each customer's order)."""
    return all(r.effect is None and all(isinstance(i, InboundMessage) for i in r.items) for r in records)


async def store_records(ctx: AppContext, inbox: Inbox, adapter: Any, records: Sequence[KfRecord],
                        profiles: dict[str, ContactProfile] | None = None, order: CustomerOrder | None = None) -> int:
    """Store pulled records (profiles fetched here unless given); returns how many new customer messages were stored."""
    if profiles is None:
        profiles = await fetch_profiles(ctx, inbox, adapter, records)
    stored = 0
    run: list[Inbound] = []
    for record in records:
        if record.ignored:
            continue
        run += [_with_profile(item, profiles) for item in record.items]
        if record.effect is not None:
            stored += await _ingest(ctx, inbox, run, order)
            run = []
            await apply_effect(ctx, inbox, record)
    stored += await _ingest(ctx, inbox, run, order)
    unionids = {euid: p.attributes["wechat_unionid"] for euid, p in profiles.items()
                if p.attributes.get("wechat_unionid")}
    if unionids:
        await record_unionids(ctx, inbox.id, unionids)
    return stored


async def _ingest(ctx: AppContext, inbox: Inbox, items: list[Inbound], order: CustomerOrder | None) -> int:
    """Consecutive messages as concurrent batches, channel events (item by item in ingest) where they sit."""
    stored = 0
    start = 0
    while start < len(items):
        messages = isinstance(items[start], InboundMessage)
        end = start
        while end < len(items) and isinstance(items[end], InboundMessage) == messages:
            end += 1
        segment = items[start:end]
        if messages:
            stored += await _ingest_messages(ctx, inbox, segment, order or CustomerOrder())  # type: ignore[arg-type]
        else:
            await ingest(ctx, inbox, segment)
        start = end
    return stored


async def _ingest_messages(ctx: AppContext, inbox: Inbox, messages: list[InboundMessage], order: CustomerOrder) -> int:
    chunks = by_customer(messages, group_commit(ctx).max_messages)
    results = await asyncio.gather(*(order.ingest(ctx, inbox, chunk) for chunk in chunks))
    return sum(1 for chunk, outcomes in zip(chunks, results, strict=True) for o in outcomes
               if not o.duplicate and o.message_id is not None) if chunks else 0


def by_customer(messages: Sequence[InboundMessage], size: int) -> list[list[InboundMessage]]:
    """Batches of about `size` messages where each customer's messages sit in one batch, in their order."""
    senders: dict[str, list[InboundMessage]] = {}
    for msg in messages:
        senders.setdefault(msg.sender_id, []).append(msg)
    chunks: list[list[InboundMessage]] = []
    current: list[InboundMessage] = []
    for own in senders.values():
        if current and len(current) + len(own) > size:
            chunks.append(current)
            current = []
        current += own
    if current:
        chunks.append(current)
    return chunks


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
    candidates: list[str] = []
    for record in records:
        euid = record.external_userid
        if not euid or euid in candidates or not record.items or seen.get(f"{corp}:{euid}", 0) > now:
            continue
        candidates.append(euid)
    # The shared marks of all of them at once (not one round trip after another).
    marks = await _in_slices([ctx.cache.get(f"wecom:kf:profile:{corp}:{euid}") for euid in candidates])
    wanted: list[str] = []
    for euid, mark in zip(candidates, marks, strict=True):
        if mark is None:
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
    await _in_slices([ctx.cache.set(f"wecom:kf:profile:{corp}:{euid}", "1", ttl=PROFILE_TTL) for euid in wanted])
    for euid in wanted:
        seen[f"{corp}:{euid}"] = now + PROFILE_TTL / 24
    return profiles


async def _in_slices(calls: list[Coroutine[Any, Any, T]], width: int = CACHE_CONCURRENCY) -> list[T]:
    """Await cache calls `width` at a time (a few connections, not one per customer)."""
    results: list[T] = []
    for start in range(0, len(calls), width):
        results += await asyncio.gather(*calls[start:start + width])
    return results
