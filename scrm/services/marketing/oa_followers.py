"""Official Account followers become contacts before they write, and OA tags stay in step with scrm labels.

Followers: user/get pages (10,000 OpenIDs each), then user/info/batchget (100 per call) for their
profiles and UnionIDs; a UnionID merges the follower into the contact that already has it (the WeCom
linking in wecom_unionid). Following does not open WeChat's 48-hour reply window, so no window is set.

Tags, both ways, for labels whose name is an OA tag: a three-way merge against what the last sync
left (identity.attributes["oa_synced_tags"]): a tag added or removed on either side since then is
added or removed on the other. A failed tagging call leaves the old sync state, so the next sync
tries again instead of reading the failure as a removal.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select

from channels.wechat import followers as api
from channels.wechat.transport import WeChatAPIError, WeChatNetworkError
from scrm import events as ev
from scrm.db.models import ContactIdentity, ContactTag, Inbox, utcnow
from scrm.domain import ContactProfile
from scrm.services.conversations.ingest import resolve_identity
from scrm.services.uow import unit_of_work
from scrm.services.wecom.unionid import record_unionids

if TYPE_CHECKING:
    from scrm.context import AppContext

log = logging.getLogger("scrm.oa_followers")
SYNCED = "oa_synced_tags"
MAX_PAGES = 1000  # 10 million followers: a loop guard, not a limit anybody reaches


class SyncError(ValueError):
    """The sync could not run; `status` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 502, code: str = "wechat_error") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def merge_tags(oa_now: set[str], scrm_now: set[str], last: set[str] | None) -> set[str]:
    """The tag set both sides should have: first sync = union; then each side's changes since the last sync."""
    if last is None:
        return oa_now | scrm_now
    added = (oa_now - last) | (scrm_now - last)
    removed = (last - oa_now) | (last - scrm_now)
    return ((last | added) - removed) | (oa_now & scrm_now)


async def sync(ctx: AppContext, inbox: Inbox) -> dict[str, Any]:
    """Pull every follower with profile and UnionID, create missing contacts, merge by UnionID, sync tags."""
    client = ctx.adapters.for_inbox(inbox).client  # type: ignore[attr-defined]
    stats: dict[str, int] = defaultdict(int)
    try:
        tag_names = await api.tags(client)
        openid = ""
        for _ in range(MAX_PAGES):
            page, openid, total = await api.follower_page(client, openid)
            stats["total"] = total
            for i in range(0, len(page), api.BATCHGET_MAX):
                await _chunk(ctx, inbox, client, page[i:i + api.BATCHGET_MAX], tag_names, stats)
            if not page or not openid:
                break
    except WeChatAPIError as exc:
        log.warning("follower sync of inbox %s stopped: WeChat error %s %s", inbox.id, exc.errcode, exc.errmsg)
        raise SyncError(f"WeChat refused: {exc.errcode} {exc.errmsg}") from None
    except WeChatNetworkError as exc:
        raise SyncError(f"WeChat could not be reached: {exc}") from None
    log.info("follower sync of inbox %s: %s", inbox.id, dict(stats))
    return dict(stats)


async def _chunk(ctx: AppContext, inbox: Inbox, client: Any, openids: Sequence[str], tag_names: dict[int, str],
                 stats: dict[str, int]) -> None:
    profiles = [p for p in await api.profiles(client, openids) if p.get("subscribe") == 1 and p.get("openid")]
    # 1. Every follower is a contact; then the UnionID merges them into who we already know, so the
    # tag merge below sees the person's labels, not a fresh contact's.
    now = utcnow()
    unionids: dict[str, str] = {}
    identity: ContactIdentity | None  # resolved below (always found), then re-read under lock (may be gone)
    async with unit_of_work(ctx) as tx:
        for p in profiles:
            profile = ContactProfile(language=p.get("language") or None,
                                     attributes={"source": p["qr_scene_str"]} if p.get("qr_scene_str") else {})
            identity, _, created = await resolve_identity(tx, inbox, p["openid"], profile, now)
            identity.subscribed = True
            stats["created" if created else "updated"] += 1
            if p.get("unionid"):
                unionids[p["openid"]] = str(p["unionid"])
    if unionids:
        stats["merged"] += await record_unionids(ctx, inbox.id, unionids)
    # 2. Decide every follower's tag set, then tell WeChat (grouped per tag) before storing anything.
    oa_tag_ids = {name: tid for tid, name in tag_names.items()}
    async with ctx.db.session() as s:
        known = {i.external_id: i for i in (await s.scalars(select(ContactIdentity).where(
            ContactIdentity.inbox_id == inbox.id, ContactIdentity.external_id.in_([p["openid"] for p in profiles])))).all()}
        labels: dict[int, set[str]] = defaultdict(set)
        for cid, tag in (await s.execute(select(ContactTag.contact_id, ContactTag.tag).where(
                ContactTag.contact_id.in_([i.contact_id for i in known.values()])))).all():
            labels[cid].add(tag)
    plans: dict[str, set[str]] = {}  # openid -> the OA-tag labels both sides end with
    to_tag: dict[tuple[int, bool], list[str]] = defaultdict(list)
    for oid, ident in known.items():
        p = next(x for x in profiles if x["openid"] == oid)
        oa_now = {tag_names[t] for t in p.get("tagid_list") or [] if t in tag_names}
        scrm_now = labels[ident.contact_id] & set(oa_tag_ids)
        attrs = ident.attributes or {}
        final = merge_tags(oa_now, scrm_now, set(attrs.get(SYNCED) or []) if SYNCED in attrs else None)
        plans[oid] = final
        for name in final - oa_now:
            to_tag[(oa_tag_ids[name], False)].append(oid)
        for name in oa_now - final:
            to_tag[(oa_tag_ids[name], True)].append(oid)
    failed: set[str] = set()
    for (tag_id, untag), members in to_tag.items():
        try:
            await api.tag_members(client, tag_id, members, untag=untag)
            stats["untagged" if untag else "tagged"] += len(members)
        except (WeChatAPIError, WeChatNetworkError) as exc:
            log.warning("OA tag %s %s for %d followers failed: %s", tag_id, "untagging" if untag else "tagging",
                        len(members), exc)
            failed.update(members)
            stats["tag_errors"] += len(members)
    # 3. Store the labels and what was synced.
    managed = set(oa_tag_ids)
    async with unit_of_work(ctx) as tx:
        for oid, final in plans.items():
            identity = await tx.session.get(ContactIdentity, known[oid].id, with_for_update=True)
            if identity is None:
                continue
            cid = identity.contact_id
            have = set((await tx.session.scalars(select(ContactTag.tag).where(ContactTag.contact_id == cid))).all())
            want = (have - managed) | final
            if want != have:
                await tx.session.execute(delete(ContactTag).where(ContactTag.contact_id == cid,
                                                                  ContactTag.tag.in_(have - want)))
                tx.session.add_all(ContactTag(contact_id=cid, tag=t[:64]) for t in want - have)
                tx.emit(ev.CONTACT_UPDATED, contact_id=cid, change="oa_tags")
            if oid not in failed:  # a failed call keeps the old state: the next sync retries it
                identity.attributes = dict(identity.attributes or {}) | {SYNCED: sorted(final)}
