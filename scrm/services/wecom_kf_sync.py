"""Pulling 微信客服 messages with kf/sync_msg: durable pull requests, one puller per kf account, the cursor.

A callback is answered only after `request_pull` committed "a pull is owed for open_kfid X, token T"
(requested_seq + 1); the pull then runs in the background. One process pulls an account at a time,
under a lease in the database (not Redis: losing Redis must not let two processes pull). The cursor
is saved after every page, fenced by the lease, so a restart or another process neither skips nor
re-imports (a page stored but not yet acknowledged by its cursor is pulled again and deduplicated by
msgid). A pull that ends compares requested_seq with the request it served and goes round again if a
callback came meanwhile. The periodic catch-up pulls what is owed (a kill -9 between the answer and
the pull) and pulls every account without a token now and then (downtime: only 3 days are readable).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from channels.wecom.api import WeComAPIError, WeComNetworkError
from scrm.db.models import Inbox, utcnow
from scrm.db.models_wecom import WeComKfCursor
from scrm.services.wecom_kf_store import store_records

if TYPE_CHECKING:
    from scrm.context import AppContext

log = logging.getLogger("scrm.wecom.sync")

LEASE_SECONDS = 30.0
TOKEN_TTL = timedelta(minutes=9)  # WeCom's sync token is valid 10 minutes
MAX_PAGES = 10_000  # per pull: a runaway has_more never pins a process
OWED_RETRY_AFTER = timedelta(seconds=30)  # a pull that failed is tried again by the catch-up after this
CATCHUP_TICK = 5.0
C = WeComKfCursor.__table__.c
_TASKS = "wecom_kf_pulls"


class LeaseLost(Exception):
    """Another process took this account's lease (we were too slow): stop pulling."""


async def request_pull(ctx: AppContext, inbox_id: int, data: dict[str, Any]) -> None:
    """Record the owed pull (committed before the callback is answered), then start it in the background."""
    open_kfid = str(data.get("open_kfid") or "")
    target = await target_inbox(ctx, inbox_id, open_kfid)
    if target is None:
        log.warning("wecom kf: callback for open_kfid %r on inbox %s: no active inbox serves it; ignored",
                    open_kfid, inbox_id)
        return
    token = data.get("token") or None
    now = utcnow()
    async with ctx.db.transaction() as s:
        insert = pg_insert if s.bind.dialect.name == "postgresql" else sqlite_insert
        stmt = insert(WeComKfCursor.__table__).values(
            inbox_id=target, open_kfid=open_kfid, requested_seq=1, pulled_seq=0, pending_token=token,
            pending_at=now if token else None, pulled_total=0, updated_at=now)
        changes: dict[str, Any] = {"requested_seq": C.requested_seq + 1, "updated_at": now}
        if token:
            changes |= {"pending_token": token, "pending_at": now}
        await s.execute(stmt.on_conflict_do_update(index_elements=["inbox_id", "open_kfid"], set_=changes))
    kick(ctx, target, open_kfid)


async def target_inbox(ctx: AppContext, inbox_id: int, open_kfid: str) -> int | None:
    """The active wecom_kf inbox of this kf account: the callback's own, or another of the same corp
    (one app callback URL serves every kf account the app manages)."""
    inbox = await ctx.adapters.inbox(inbox_id)
    if inbox is None:
        return None
    if inbox.active and (inbox.settings or {}).get("open_kfid") == open_kfid:
        return inbox.id
    corp = (inbox.settings or {}).get("corp_id")
    async with ctx.db.session() as s:
        rows = (await s.scalars(select(Inbox).where(Inbox.channel_type == "wecom_kf", Inbox.active.is_(True)))).all()
    for other in rows:
        settings = other.settings or {}
        if settings.get("open_kfid") == open_kfid and settings.get("corp_id") == corp:
            return other.id
    return None


def kick(ctx: AppContext, inbox_id: int, open_kfid: str) -> asyncio.Task[int] | None:
    """Start a background pull in this process unless one for the account already runs here."""
    tasks: dict[tuple[int, str], asyncio.Task[int]] = ctx.extras.setdefault(_TASKS, {})
    key = (inbox_id, open_kfid)
    running = tasks.get(key)
    if running is not None and not running.done():
        return None  # it looks at requested_seq before it stops
    task = asyncio.get_running_loop().create_task(_guarded_pull(ctx, inbox_id, open_kfid))
    tasks[key] = task
    task.add_done_callback(lambda t: tasks.pop(key, None) if tasks.get(key) is t else None)
    return task


async def _guarded_pull(ctx: AppContext, inbox_id: int, open_kfid: str) -> int:
    try:
        return await pull(ctx, inbox_id, open_kfid)
    except asyncio.CancelledError:
        raise
    except Exception:  # noqa: BLE001 - the request stays owed; the catch-up tries again
        log.exception("wecom kf pull of inbox %s failed", inbox_id)
        return 0


async def wait_pulls(ctx: AppContext, timeout: float = 10.0) -> None:
    """Wait for this process's background pulls (tests, shutdown)."""
    tasks = list(ctx.extras.get(_TASKS, {}).values())
    if tasks:
        await asyncio.wait(tasks, timeout=timeout)


async def pull(ctx: AppContext, inbox_id: int, open_kfid: str) -> int:
    """Pull until nothing is owed; returns the messages stored. Returns at once if another process pulls."""
    owner = f"{ctx.process_id}:{uuid.uuid4().hex[:8]}"
    stored = 0
    while True:
        row = await _acquire(ctx, inbox_id, open_kfid, owner)
        if row is None:
            return stored
        cursor, seen, token, token_at = row
        if token and (token_at is None or utcnow() - token_at > TOKEN_TTL):
            token = None  # expired: the token-less pull has a stricter rate limit but works
        error: str | None = None
        try:
            stored += await _pull_pages(ctx, inbox_id, open_kfid, owner, cursor, token)
        except LeaseLost:
            log.warning("wecom kf inbox %s: another process took over the pull", inbox_id)
            return stored
        except (WeComAPIError, WeComNetworkError) as exc:
            error = str(exc)
            log.warning("wecom kf inbox %s: pull stopped: %s (retried later)", inbox_id, error)
        if not await _release(ctx, inbox_id, open_kfid, owner, seen, error) or error:
            return stored


async def _acquire(ctx: AppContext, inbox_id: int, open_kfid: str, owner: str) -> tuple[Any, ...] | None:
    now = utcnow()
    async with ctx.db.transaction() as s:
        row = (await s.execute(
            update(WeComKfCursor.__table__)
            .where(C.inbox_id == inbox_id, C.open_kfid == open_kfid,
                   or_(C.lease_owner.is_(None), C.lease_until < now, C.lease_owner == owner))
            .values(lease_owner=owner, lease_until=now + timedelta(seconds=LEASE_SECONDS))
            .returning(C.cursor, C.requested_seq, C.pending_token, C.pending_at))).first()
    return tuple(row) if row is not None else None


async def _release(ctx: AppContext, inbox_id: int, open_kfid: str, owner: str, seen: int,
                   error: str | None) -> bool:
    """Give the lease back; True when a callback came during the pull (requested_seq moved past `seen`)."""
    now = utcnow()
    values: dict[str, Any] = {"lease_owner": None, "lease_until": None, "last_pull_at": now, "last_error": error}
    if error is None:
        values["pulled_seq"] = seen
    async with ctx.db.transaction() as s:
        row = (await s.execute(
            update(WeComKfCursor.__table__).where(C.inbox_id == inbox_id, C.open_kfid == open_kfid,
                                                  C.lease_owner == owner)
            .values(**values).returning(C.requested_seq))).first()
    return row is not None and int(row[0]) > seen


async def _pull_pages(ctx: AppContext, inbox_id: int, open_kfid: str, owner: str, cursor: str | None,
                      token: str | None) -> int:
    inbox = await ctx.adapters.inbox(inbox_id)
    adapter = await ctx.adapters.get(inbox_id)
    if inbox is None or adapter is None:
        return 0
    stored = 0
    for _ in range(MAX_PAGES):
        try:
            page = await adapter.sync_page(cursor=cursor, token=token, open_kfid=open_kfid)  # type: ignore[attr-defined]
        except WeComAPIError as exc:
            if token is None:
                raise
            # An expired or foreign token: the token-less pull still reads the account.
            log.warning("wecom kf inbox %s: sync token refused (%s); pulling without it", inbox_id, exc.errcode)
            token = None
            continue
        records = adapter.translate(page.get("msg_list") or [])  # type: ignore[attr-defined]
        count = await store_records(ctx, inbox, adapter, records)
        stored += count
        next_cursor = page.get("next_cursor") or cursor
        await _save_cursor(ctx, inbox_id, open_kfid, owner, next_cursor, count)
        more = str(page.get("has_more") or "0") not in ("0", "False", "false")
        if not more:
            break
        if next_cursor == cursor and not records:
            log.warning("wecom kf inbox %s: has_more without progress; stopping this pull", inbox_id)
            break
        cursor = next_cursor
    return stored


async def _save_cursor(ctx: AppContext, inbox_id: int, open_kfid: str, owner: str, cursor: str | None,
                       stored: int) -> None:
    now = utcnow()
    async with ctx.db.transaction() as s:
        done = await s.execute(
            update(WeComKfCursor.__table__)
            .where(C.inbox_id == inbox_id, C.open_kfid == open_kfid, C.lease_owner == owner)
            .values(cursor=cursor, lease_until=now + timedelta(seconds=LEASE_SECONDS),
                    pulled_total=C.pulled_total + stored, updated_at=now))
        if done.rowcount != 1:  # type: ignore[attr-defined]
            raise LeaseLost


# --- catch-up (periodic job) ---------------------------------------------------------------------


async def catch_up(ctx: AppContext, now: datetime | None = None) -> int:
    """Pull what is owed (callbacks whose pull never ran) and what is due a token-less catch-up."""
    now = now or utcnow()
    async with ctx.db.session() as s:
        owed = (await s.execute(select(C.inbox_id, C.open_kfid).where(
            C.requested_seq > C.pulled_seq,
            or_(C.lease_owner.is_(None), C.lease_until < now),
            or_(C.last_error.is_(None), C.last_pull_at < now - OWED_RETRY_AFTER)))).all()
        inboxes = (await s.scalars(select(Inbox).where(Inbox.channel_type == "wecom_kf",
                                                       Inbox.active.is_(True)))).all()
        known = {(r.inbox_id, r.open_kfid): r for r in (await s.execute(select(
            C.inbox_id, C.open_kfid, C.last_catchup_at))).all()}
    todo = {(r.inbox_id, r.open_kfid) for r in owed}
    due: list[tuple[int, str]] = []
    for inbox in inboxes:
        settings = inbox.settings or {}
        key = (inbox.id, str(settings.get("open_kfid") or ""))
        interval = timedelta(seconds=float(settings.get("catchup_interval_seconds") or 300))
        last = known.get(key)
        if not key[1] or key in todo:
            continue
        if last is None or last.last_catchup_at is None or last.last_catchup_at < now - interval:
            due.append(key)
    for key in due:
        await _mark_catchup(ctx, key, now)
    stored = 0
    for inbox_id, open_kfid in [*todo, *due]:
        try:
            stored += await pull(ctx, inbox_id, open_kfid)
        except Exception:  # noqa: BLE001 - one account's trouble never stops the others
            log.exception("wecom kf catch-up of inbox %s failed", inbox_id)
    return stored


async def _mark_catchup(ctx: AppContext, key: tuple[int, str], now: datetime) -> None:
    async with ctx.db.transaction() as s:
        insert = pg_insert if s.bind.dialect.name == "postgresql" else sqlite_insert
        await s.execute(insert(WeComKfCursor.__table__).values(
            inbox_id=key[0], open_kfid=key[1], requested_seq=0, pulled_seq=0, pulled_total=0, updated_at=now,
            last_catchup_at=now).on_conflict_do_update(index_elements=["inbox_id", "open_kfid"],
                                                       set_={"last_catchup_at": now}))


async def run_catchup(ctx: AppContext, stop: asyncio.Event) -> None:
    """Periodic job (scrm.periodic): owed pulls within seconds, token-less catch-up per the inbox's interval."""
    while not stop.is_set():
        try:
            await catch_up(ctx)
        except Exception:
            log.exception("wecom kf catch-up failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), CATCHUP_TICK)


def owed_filter() -> Any:
    """Rows with a pull owed (for status pages and tests)."""
    return and_(C.requested_seq > C.pulled_seq)
