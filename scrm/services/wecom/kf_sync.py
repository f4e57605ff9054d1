"""Pulling 微信客服 messages with kf/sync_msg: durable pull requests, one puller per kf account, the cursor.

A callback is answered only after `request_pull` committed "a pull is owed for open_kfid X, token T"
(requested_seq + 1; on PostgreSQL without waiting for the WAL flush, see _NoteWriter for why); the pull
then runs in the background: in this process, or, where this process pulls elsewhere (`scrm serve
--no-worker`; `scrm worker` with its pull runner process, see scrm/kf_pull_process.py), in the pull
runners (`run_runner`), woken over Redis after the note's commit and scanning for owed pulls every
second. One process pulls an account at a time, under a lease in the database (not Redis: losing Redis
must not let two processes pull). The cursor is saved after every stored batch of pages, fenced by the
lease, so a restart or another process neither skips nor re-imports (a page stored but not yet acknowledged by its cursor is pulled again and deduplicated by
msgid). Pages are fetched ahead while earlier ones are stored, and pages that arrived during a store are
stored together (a group commit of pages: one ingest and one cursor save for them). A pull that ends
compares requested_seq with the request it served and goes round again if a
callback came meanwhile. The periodic catch-up pulls what is owed (a kill -9 between the answer and
the pull) and pulls every account without a token now and then (downtime: only 3 days are readable).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from channels.wecom.api import WeComAPIError, WeComNetworkError
from channels.wecom.kf_inbound import KfRecord
from scrm.db.models import Inbox, utcnow
from scrm.db.models_wecom import WeComKfCursor
from scrm.domain import ContactProfile
from scrm.services.wecom.kf_store import CustomerOrder, fetch_profiles, messages_only, store_records

if TYPE_CHECKING:
    from scrm.context import AppContext

log = logging.getLogger("scrm.wecom.sync")

LEASE_SECONDS = 30.0
TOKEN_TTL = timedelta(minutes=9)  # WeCom's sync token is valid 10 minutes
MAX_PAGES = 10_000  # per pull: a runaway has_more never pins a process
PREFETCH_PAGES = 32  # pages fetched ahead while earlier ones are stored
BATCH_ITEMS = 512  # items stored in one go at most (in concurrent ingest batches by customer)
BATCHES_IN_FLIGHT = 2  # message-only batches stored while the one before is still being stored
OWED_RETRY_AFTER = timedelta(seconds=30)  # a pull that failed is tried again by the catch-up after this
CATCHUP_TICK = 5.0
RUNNER_SCAN = 1.0  # a pull runner looks for owed pulls this often (missed wake-ups, expired leases, no Redis)
WAKE_CHANNEL = "scrm:wecom_kf_pull"
_ELSEWHERE = "wecom_kf_pull_elsewhere"
C = WeComKfCursor.__table__.c
_TASKS = "wecom_kf_pulls"


class LeaseLost(Exception):
    """Another process took this account's lease (we were too slow): stop pulling."""


async def request_pull(ctx: AppContext, inbox_id: int, data: dict[str, Any]) -> None:
    """Record the owed pull (committed before the callback is answered), then start it in the background
    here, or leave it to the pull runners (woken when the note committed)."""
    open_kfid = str(data.get("open_kfid") or "")
    target = await target_inbox(ctx, inbox_id, open_kfid)
    if target is None:
        log.warning("wecom kf: callback for open_kfid %r on inbox %s: no active inbox serves it; ignored",
                    open_kfid, inbox_id)
        return
    await _notes(ctx).submit((target, open_kfid), data.get("token") or None)
    if pulls_here(ctx):
        kick(ctx, target, open_kfid)
    # Otherwise the note's commit woke the pull runners (_PullNotes._flush): the answer does not wait for that.


class _PullNotes:
    """Group commit of pull requests: callbacks arriving while a note is being written share the next
    statement (one multi-row upsert, its own transaction), so a burst of callbacks costs a few commits,
    not one each. On PostgreSQL two notes may be in flight (a callback arriving during a write does not
    wait for it to finish) and each is one round trip (autocommit: no BEGIN, no COMMIT), but never two
    for the same kf account: both upsert its one row, so the second waited for the first's row lock,
    held until the first's commit had reached the disk, and then for its own commit. A callback arriving
    meanwhile waited behind both, three commits in a row; now it waits for the one being written, then
    its own (the tail of the acknowledgements in a burst on one account)."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.pending: dict[tuple[int, str], list[Any]] = {}  # key -> [count, newest token, futures]
        self.writing: set[tuple[int, str]] = set()  # accounts whose note is being written
        self.running: set[asyncio.Task[None]] = set()
        self.in_flight = 1 if ctx.db.is_sqlite else 2

    async def submit(self, key: tuple[int, str], token: str | None) -> None:
        entry = self.pending.setdefault(key, [0, None, []])
        entry[0] += 1
        entry[1] = token or entry[1]
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry[2].append(done)
        if len(self.running) < self.in_flight and key not in self.writing:
            task = asyncio.get_running_loop().create_task(self._flush())
            self.running.add(task)
            task.add_done_callback(self.running.discard)
        await done

    async def _flush(self) -> None:
        # Notes of accounts being written wait for that write's task, which looks again when it is done.
        while batch := {k: v for k, v in self.pending.items() if k not in self.writing}:
            for key in batch:
                del self.pending[key]
            self.writing |= batch.keys()
            try:
                await _write_notes(self.ctx, {k: (v[0], v[1]) for k, v in batch.items()})
            except BaseException as exc:  # the callbacks fail (503 / retried by WeCom): nothing was noted
                for entry in batch.values():
                    for f in entry[2]:
                        if not f.done():
                            f.set_exception(exc if isinstance(exc, Exception) else RuntimeError("cancelled"))
                if not isinstance(exc, Exception):
                    raise
                continue
            finally:
                self.writing -= batch.keys()
            if not pulls_here(self.ctx):
                wake(self.ctx, list(batch))
            for entry in batch.values():
                for f in entry[2]:
                    if not f.done():
                        f.set_result(None)


def pulls_here(ctx: AppContext) -> bool:
    """Whether this process pulls the kf accounts its callbacks note (see pull_elsewhere)."""
    return not ctx.extras.get(_ELSEWHERE, False)


def pull_elsewhere(ctx: AppContext) -> None:
    """This process only notes pulls and wakes the pull runners (`scrm serve --no-worker`, and `scrm worker`
    while its pull runner process runs): the pulls' fetching and storing stay off its event loop."""
    ctx.extras[_ELSEWHERE] = True


def pull_here(ctx: AppContext) -> None:
    """This process pulls again (the worker whose pull runner process could not be kept running)."""
    ctx.extras.pop(_ELSEWHERE, None)


def wake(ctx: AppContext, keys: list[tuple[int, str]]) -> None:
    """Tell the pull runners (every process running run_runner) that these accounts are owed a pull, over
    Redis, without waiting: a lost wake-up only delays the pull to the runners' next scan (RUNNER_SCAN)."""
    if ctx.redis is None or not keys:
        return
    tasks: set[asyncio.Task[None]] = ctx.extras.setdefault("wecom_kf_wakes", set())
    task = asyncio.get_running_loop().create_task(_publish(ctx, keys))
    tasks.add(task)
    task.add_done_callback(tasks.discard)


def _wake_channel(ctx: AppContext) -> str:
    # Pub/sub channels are server-wide: two installations sharing a Redis server must not wake each other.
    db = getattr(getattr(ctx.redis, "connection_pool", None), "connection_kwargs", {}).get("db", 0)
    return f"{WAKE_CHANNEL}:{db}"


async def _publish(ctx: AppContext, keys: list[tuple[int, str]]) -> None:
    try:
        await ctx.redis.publish(_wake_channel(ctx), "\n".join(f"{i} {k}" for i, k in keys))  # type: ignore[union-attr]
    except Exception as exc:  # noqa: BLE001 - the note is committed; the runners' scan finds it
        log.warning("wecom kf: could not wake the pull runners (%s); their scan will find the pull", exc)


def _notes(ctx: AppContext) -> _PullNotes:
    notes = ctx.extras.get("wecom_kf_notes")
    if notes is None:
        notes = ctx.extras["wecom_kf_notes"] = _PullNotes(ctx)
    return notes


_NOTE_COLUMNS = ("inbox_id", "open_kfid", "requested_seq", "pending_token", "pending_at", "updated_at")
_NOTE_STATEMENTS: dict[tuple[bool, int], Any] = {}
_NOTE_STATEMENTS_CACHED = 8  # row counts kept built: one kf account per note is the common case


def _notes_statement(sqlite: bool, rows: int) -> Any:
    """The notes upsert for `rows` accounts, its values bound by name (`<column>_<row>`): built once per
    row count and reused, because building it (insert + on conflict + coalesce) cost ~0.6 ms of the event
    loop per note, ahead of every callback waiting to be answered."""
    stmt = _NOTE_STATEMENTS.get((sqlite, rows))
    if stmt is not None:
        return stmt
    insert = sqlite_insert if sqlite else pg_insert
    values = [{name: bindparam(f"{name}_{row}", type_=C[name].type) for name in _NOTE_COLUMNS}
              | {"pulled_seq": 0, "pulled_total": 0} for row in range(rows)]
    base = insert(WeComKfCursor.__table__).values(values)
    new = base.excluded
    stmt = base.on_conflict_do_update(index_elements=["inbox_id", "open_kfid"], set_={
        "requested_seq": C.requested_seq + new.requested_seq, "updated_at": new.updated_at,
        "pending_token": func.coalesce(new.pending_token, C.pending_token),
        "pending_at": func.coalesce(new.pending_at, C.pending_at)}).returning(C.requested_seq)
    if rows <= _NOTE_STATEMENTS_CACHED:
        _NOTE_STATEMENTS[(sqlite, rows)] = stmt
    return stmt


async def _write_notes(ctx: AppContext, notes: dict[tuple[int, str], tuple[int, str | None]]) -> None:
    """One upsert for all the accounts noted (sorted: two processes lock rows in the same order). On
    PostgreSQL through the notes' own connections (_NoteWriter: their commit does not wait for the WAL flush)."""
    now = utcnow()
    params: dict[str, Any] = {}
    for row, ((inbox_id, open_kfid), (count, token)) in enumerate(sorted(notes.items())):
        params |= {f"inbox_id_{row}": inbox_id, f"open_kfid_{row}": open_kfid, f"requested_seq_{row}": count,
                   f"pending_token_{row}": token, f"pending_at_{row}": now if token else None,
                   f"updated_at_{row}": now}
    statement = _notes_statement(ctx.db.is_sqlite, len(notes))
    if ctx.db.is_sqlite or ctx.db.joined() is not None:
        await ctx.db.one_statement(statement, params, write=True)
        return
    writer = ctx.extras.get("wecom_kf_note_writer")
    if writer is None:
        writer = ctx.extras["wecom_kf_note_writer"] = _NoteWriter(ctx.db)
        ctx.extras.setdefault("on_close", []).append(writer.close)
    await writer.write(statement, params, cache=len(notes) <= _NOTE_STATEMENTS_CACHED)


class _NoteWriter:
    """The pull notes' own PostgreSQL connections (asyncpg, as many as notes are written at once: two),
    with `synchronous_commit = off`: a note's commit returns once its WAL record is in PostgreSQL's WAL
    buffers, without waiting for the WAL flush, which in a burst queued behind the pulls' ingest commits
    (IO:WALSync, LWLock:WALWrite: ~24-30 ms of the slowest acknowledgements).

    Why that is safe for a pull note: the commit is a commit, visible to every other session at once (the
    pull runners' scan and lease read it; WAL order is kept, so any later flushed commit flushes it too),
    and it lives in PostgreSQL, not in this process: a SIGKILL of `scrm serve` after its answer loses
    nothing (tests/integration/test_integration_wecom_kill.py). Only a crash of PostgreSQL itself (or of
    its machine) within ~3 x wal_writer_delay (600 ms by default) of the commit can lose it, and a lost note
    loses no message: the callback carries none, only a sync token; the messages stay in WeCom (3 days)
    and the periodic token-less catch-up (catch_up, per the inbox's catchup_interval_seconds) pulls them,
    late by that interval at most. Everything else (the pulls' ingest, cursors, leases) keeps waiting
    for the flush. SET LOCAL would need a transaction: BEGIN, SET, the upsert, COMMIT, four round trips
    for the one of autocommit; the setting is the connections' own (a startup parameter) instead.

    Raw asyncpg, the statement compiled once per row count (as scrm/db/fast_reads.py does for reads)."""

    def __init__(self, db: Any) -> None:
        from scrm.db.fast_reads import _connect_kwargs

        kwargs = _connect_kwargs(db.engine.url, db.engine.dialect)
        kwargs["server_settings"] = {**kwargs.get("server_settings", {}), "synchronous_commit": "off",
                                     "application_name": "scrm wecom kf notes"}
        self.connect_kwargs = kwargs
        self.dialect = db.engine.dialect
        self.idle: list[Any] = []  # connections not in use, the last used on top
        self.compiled: dict[int, tuple[Any, Any]] = {}  # id(statement) -> (statement, _Compiled)
        self.closed = False

    def _compiled(self, statement: Any, params: dict[str, Any], cache: bool) -> Any:
        from scrm.db.fast_reads import _Compiled

        found = self.compiled.get(id(statement))
        if found is None or found[0] is not statement:
            found = (statement, _Compiled(statement, self.dialect, params))
            if cache:
                self.compiled[id(statement)] = found
        return found[1]

    async def write(self, statement: Any, params: dict[str, Any], *, cache: bool = True) -> list[Any]:
        """Run the statement (its own transaction) and return its rows. A connection found broken (a
        database restart while it rested) is dropped and the statement tried once more on a new one:
        the upsert only adds to requested_seq, so running it twice at worst owes one pull more."""
        import asyncpg

        compiled = self._compiled(statement, params, cache)
        args = compiled.args(params)
        for attempt in (0, 1):
            fresh = not self.idle
            conn = self.idle.pop() if self.idle else await asyncpg.connect(**self.connect_kwargs)
            try:
                rows = list(await conn.fetch(compiled.sql, *args))
            # InternalClientError: the server's goodbye (a terminated backend) reached the resting connection
            # just before this statement, which then found its protocol mid-way ("cannot switch to state").
            except (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, asyncpg.AdminShutdownError,
                    asyncpg.CrashShutdownError, asyncpg.InternalClientError, OSError) as exc:
                conn.terminate()
                if fresh or attempt:
                    raise
                log.info("wecom kf: a pull note's connection was broken (%s); on a new one", type(exc).__name__)
                for other in self.idle:  # they rested through the same restart
                    other.terminate()
                self.idle.clear()
                continue
            except BaseException:
                conn.terminate()  # its state is unknown (a cancellation mid-statement)
                raise
            if self.closed:
                await conn.close()
            else:
                self.idle.append(conn)
            return rows
        raise AssertionError("unreachable")

    async def close(self) -> None:
        self.closed = True
        idle, self.idle = self.idle, []
        for conn in idle:
            with contextlib.suppress(Exception):
                await conn.close()


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
        except Exception as exc:  # the database, a bug: give the lease back so the catch-up can retry soon
            await _release(ctx, inbox_id, open_kfid, owner, seen, f"{type(exc).__name__}: {exc}"[:500])
            raise
        if not await _release(ctx, inbox_id, open_kfid, owner, seen, error) or error:
            return stored


async def _acquire(ctx: AppContext, inbox_id: int, open_kfid: str, owner: str) -> tuple[Any, ...] | None:
    now = utcnow()
    rows = await ctx.db.one_statement(
        update(WeComKfCursor.__table__)
        .where(C.inbox_id == inbox_id, C.open_kfid == open_kfid,
               or_(C.lease_owner.is_(None), C.lease_until < now, C.lease_owner == owner))
        .values(lease_owner=owner, lease_until=now + timedelta(seconds=LEASE_SECONDS))
        .returning(C.cursor, C.requested_seq, C.pending_token, C.pending_at), write=True)
    return tuple(rows[0]) if rows else None


async def _release(ctx: AppContext, inbox_id: int, open_kfid: str, owner: str, seen: int,
                   error: str | None) -> bool:
    """Give the lease back; True when a callback came during the pull (requested_seq moved past `seen`)."""
    now = utcnow()
    values: dict[str, Any] = {"lease_owner": None, "lease_until": None, "last_pull_at": now, "last_error": error}
    if error is None:
        values["pulled_seq"] = seen
    rows = await ctx.db.one_statement(
        update(WeComKfCursor.__table__)
        .where(C.inbox_id == inbox_id, C.open_kfid == open_kfid, C.lease_owner == owner)
        .values(**values).returning(C.requested_seq), write=True)
    return bool(rows) and int(rows[0][0]) > seen


@dataclass
class _Page:
    """A fetched page, translated, with the fetch of its new customers' profiles (running meanwhile)."""

    records: list[KfRecord]
    profiles: asyncio.Task[dict[str, ContactProfile]]
    next_cursor: str | None


async def _pull_pages(ctx: AppContext, inbox_id: int, open_kfid: str, owner: str, cursor: str | None,
                      token: str | None) -> int:
    """Fetch pages in order while the previous ones are stored. Pages that arrived while a store ran
    are stored together (up to BATCH_ITEMS items), then the cursor of the last of them is saved, fenced
    by the lease: the cursor never passes a message that is not committed. A batch of customer messages
    only is stored while the batch before it still is (CustomerOrder keeps each customer's messages in
    order); its cursor save waits for that batch's (saves stay in order; a lost lease stops the pull).
    A batch with effects or channel events is stored alone."""
    inbox = await ctx.adapters.inbox(inbox_id)
    adapter = await ctx.adapters.get(inbox_id)
    if inbox is None or adapter is None:
        return 0
    pages: asyncio.Queue[_Page | BaseException | None] = asyncio.Queue(maxsize=PREFETCH_PAGES)
    loop = asyncio.get_running_loop()
    fetcher = loop.create_task(_fetch_pages(ctx, inbox, adapter, open_kfid, cursor, token, pages))
    order = CustomerOrder()
    in_flight: deque[asyncio.Task[int]] = deque()  # each: a batch's store, then its cursor save (chained)
    stored = 0
    try:
        finished = False
        while not finished:
            batch = [await pages.get()]
            while not pages.empty() and sum(len(p.records) for p in batch if isinstance(p, _Page)) < BATCH_ITEMS:
                batch.append(pages.get_nowait())
            ready = [p for p in batch if isinstance(p, _Page)]
            if ready:
                records = [r for p in ready for r in p.records]
                profiles = {k: v for p in ready for k, v in (await p.profiles).items()}
                # Effects and events: stored alone, after everything before them and before anything after.
                alone = not messages_only(records)
                while alone and in_flight:
                    stored += await in_flight.popleft()
                store = loop.create_task(store_records(ctx, inbox, adapter, records, profiles, order))
                cursor = ready[-1].next_cursor or cursor
                previous = in_flight[-1] if in_flight else None
                in_flight.append(loop.create_task(_save_after(ctx, inbox_id, open_kfid, owner, cursor, store,
                                                              previous)))
                while len(in_flight) > (0 if alone else BATCHES_IN_FLIGHT - 1):
                    stored += await in_flight.popleft()
            for item in batch:
                if isinstance(item, BaseException):
                    raise item
                if item is None:
                    finished = True
        while in_flight:
            stored += await in_flight.popleft()
    finally:
        fetcher.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await fetcher
        while not pages.empty():  # pages fetched but not stored: their profile lookups are not needed
            left = pages.get_nowait()
            if isinstance(left, _Page):
                left.profiles.cancel()
        # An error ended the pull: what was stored before it still gets its cursor saved.
        for task in in_flight:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    return stored


async def _save_after(ctx: AppContext, inbox_id: int, open_kfid: str, owner: str, cursor: str | None,
                      store: asyncio.Task[int], previous: asyncio.Task[int] | None) -> int:
    """Save the cursor of a batch once it is stored and the batches before it are saved (in order)."""
    try:
        count = await store
    finally:
        if previous is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):  # its own awaiter sees its error
                await previous
    if previous is not None and (previous.cancelled() or previous.exception() is not None):
        raise RuntimeError("an earlier batch of this pull was not stored")
    await _save_cursor(ctx, inbox_id, open_kfid, owner, cursor, count)
    return count


async def _fetch_pages(ctx: AppContext, inbox: Inbox, adapter: Any, open_kfid: str, cursor: str | None,
                       token: str | None, out: asyncio.Queue[_Page | BaseException | None]) -> None:
    """kf/sync_msg pages in cursor order into `out` (translated, new customers' profiles fetched);
    None after the last (has_more 0), an error as is."""
    inbox_id = inbox.id
    profiles: asyncio.Task[dict[str, ContactProfile]] | None = None
    try:
        for _ in range(MAX_PAGES):
            try:
                page = await adapter.sync_page(cursor=cursor, token=token, open_kfid=open_kfid)
            except WeComAPIError as exc:
                if token is None:
                    raise
                # An expired or foreign token: the token-less pull still reads the account.
                log.warning("wecom kf inbox %s: sync token refused (%s); pulling without it", inbox_id, exc.errcode)
                token = None
                continue
            next_cursor = page.get("next_cursor") or cursor
            more = str(page.get("has_more") or "0") not in ("0", "False", "false")
            records = adapter.translate(page.get("msg_list") or [])
            # Profiles are looked up while the next page is fetched, one page's after another's (the
            # memo of the one before saves asking twice for a customer on both pages).
            profiles = asyncio.get_running_loop().create_task(_profiles_after(ctx, inbox, adapter, records, profiles))
            await out.put(_Page(records, profiles, page.get("next_cursor") or None))
            if not more:
                break
            if next_cursor == cursor and not page.get("msg_list"):
                log.warning("wecom kf inbox %s: has_more without progress; stopping this pull", inbox_id)
                break
            cursor = next_cursor
        await out.put(None)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - handed to the storing side, which stops the pull with it
        await out.put(exc)


async def _profiles_after(ctx: AppContext, inbox: Inbox, adapter: Any, records: list[KfRecord],
                          previous: asyncio.Task[dict[str, ContactProfile]] | None) -> dict[str, ContactProfile]:
    if previous is not None:
        with contextlib.suppress(Exception):
            await previous
    return await fetch_profiles(ctx, inbox, adapter, records) if records else {}


async def _save_cursor(ctx: AppContext, inbox_id: int, open_kfid: str, owner: str, cursor: str | None,
                       stored: int) -> None:
    now = utcnow()
    rows = await ctx.db.one_statement(
        update(WeComKfCursor.__table__)
        .where(C.inbox_id == inbox_id, C.open_kfid == open_kfid, C.lease_owner == owner)
        .values(cursor=cursor, lease_until=now + timedelta(seconds=LEASE_SECONDS),
                pulled_total=C.pulled_total + stored, updated_at=now)
        .returning(C.inbox_id), write=True)
    if len(rows) != 1:
        raise LeaseLost


# --- catch-up (periodic job) ---------------------------------------------------------------------


async def catch_up(ctx: AppContext, now: datetime | None = None) -> int:
    """Pull what is owed (callbacks whose pull never ran) and what is due a token-less catch-up."""
    now = now or utcnow()
    async with ctx.db.session() as s:
        owed = (await s.execute(_owed_query(now))).all()
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
    if not pulls_here(ctx):  # the pull runners pull: a token-less pull owed, as a callback without a token notes it
        if due:
            await _write_notes(ctx, {key: (1, None) for key in due})
        wake(ctx, [*todo, *due])
        return 0
    stored = 0
    for inbox_id, open_kfid in [*todo, *due]:
        try:
            stored += await pull(ctx, inbox_id, open_kfid)
        except Exception:  # noqa: BLE001 - one account's trouble never stops the others
            log.exception("wecom kf catch-up of inbox %s failed", inbox_id)
    return stored


async def _mark_catchup(ctx: AppContext, key: tuple[int, str], now: datetime) -> None:
    async with ctx.db.transaction() as s:
        insert = pg_insert if s.get_bind().dialect.name == "postgresql" else sqlite_insert
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


def _owed_query(now: datetime) -> Any:
    """Accounts owed a pull that nobody pulls now (a failed pull waits OWED_RETRY_AFTER)."""
    return select(C.inbox_id, C.open_kfid).where(
        C.requested_seq > C.pulled_seq, or_(C.lease_owner.is_(None), C.lease_until < now),
        or_(C.last_error.is_(None), C.last_pull_at < now - OWED_RETRY_AFTER))


# --- the pull runner ----------------------------------------------------------------------------


async def run_runner(ctx: AppContext, stop: asyncio.Event) -> None:
    """Pull what callbacks noted, in this process: woken over Redis by the process that noted it, and a
    scan every RUNNER_SCAN seconds for owed pulls (a lost wake-up, no Redis, a dead puller's expired lease).
    Runs in the `scrm worker` pull runner process, or in the worker or embedded server itself. Every
    process running it may be woken for the same account: the lease in the database lets one pull it."""
    listener = asyncio.get_running_loop().create_task(_listen(ctx)) if ctx.redis is not None else None
    try:
        while not stop.is_set():
            try:
                if await ctx.adapters.active("wecom_kf"):  # cached: installs without 微信客服 do not query
                    async with ctx.db.session() as s:
                        owed = (await s.execute(_owed_query(utcnow()))).all()
                    for row in owed:
                        kick(ctx, row.inbox_id, row.open_kfid)
            except Exception:
                log.exception("wecom kf pull runner: scan for owed pulls failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), RUNNER_SCAN)
    finally:
        if listener is not None:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await listener
        # Let the pulls in hand finish (their cursor saved); one cut short is pulled again from its cursor.
        await wait_pulls(ctx, timeout=10.0)
        for task in list(ctx.extras.get(_TASKS, {}).values()):
            task.cancel()


async def _listen(ctx: AppContext) -> None:
    """Kick a pull for every account a wake-up names; resubscribe after a lost connection."""
    while True:
        try:
            pubsub = ctx.redis.pubsub(ignore_subscribe_messages=True)  # type: ignore[union-attr]
            try:
                await pubsub.subscribe(_wake_channel(ctx))
                async for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    data = message["data"]
                    for line in (data.decode() if isinstance(data, bytes) else str(data)).splitlines():
                        inbox_id, _, open_kfid = line.partition(" ")
                        if inbox_id.isdigit() and open_kfid:
                            kick(ctx, int(inbox_id), open_kfid)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the scan keeps pulling meanwhile
            log.warning("wecom kf pull runner: wake-up subscription lost (%s); resubscribing", exc)
            await asyncio.sleep(1.0)
