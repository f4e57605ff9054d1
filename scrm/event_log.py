"""The event log's writer, consumer and pruner (a transactional outbox for follow-up work).

Every unit of work appends its events to the `events` table before it commits (uow.py, ingest), so
an event exists exactly when the change that caused it does. A consumer claims a batch of unworked
events, calls the work listeners (bot, desk, automation, notifications, ...) inside one shared
transaction that their own writes join (Database.shared_transaction), marks the events worked in
that same transaction and commits: an effect and the record that it happened commit together, so a
process killed at any point leaves the work either done once or still to do.

Ordering, one mechanism: on PostgreSQL a consumer works a conversation's events only while it holds
the conversation's turn (conversation_turns: a transaction-level advisory lock, the lock agents'
actions take too), taken with a try-lock when it claims, so another consumer skips that conversation
and takes others; events with no conversation are claimed with FOR UPDATE SKIP LOCKED. Events are
worked in id order (ids are allocated in the writing transaction: commit order, give or take the
overlap of concurrent transactions). On SQLite one write transaction at a time: the consumer's batch
is itself the turn.

Progress is kept per event (`worked_at`), not as a position: ids are allocated before commit, so a
position could pass an id whose transaction commits later and skip it for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import BigInteger, Text, bindparam, delete, func, insert, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from scrm import event_interest as interest
from scrm import events as ev
from scrm import json_codec
from scrm.batch_sizer import BatchSizer
from scrm.db.database import shared_for
from scrm.db.models import utcnow
from scrm.db.models_events import EventRecord
from scrm.delivery.handoff import Handover
from scrm.event_batch import hold_back_conversation_writes, preload, write_held_back
from scrm.services.conversations.turns import TURNS
from scrm.services.desk import automation, webhooks_out
from scrm.services.outbox import defer_deliveries, insert_deferred_deliveries, write_batch_rows

if TYPE_CHECKING:
    from scrm.context import AppContext
    from scrm.db.database import Database, SharedTransaction
    from scrm.events import EventBus, Subscription
    from scrm.settings import EventsSettings

log = logging.getLogger("scrm.event_log")


async def listening(ctx: AppContext) -> interest.Listening:
    """What the database says listens to events beyond the code (event_interest.py), from the caches the
    consumers read themselves: no statement while they are fresh, a few small reads when they expire."""
    return interest.Listening(
        rules=await automation.rule_events(ctx), webhooks=await webhooks_out.subscribed_events(ctx),
        unionid_links=any((i.settings or {}).get("link_unionid") for i in await ctx.adapters.active("wechat_oa")),
        wecom_contacts=bool(await ctx.adapters.active("wecom_contacts")))


RETRY_FIRST, RETRY_MAX = 0.5, 10.0  # seconds between attempts while the database is unreachable
SCAN = 4  # PostgreSQL: unworked events a claim looks at, in batches (conversations other consumers hold are skipped)
PRUNE_EVERY = 60.0
BATCH_GROWTH = 4  # a batch grows to at most this many times events.batch_size under a backlog
PRUNE_CHUNK = 10_000


def _plain(value: Any) -> Any:
    """JSON-safe payload (dates and other scalars as text, as the live fan-out writes them)."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    return str(value)


def records(events: list[ev.Event], listening: interest.Listening = interest.ANY) -> list[dict[str, Any]]:
    """The rows of `events` that some consumer may act on (event_interest.py); the others are not logged."""
    now = utcnow()
    rows = []
    for event in events:
        if not interest.logged(event, listening):
            continue
        cid = event.data.get("conversation_id")
        rows.append({"conversation_id": cid if isinstance(cid, int) and not isinstance(cid, bool) else None,
                     "name": event.name, "payload": _plain(event.data), "created_at": now})
    return rows


# PostgreSQL: a batch of events as one INSERT of arrays (one execution, not one per row: asyncpg's executemany
# binds and PostgreSQL executes each row apart), ids allocated in the events' order (the order of work).
_APPEND_PG = text("""
INSERT INTO events (conversation_id, name, payload, created_at)
SELECT u.conversation_id, u.name, u.payload::json, :now
FROM unnest(:conversation_ids, :names, :payloads) WITH ORDINALITY AS u(conversation_id, name, payload, n)
ORDER BY u.n
""").bindparams(bindparam("conversation_ids", type_=ARRAY(BigInteger)), bindparam("names", type_=ARRAY(Text)),
                bindparam("payloads", type_=ARRAY(Text)),
                bindparam("now", type_=EventRecord.__table__.c.created_at.type))


async def append(session: AsyncSession, events: list[ev.Event], listening: interest.Listening | None = None) -> int:
    """Log the events some consumer may act on in the caller's transaction (one statement); returns how
    many. `listening`: the snapshot taken before the transaction (event_log.listening); none given, a
    consumer batch's own (its units of work took it), else every rule, webhook and inbox is assumed."""
    if listening is None:
        shared = shared_for(session)
        listening = shared.facts.get(interest.LISTENING_FACT) if shared is not None else None
    rows = records(events, listening or interest.ANY)
    if rows and session.get_bind().dialect.name == "postgresql":
        await session.execute(_APPEND_PG, {
            "conversation_ids": [r["conversation_id"] for r in rows], "names": [r["name"] for r in rows],
            "payloads": [json_codec.dumps(r["payload"]) for r in rows], "now": rows[0]["created_at"]})
    elif rows:
        await session.execute(insert(EventRecord), rows)
    return len(rows)


async def unworked(db: Database) -> bool:
    """Whether any logged event waits for a consumer."""
    async with db.session() as s:
        return (await s.scalar(select(EventRecord.id).where(EventRecord.worked_at.is_(None)).limit(1))) is not None


def _event(record: Any) -> ev.Event:
    # The id is the log's: stable when the event is worked again after a crash (notification dedup keys use it).
    return ev.Event(record.name, dict(record.payload or {}), id=f"log-{record.id}",
                    at=record.created_at.isoformat() if record.created_at else "")


# PostgreSQL: candidates in id order, the turns of their conversations that are free (a try-lock: a
# consumer never waits for another, it takes other conversations), then every unworked event of those
# conversations and the candidates with no conversation, locked and marked worked. Candidates reach past
# one batch, so a second consumer finds conversations beyond the ones the first took. One statement: the
# try-lock is volatile, so the CTE runs once; FOR UPDATE re-reads a row another consumer marked worked
# meanwhile and drops it. Marked in the claim (the batch's transaction: a rollback unmarks them), not
# by a second statement before the commit.
_CLAIM_PG = text("""
WITH candidates AS (
    SELECT id, conversation_id FROM events WHERE worked_at IS NULL ORDER BY id LIMIT :scan
), turns AS (
    SELECT c FROM (SELECT DISTINCT conversation_id AS c FROM candidates WHERE conversation_id IS NOT NULL
                   ORDER BY 1) AS d
    WHERE pg_try_advisory_xact_lock(:turns | c)
), claimed AS (
    SELECT e.id FROM events e
    WHERE e.worked_at IS NULL
      AND (e.conversation_id IN (SELECT c FROM turns)
           OR (e.conversation_id IS NULL AND e.id IN (SELECT id FROM candidates)))
    ORDER BY e.id LIMIT :n
    FOR UPDATE OF e SKIP LOCKED
)
UPDATE events AS w SET worked_at = :now FROM claimed WHERE w.id = claimed.id
RETURNING w.id, w.conversation_id, w.name, w.payload, w.created_at
""").bindparams(bindparam("turns", type_=BigInteger), bindparam("now", type_=EventRecord.__table__.c.worked_at.type))


async def claim(session: AsyncSession, limit: int) -> list[Any]:
    """Unworked events this transaction may work now, in order (see the module docstring). On
    PostgreSQL they come back marked worked (see _CLAIM_PG); on SQLite the batch marks them."""
    if session.get_bind().dialect.name == "postgresql":
        rows = (await session.execute(_CLAIM_PG, {"n": limit, "scan": limit * SCAN, "turns": TURNS,
                                                  "now": utcnow()})).all()
        return sorted(rows, key=lambda r: r.id)  # RETURNING has no order
    return list((await session.execute(
        select(EventRecord.id, EventRecord.conversation_id, EventRecord.name, EventRecord.payload,
               EventRecord.created_at).where(EventRecord.worked_at.is_(None)).order_by(EventRecord.id).limit(limit)
    )).all())


class EventConsumer:
    """Works the event log in one process: a batch per transaction, woken by new events or a poll."""

    def __init__(self, bus: EventBus, db: Database, settings: EventsSettings) -> None:
        self.bus = bus
        self.db = db
        self.settings = settings
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        # Each task's own wake-up, and the tasks waiting for one: a wake-up starts one idle task, not
        # all of them (the others' claims would find nothing, each a transaction of its own).
        self._wakes: dict[asyncio.Task[None] | None, asyncio.Event] = {}
        self._idle: list[asyncio.Event] = []
        self._careful = 0  # events still to work one at a time after a batch failed
        # Batches may grow under a backlog, while a longer batch works events faster (batch_sizer.py); not
        # on SQLite: its one writer is shared with ingest, which a longer batch would hold up.
        self._sizer = BatchSizer(settings.batch_size, settings.batch_size * (1 if db.is_sqlite else BATCH_GROWTH))
        self._last_claim = 0.0  # loop time at which this process's last claim started (or is to start)

    def start(self) -> None:
        """Start the consumer tasks: on PostgreSQL several (each claims other conversations, so one's
        database round trips overlap another's bot work); on SQLite one (a single writer anyway)."""
        if not self._tasks:
            count = 1 if self.db.is_sqlite else self.settings.consumers
            loop = asyncio.get_running_loop()
            self._tasks = [loop.create_task(self._run()) for _ in range(count)]

    def wake(self) -> None:
        """New events: one waiting task looks now; with none waiting, every task looks again after
        its batch (an event committed during its claim may not be in it). A task's own publish after
        its batch wakes nobody: it looks again anyway, having worked events."""
        try:
            me = asyncio.current_task()
        except RuntimeError:
            me = None
        if me is not None and me in self._wakes:
            return
        if self._idle:
            self._idle.pop().set()
        else:
            for wake in self._wakes.values():
                wake.set()

    def _wake_another(self) -> None:
        """A full batch: the backlog is worth a second task (it takes other conversations)."""
        if self._idle:
            self._idle.pop().set()

    async def stop(self) -> None:
        """Finish the batch in hand (its transaction commits or rolls back), then stop."""
        self._stopping = True
        for wake in self._wakes.values():
            wake.set()
        running = {task for task in self._tasks if not task.done()}
        if running:
            await asyncio.wait(running, timeout=30)

    async def _run(self) -> None:
        backoff = RETRY_FIRST
        wake = self._wakes[asyncio.current_task()] = asyncio.Event()
        while not self._stopping:
            wake.clear()  # before looking: an event committed while we work wakes the next round
            try:
                worked = await self.work_once()
                backoff = RETRY_FIRST
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the database is away, or a batch failed: retry
                if self._careful:
                    log.warning("event log: could not work events (%s: %s); retrying in %.1f s",
                                type(exc).__name__, exc, backoff)
                    await self._pause(wake, backoff)
                    backoff = min(backoff * 2, RETRY_MAX)
                else:
                    log.warning("event log: a batch failed (%s: %s); working its events one by one",
                                type(exc).__name__, exc)
                    self._careful = self._sizer.limit  # as many events as the failed batch may have held
                    self._sizer.reset()
                continue
            if not worked:
                await self._pause(wake, self.settings.poll_interval)

    async def _pause(self, wake: asyncio.Event, seconds: float) -> None:
        if wake.is_set() or self._stopping:
            return
        self._idle.append(wake)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), seconds)
        finally:
            if wake in self._idle:
                self._idle.remove(wake)

    async def _linger(self) -> int:
        """Space this process's claims while events arrive fast (BatchSizer.gap): each claim finds more
        events waiting, so fewer batches share out the same work. Returns the claim's limit."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        gap = self._sizer.gap()
        at = max(now, self._last_claim + gap)
        self._last_claim = at
        if at > now and not self._stopping:
            await asyncio.sleep(at - now)
        return self._sizer.claim_limit(gap)

    async def work_once(self) -> int:
        """Claim and work one batch in one transaction; returns how many events it worked."""
        careful = self._careful > 0
        limit = 1 if careful else await self._linger()
        later: list[tuple[Subscription, ev.Event]] = []
        for ready in list(self.bus.before_work):
            await ready()
        handover = Handover(self.bus.deliveries)
        started = asyncio.get_running_loop().time()
        try:
            async with self.db.shared_transaction() as shared:
                claimed = await claim(shared.session, limit)
                self._sizer.claimed(len(claimed), limit, claimed[-1].id if claimed else None)
                if not claimed:
                    self._careful = 0
                    return 0
                if not careful and len(claimed) >= limit:  # a backlog: worth a second task
                    self._wake_another()
                errors: dict[int, str] = {}
                events = [_event(record) for record in claimed]
                # The turns of the claimed conversations are this transaction's (on SQLite: every one).
                shared.turns = {r.conversation_id for r in claimed if r.conversation_id is not None}
                hold_back_conversation_writes(shared)
                defer_deliveries(shared)
                await preload(shared, events)
                for record, event in zip(claimed, events, strict=True):
                    for sub in self.bus.work_listeners(event):
                        if sub.after_commit:
                            later.append((sub, event))
                        elif careful:
                            error = await _call_alone(shared, sub, event)
                            if error:
                                errors[record.id] = f"{errors.get(record.id, '')}{error}\n"
                        else:
                            await sub.listener(event)
                while shared.at_end:  # work the listeners left to the end (SharedTransaction.at_end)
                    await shared.at_end.pop(0)()
                # The new deliveries this process's outbox worker sends at once are marked `sending` for it.
                await handover.mark(shared, await insert_deferred_deliveries(
                    shared, lambda pending: handover.before_insert(shared, pending)))
                await self._mark(shared, claimed, errors)
                logged = await append(shared.session, shared.events) if shared.events else 0
                await write_held_back(shared)  # last: the conversation rows stay locked only until the commit
            handover.committed()  # first thing after the commit: the customer waits for these sends
        finally:
            handover.close()
        if careful:
            self._careful -= 1
        else:
            self._sizer.worked(len(claimed), limit, asyncio.get_running_loop().time() - started)
        if shared.events:  # nothing logged (the bot's own messages, live pushes): no consumer to wake
            await self.bus.publish(shared.events, wake=logged > 0)
        for sub, event in later:
            self.bus.spawn(sub.listener, event)
        return len(claimed)

    @staticmethod
    async def _mark(shared: SharedTransaction, claimed: list[Any], errors: dict[int, str]) -> None:
        now = utcnow()
        ids = [r.id for r in claimed if r.id not in errors]
        if ids and shared.session.get_bind().dialect.name != "postgresql":  # PostgreSQL: marked by the claim
            await shared.session.execute(update(EventRecord).where(EventRecord.id.in_(ids)).values(worked_at=now))
        for event_id, error in errors.items():
            await shared.session.execute(update(EventRecord).where(EventRecord.id == event_id)
                                         .values(worked_at=now, error=error[:2000]))


async def _call_alone(shared: SharedTransaction, sub: Subscription, event: ev.Event) -> str | None:
    """Call one listener in a savepoint of its own: a failure undoes its writes only, and is recorded."""
    await write_batch_rows(shared)  # the rows of the listeners before: a rollback of this savepoint must keep them
    shared.savepoints = True
    emitted = len(shared.events)
    held_back = {cid: list(ops) for cid, ops in shared.held_back.items()}
    try:
        async with shared.session.begin_nested():
            await sub.listener(event)
        return None
    except Exception as exc:  # noqa: BLE001 - recorded on the event; the other listeners still do their part
        del shared.events[emitted:]
        shared.held_back = held_back  # its held-back conversation writes are undone with the savepoint too
        name = getattr(sub.listener, "__qualname__", repr(sub.listener))
        log.exception("listener %s failed on %s (event %s); recorded on the event", name, event.name, event.id)
        return f"{name}: {type(exc).__name__}: {exc}"[:500]
    finally:
        shared.savepoints = False


async def prune(db: Database, retention_hours: float) -> int:
    """Delete events worked longer ago than the retention window; returns how many."""
    cutoff = utcnow() - timedelta(hours=retention_hours)
    total = 0
    while True:
        async with db.transaction() as s:
            ids = list(await s.scalars(select(EventRecord.id).where(EventRecord.worked_at < cutoff)
                                       .order_by(EventRecord.id).limit(PRUNE_CHUNK)))
            if ids:
                await s.execute(delete(EventRecord).where(EventRecord.id.in_(ids)))
        total += len(ids)
        if len(ids) < PRUNE_CHUNK:
            return total


async def run_pruner(ctx: AppContext, stop: asyncio.Event) -> None:
    """Periodic job: prune worked events (scrm.periodic runs it in one process at a time)."""
    while not stop.is_set():
        pruned = await prune(ctx.db, ctx.settings.events.retention_hours)
        if pruned:
            log.info("pruned %d worked events older than %.0f h", pruned, ctx.settings.events.retention_hours)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), PRUNE_EVERY)


async def backlog(db: Database) -> int:
    """Events waiting for a consumer (for operators and benchmarks)."""
    async with db.session() as s:
        return int(await s.scalar(select(func.count()).select_from(EventRecord).where(EventRecord.worked_at.is_(None)))
                   or 0)
