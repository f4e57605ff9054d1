"""客户联系 sync: WeCom external contacts become (or merge into) scrm contacts, with the staff who follow
them, their remarks, add_way and 渠道活码 state; corp tags follow scrm labels both ways.

One identity per external_userid in the wecom_contacts inbox. Its attributes keep `follow_users`
(one entry per staff member: remark, add_way, state, corp tag ids) and `wecom_synced_tags`, the tag
names both sides agreed on at the last sync: a name that left WeCom since then leaves the labels, a
label that left scrm since then leaves WeCom, so neither side's removals are undone by the other.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select

from channels.wecom.api import WeComAPIError, WeComNetworkError
from channels.wecom.contacts_parse import TRANSFER_FAIL, follow_record, merge_follows, profile_of
from scrm import events as ev
from scrm.db.models import ContactIdentity, ContactTag, Inbox, utcnow
from scrm.db.models_wecom import WeComContactWay, WeComCorpTag
from scrm.services.conversations.ingest import resolve_identity
from scrm.services.uow import Tx, unit_of_work
from scrm.services.wecom.unionid import record_unionids
from scrm.services.wecom.welcome import already_queued
from scrm.services.wecom.welcome import queue_welcome as queue_welcome_message

if TYPE_CHECKING:
    from scrm.context import AppContext

log = logging.getLogger("scrm.wecom.contacts")
WELCOME_CODE_TTL = timedelta(seconds=20)
_TASKS = "wecom_contact_refresh"


async def on_change(ctx: AppContext, inbox_id: int, data: Mapping[str, Any]) -> None:
    """A 客户联系 callback (already stored): queue the welcome (durable, before the answer), re-read later."""
    inbox = await ctx.adapters.inbox(inbox_id)
    if inbox is None:
        return
    euid = str(data.get("external_userid") or "")
    if data.get("event") == "change_external_tag":
        _background(ctx, ("tags", inbox_id), sync_tags(ctx, inbox_id))
        return
    if data.get("welcome_code") and data.get("change") in ("add_external_contact", "add_half_external_contact"):
        await queue_welcome(ctx, inbox, euid, str(data["welcome_code"]), str(data.get("state") or ""),
                            data.get("at"))
    if data.get("change") == "transfer_fail":
        log.warning("wecom contacts: transfer of %s to %s failed: %s", euid, data.get("userid"),
                    TRANSFER_FAIL.get(str(data.get("fail_reason")), data.get("fail_reason")))
    _background(ctx, ("contact", inbox_id, euid), refresh_contact(ctx, inbox_id, euid))


def _background(ctx: AppContext, key: tuple[Any, ...], coro: Any) -> None:
    tasks: dict[tuple[Any, ...], asyncio.Task[Any]] = ctx.extras.setdefault(_TASKS, {})

    async def guarded() -> None:
        try:
            await coro
        except Exception:  # noqa: BLE001 - the periodic full sync repairs what a failed re-read missed
            log.exception("wecom contacts background work %s failed", key[0])

    task = asyncio.get_running_loop().create_task(guarded())
    tasks[key] = task
    task.add_done_callback(lambda t: tasks.pop(key, None) if tasks.get(key) is t else None)


async def wait_background(ctx: AppContext, timeout: float = 10.0) -> None:
    """Wait for this process's re-reads (tests)."""
    tasks = list(ctx.extras.get(_TASKS, {}).values())
    if tasks:
        await asyncio.wait(tasks, timeout=timeout)


async def queue_welcome(ctx: AppContext, inbox: Inbox, euid: str, code: str, state: str, at: Any) -> int | None:
    """send_welcome_msg through the outbox: once per welcome_code, within its 20 s."""
    if isinstance(at, str) and datetime.fromisoformat(at) < utcnow() - WELCOME_CODE_TTL:
        return None
    async with unit_of_work(ctx) as tx:
        text = (inbox.settings or {}).get("welcome_text")
        if state:
            way = await tx.session.scalar(select(WeComContactWay).where(WeComContactWay.inbox_id == inbox.id,
                                                                        WeComContactWay.scene == state))
            if way is not None and (way.settings or {}).get("welcome_text"):
                text = way.settings["welcome_text"]
        if not text:
            return None
        if await already_queued(tx, code):
            return None
        identity = await tx.session.scalar(select(ContactIdentity).where(ContactIdentity.inbox_id == inbox.id,
                                                                         ContactIdentity.external_id == euid))
        if identity is None:
            return None
        # Shown on the contact as the bot's message (a resolved conversation of this inbox, which has no chat).
        delivery = await queue_welcome_message(tx, inbox, identity, code=code, text=str(text),
                                               op={"op": "welcome", "code": code}, open_new=False)
        return delivery.id


async def refresh_contact(ctx: AppContext, inbox_id: int, euid: str) -> None:
    """Re-read one external contact (`get`) after a callback and store what WeCom says now."""
    adapter = await ctx.adapters.get(inbox_id)
    inbox = await ctx.adapters.inbox(inbox_id)
    if adapter is None or inbox is None or not euid:
        return
    person = await adapter.contact(euid)  # type: ignore[attr-defined]
    if person is None:  # nobody follows them any more (both sides deleted)
        person = {"external_contact": {"external_userid": euid}, "follow_user": []}
    unionids = await store_people(ctx, inbox, {euid: person})
    if unionids:
        await record_unionids(ctx, inbox_id, unionids)


async def _tag_names(tx: Tx, inbox_id: int) -> dict[str, str]:
    rows = (await tx.session.execute(select(WeComCorpTag.tag_id, WeComCorpTag.name).where(
        WeComCorpTag.inbox_id == inbox_id, WeComCorpTag.deleted.is_(False)))).all()
    return {tag_id: name for tag_id, name in rows}


async def store_people(ctx: AppContext, inbox: Inbox, people: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Create or update the identities of these external contacts; returns their UnionIDs."""
    unionids: dict[str, str] = {}
    async with unit_of_work(ctx) as tx:
        names = await _tag_names(tx, inbox.id)
        now = utcnow()
        for euid, person in people.items():
            contact_data = person.get("external_contact") or {}
            profile = profile_of(contact_data) if contact_data.get("name") else None
            identity, contact, _ = await resolve_identity(tx, inbox, euid, profile, now)
            follows = [follow_record(f) for f in person.get("follow_user") or []]
            attrs = dict(identity.attributes or {})
            attrs["follow_users"] = follows
            identity.subscribed = bool(follows)
            state = next((f["state"] for f in sorted(follows, key=lambda f: f.get("createtime") or 0) if f["state"]),
                         None)
            if state and not identity.source:
                identity.source = state
            wecom_now = {names[t] for f in follows for t in f["tag_ids"] if t in names}
            synced = set(attrs.get("wecom_synced_tags") or [])
            labels = set((await tx.session.scalars(select(ContactTag.tag).where(
                ContactTag.contact_id == contact.id))).all())
            for name in sorted((wecom_now - synced) - labels):
                tx.session.add(ContactTag(contact_id=contact.id, tag=name[:64]))
            gone = (synced - wecom_now) & labels
            if gone:
                await tx.session.execute(delete(ContactTag).where(ContactTag.contact_id == contact.id,
                                                                  ContactTag.tag.in_(gone)))
            attrs["wecom_synced_tags"] = sorted(wecom_now)
            identity.attributes = attrs
            tx.emit(ev.CONTACT_UPDATED, contact_id=contact.id, identity_id=identity.id, change="wecom_contact")
            unionid = (profile.attributes.get("wechat_unionid") if profile else None)
            if unionid:
                unionids[euid] = str(unionid)
    return unionids


async def sync_tags(ctx: AppContext, inbox_id: int) -> int:
    """Mirror the corp tag list (get_corp_tag_list); returns how many tags are live."""
    adapter = await ctx.adapters.get(inbox_id)
    if adapter is None:
        return 0
    groups = await adapter.corp_tags()  # type: ignore[attr-defined]
    async with unit_of_work(ctx) as tx:
        known = {t.tag_id: t for t in (await tx.session.scalars(select(WeComCorpTag).where(
            WeComCorpTag.inbox_id == inbox_id))).all()}
        live = 0
        for group in groups:
            for tag in group.get("tag") or []:
                tag_id = str(tag.get("id") or "")
                if not tag_id:
                    continue
                row = known.get(tag_id) or WeComCorpTag(inbox_id=inbox_id, tag_id=tag_id, ours=False)
                row.group_id, row.group_name = group.get("group_id"), group.get("group_name")
                row.name = str(tag.get("name") or tag_id)[:64]
                row.deleted = bool(tag.get("deleted") or group.get("deleted"))
                live += 0 if row.deleted else 1
                if tag_id not in known:
                    tx.session.add(row)
    return live


async def full_sync(ctx: AppContext, inbox_id: int) -> int:
    """Every external contact of every staff member (batch/get_by_user, cursor-paginated); returns how many."""
    adapter = await ctx.adapters.get(inbox_id)
    inbox = await ctx.adapters.inbox(inbox_id)
    if adapter is None or inbox is None:
        return 0
    await sync_tags(ctx, inbox_id)
    staff = await adapter.staff()  # type: ignore[attr-defined]
    rows: list[dict[str, Any]] = []
    for start in range(0, len(staff), 100):
        cursor: str | None = None
        while True:
            page = await adapter.by_user(staff[start:start + 100], cursor)  # type: ignore[attr-defined]
            rows += [r for r in page.get("external_contact_list") or [] if isinstance(r, dict)]
            cursor = page.get("next_cursor") or None
            if not cursor:
                break
    people = merge_follows(rows)
    unionids: dict[str, str] = {}
    items = list(people.items())
    for start in range(0, len(items), 200):
        unionids |= await store_people(ctx, inbox, dict(items[start:start + 200]))
    if unionids:
        await record_unionids(ctx, inbox_id, unionids)
    await _mark_unfollowed(ctx, inbox_id, set(people))
    return len(people)


async def _mark_unfollowed(ctx: AppContext, inbox_id: int, seen: set[str]) -> None:
    async with unit_of_work(ctx) as tx:
        for identity in (await tx.session.scalars(select(ContactIdentity).where(
                ContactIdentity.inbox_id == inbox_id, ContactIdentity.subscribed.is_(True)))).all():
            if identity.external_id not in seen:
                identity.subscribed = False
                identity.attributes = dict(identity.attributes or {}) | {"follow_users": []}


async def push_labels(ctx: AppContext, contact_id: int) -> int:
    """scrm labels -> WeCom corp tags on every (staff, customer) pair of the contact; returns mark_tag calls."""
    async with ctx.db.session() as s:
        identities = (await s.execute(select(ContactIdentity, Inbox).join(Inbox, Inbox.id == ContactIdentity.inbox_id)
                                      .where(ContactIdentity.contact_id == contact_id,
                                             Inbox.channel_type == "wecom_contacts", Inbox.active.is_(True)))).all()
        labels = set((await s.scalars(select(ContactTag.tag).where(ContactTag.contact_id == contact_id))).all())
    calls = 0
    for identity, inbox in identities:
        attrs = dict(identity.attributes or {})
        synced = set(attrs.get("wecom_synced_tags") or [])
        add, remove = labels - synced, synced - labels
        if not add and not remove:
            continue
        adapter = ctx.adapters.for_inbox(inbox)
        try:
            by_name = await _tag_ids(ctx, inbox, adapter, add)
        except (WeComAPIError, WeComNetworkError) as exc:
            log.warning("wecom contacts: corp tags for contact %s not created: %s", contact_id, exc)
            continue
        follows = attrs.get("follow_users") or []
        for follow in follows:
            have = set(follow.get("tag_ids") or [])
            add_ids = [by_name[n] for n in add if n in by_name and by_name[n] not in have]
            remove_ids = [t for t in have if (await _name_of(ctx, inbox.id, t)) in remove]
            if not add_ids and not remove_ids:
                continue
            try:
                await adapter.mark_tag(follow["userid"], identity.external_id, add_ids, remove_ids)  # type: ignore[attr-defined]
            except (WeComAPIError, WeComNetworkError) as exc:
                log.warning("wecom contacts: mark_tag for %s/%s failed: %s", follow.get("userid"), contact_id, exc)
                continue
            calls += 1
            follow["tag_ids"] = sorted((have | set(add_ids)) - set(remove_ids))
        async with unit_of_work(ctx) as tx:
            row = await tx.session.get(ContactIdentity, identity.id, with_for_update=True)
            if row is not None:
                row.attributes = dict(row.attributes or {}) | {"follow_users": follows,
                                                               "wecom_synced_tags": sorted(labels)}
    return calls


async def _name_of(ctx: AppContext, inbox_id: int, tag_id: str) -> str | None:
    async with ctx.db.session() as s:
        return await s.scalar(select(WeComCorpTag.name).where(WeComCorpTag.inbox_id == inbox_id,
                                                              WeComCorpTag.tag_id == tag_id))


async def _tag_ids(ctx: AppContext, inbox: Inbox, adapter: Any, names: set[str]) -> dict[str, str]:
    """Tag ids for label names; labels without a corp tag get one in the inbox's own group (ours)."""
    async with ctx.db.session() as s:
        rows = (await s.execute(select(WeComCorpTag.name, WeComCorpTag.tag_id).where(
            WeComCorpTag.inbox_id == inbox.id, WeComCorpTag.deleted.is_(False)))).all()
    by_name = {name: tag_id for name, tag_id in rows}
    missing = sorted(n for n in names if n not in by_name)
    if missing:
        group = await adapter.add_corp_tags((inbox.settings or {}).get("tag_group_name") or "scrm", missing)
        async with unit_of_work(ctx) as tx:
            for tag in group.get("tag") or []:
                tag_id, name = str(tag.get("id")), str(tag.get("name"))
                tx.session.add(WeComCorpTag(inbox_id=inbox.id, tag_id=tag_id, group_id=group.get("group_id"),
                                            group_name=group.get("group_name"), name=name[:64], ours=True,
                                            deleted=False))
                by_name[name] = tag_id
    return by_name


def due(last: datetime | None, interval: float, now: datetime) -> bool:
    """Whether a periodic sync is due."""
    return last is None or last < now - timedelta(seconds=interval)
