"""The outbox worker: claim delivery rows, respect channel rate limits, send, record the outcome.

A delivery moves queued -> claimed -> sending -> sent | failed (or back to queued for a retry).
Recording outcomes is in delivery/outcomes.py, recovery after a crash in delivery/recovery.py.
PostgreSQL claims with FOR UPDATE SKIP LOCKED; SQLite serializes writers, which makes the same
UPDATE ... RETURNING safe.

Throughput: the state changes are group-committed. Every delivery is still marked `sending` (and
committed) before its channel is called, but the deliveries marked while a commit was running
share the next one, and outcomes (which no send waits for) ride along in it (or go 50 ms later
when nothing is being sent): about one commit per batch instead of two per delivery. The hot
statements are built once per worker with array parameters (PostgreSQL `= ANY(:ids)`, unnest), so
neither SQLAlchemy's statement building nor its per-call IN-list rendering runs per delivery, and
on PostgreSQL a running worker keeps its own two connections (claims, writes) instead of a pool
checkout with a liveness ping per transaction.

Pacing: the deliveries of one inbox wait in one line (Pacer). The front of the line is marked
`sending` a little ahead (by the claim itself for the rows that would be at the front at once, as a
consumer batch's hand-over does; by a group-committed "mark sending" for the rest); then each gets the rate limiter's go-ahead in order and is sent at once, so
no commit stands between a go-ahead and its send (commits released sends in bursts). `concurrency` bounds
the sends under way (from a go-ahead to the channel's answer), in even shares per inbox (SendSlots):
waiting in line holds no slot. How much of an inbox's queue a worker claims follows its rate
instead (ClaimBudget: about half a second's worth, from that inbox's own queue).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from channels.base import ChannelAdapter
from scrm import events as ev
from scrm.db.models import Delivery, utcnow
from scrm.db.sessions import Session
from scrm.delivery.batching import (
    MARK_SENDING_ALONE,
    MARK_SENT_ALONE,
    MARK_SENT_TAKE_NEXT,
    GroupCommit,
    OutboxStatements,
)
from scrm.delivery.budget import ClaimBudget
from scrm.delivery.liveness import Liveness, keep_beating
from scrm.delivery.outcomes import (
    Outcome,
    apply_outcome,
    decide,
    logged_outcome_events,
    record_outcomes,
    sent_alone,
    sent_alone_args,
)
from scrm.delivery.pacing import ARM_AHEAD_MAX, ARM_AHEAD_MIN, ARM_MIN, Pacer, paced
from scrm.delivery.recovery import UNKNOWN_OUTCOME as UNKNOWN_OUTCOME  # re-exported for callers and tests
from scrm.delivery.recovery import recover_stale, release_claimed, requeue
from scrm.delivery.recovery import update_outbox_depth as update_outbox_depth
from scrm.delivery.slots import SendSlots
from scrm.domain import OutboundMessage, PermanentSendError, SendResult, TransientSendError
from scrm.event_log import append
from scrm.metrics import DELIVERIES
from scrm.services.outbox import outbound_from_delivery
from scrm.services.uow import Tx, unit_of_work

if TYPE_CHECKING:
    from scrm.context import AppContext

log = logging.getLogger("scrm.delivery.worker")

MAX_INLINE_WAIT = 5.0  # rate-limit waits longer than this go back to the queue
# A delivery that would wait longer than this in its inbox's line goes back to the queue (due when its
# go-ahead would come); claims keep about half as much in line (see outbox_budget.CLAIM_HORIZON).
LINE_HORIZON = 1.0
D = Delivery.__table__


class OutboxWorker:
    """Delivers the outbox. Several may run in several processes."""

    def __init__(self, ctx: AppContext, name: str | None = None) -> None:
        self.ctx = ctx
        self.cfg = ctx.settings.worker
        self.name = name or f"worker:{ctx.process_id}"
        self._wake = asyncio.Event()  # look again: new work, stop, or room for a claim batch
        self._freed = asyncio.Event()  # a delivery finished: room to claim, or a new head of its ordering key
        self._inflight: set[asyncio.Task[None]] = set()
        self._min_claim = max(1, min(self.cfg.batch_size, self.cfg.concurrency // 8))
        # Deliveries between claim and the end of their send, by inbox; recording the outcome afterwards
        # is group-committed and holds neither a budget place nor a send slot.
        self._budget = ClaimBudget(self.cfg.concurrency, self._min_claim)
        self._slots = SendSlots(self.cfg.concurrency)
        self._force_claim = True  # look up the inboxes again and claim for each: new work may be anywhere
        self._pacers: dict[int, Pacer] = {}
        self._arm_ahead = ARM_AHEAD_MIN  # seconds of go-aheads each line marks `sending` ahead
        self._lookups: dict[int, asyncio.Future[ChannelAdapter | None]] = {}
        # One queue for both writes of a delivery: "mark sending" (an id) and "record the outcome".
        self._writes: GroupCommit[int | Outcome, bool] = GroupCommit(self._flush_writes)
        self._sql = OutboxStatements(ctx.db.dialect == "postgresql")
        self._own: dict[str, AsyncConnection | None] = {}  # connections held by `run` (PostgreSQL)
        self._recover_every = min(self.cfg.lease_seconds / 2, 15)
        self._unsubscribe = ctx.bus.subscribe(self._on_enqueued, ev.OUTBOX_ENQUEUED, everywhere=True)
        self._stopping = False
        self.lease_seconds = self.cfg.lease_seconds
        # Consumer batches of this process that may hand deliveries over (delivery/handoff.py): shutdown
        # waits for them, so no delivery marked `sending` for this worker is left unstarted.
        self._handovers = 0
        self._handovers_done = asyncio.Event()
        self._handovers_done.set()
        # Sent deliveries whose outcome left no due row of their contact waiting behind them (and no new
        # work was announced while it was recorded): their end makes no claim due (see _start).
        self._quiet: set[int] = set()
        self._announced = 0  # outbox.enqueued announcements seen
        # Deliveries marked `sending` before they started (by their claim or a consumer batch) that have not
        # joined their inbox's line yet, by inbox: they count among the places the line marks ahead.
        self._unjoined: Counter[int] = Counter()
        self._unjoined_ids: set[int] = set()

    async def _on_enqueued(self, event: ev.Event) -> None:
        self._announced += 1
        inbox_id = event.data.get("inbox_id")
        if isinstance(inbox_id, int):
            self._budget.inboxes.add(inbox_id)
            self._budget.undrain(inbox_id)
        else:
            self._budget.undrain()
            self._force_claim = True
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until `stop` is set, then release what was claimed but not started."""
        log.info("outbox worker %s started", self.name)
        _freeze_startup_objects()
        last_recover = float("-inf")
        loop = asyncio.get_running_loop()
        last_look = loop.time()
        if self._sql.postgresql:
            self._own = {"claim": None, "write": None}
        stopping = asyncio.ensure_future(stop.wait())
        stopping.add_done_callback(lambda _: self._wake.set())
        liveness = Liveness(self.ctx, self.name, self.cfg.heartbeat_seconds)
        heartbeat = asyncio.create_task(keep_beating(liveness, stop, self._recover_dead))
        if self.ctx.bus.deliveries is None:  # the process's consumer hands its batches' deliveries to us
            self.ctx.bus.deliveries = self
        try:
            while not stop.is_set():
                if loop.time() - last_recover > self._recover_every:
                    await self._guard(self.recover_stale())
                    last_recover = loop.time()
                # Cleared before looking, so a wake-up that arrives meanwhile is not lost.
                self._wake.clear()
                self._freed.clear()
                if loop.time() - last_look > self.cfg.poll_interval:
                    # Look everywhere again at least this often, even when wake-ups never let the wait
                    # below time out: rows due by now (retries), work announced to other processes.
                    self._budget.undrain()
                    self._force_claim = True
                if self._force_claim:
                    last_look = loop.time()
                filled = await self._guard(self._fill())
                if filled and filled[1]:
                    await asyncio.sleep(0)
                    continue
                # One event (new work, stop, or room for a claim batch) and a deadline, not three waiter
                # tasks per round: this loop goes round for every batch of finished deliveries.
                try:
                    async with asyncio.timeout(self.cfg.poll_interval):
                        await self._wake.wait()
                except TimeoutError:  # look everywhere again: rows due by now, work of other processes
                    self._budget.undrain()
                    self._force_claim = True
        finally:
            stopping.cancel()
            heartbeat.cancel()
            try:
                await self.shutdown()
                if self.ctx.bus.deliveries is self:
                    self.ctx.bus.deliveries = None
                if not self._inflight and not self._handovers:  # nothing of ours left to recover: others need not watch for us
                    with contextlib.suppress(Exception):
                        await liveness.stop()
            finally:
                await self._close_own()

    async def _recover_dead(self, dead: set[str]) -> int:
        """Recover the deliveries of workers found dead (delivery/liveness.py); their contacts may go on."""
        recovered = await self.recover_stale(dead=dead)
        self._budget.undrain()
        self._force_claim = True
        self._wake.set()
        return recovered

    @contextlib.asynccontextmanager
    async def _transaction(self, role: str, live: set[str] | frozenset[str] = frozenset()) -> AsyncIterator[Tx]:
        """A unit of work for the hot path ("claim" or "write"), events published after commit.

        While `run` goes on PostgreSQL, each role keeps one connection of its own: checking one
        out of the pool per transaction (with its liveness ping) cost as much CPU as the statements.
        A connection that failed is dropped and the next transaction opens a new one. Events whose ids
        are in `live` (filled in while the transaction runs) are published but not logged: no work
        listener acts on them (delivery/outcomes.py).
        """
        if role not in self._own:  # SQLite (its write lock lives in Database.transaction), or not running
            if self.ctx.db.joined() is not None:  # inside a consumer's batch: its commit logs and publishes
                async with unit_of_work(self.ctx) as tx:
                    yield tx
                return
            async with self.ctx.db.transaction() as session:
                tx = Tx(session, self.ctx.adapters)
                yield tx
                logged = [e for e in tx.events if e.id not in live] if live else tx.events
                await append(session, logged)
            if tx.events:
                await self.ctx.bus.publish(tx.events, wake=bool(logged))
            return
        conn = self._own[role]
        if conn is None or conn.closed:
            conn = self._own[role] = await self.ctx.db.engine.connect()
        try:
            async with conn.begin():
                # The session joins the connection's transaction; ORM changes are flushed before commit.
                session = Session(bind=conn, expire_on_commit=False)
                try:
                    tx = Tx(session, self.ctx.adapters)
                    yield tx
                    await session.flush()
                    # logged with the change that caused them
                    logged = [e for e in tx.events if e.id not in live] if live else tx.events
                    await append(session, logged)
                finally:
                    await session.close()
        except BaseException:
            self._own[role] = None
            with contextlib.suppress(Exception):
                await conn.invalidate()
            with contextlib.suppress(Exception):
                await conn.close()
            raise
        if tx.events:
            # Only live pushes (a plain send's outcome with no webhook wanting it): no consumer is woken.
            await self.ctx.bus.publish(tx.events, wake=bool(logged))

    async def _close_own(self) -> None:
        own, self._own = self._own, {}
        for conn in own.values():
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()

    async def _guard(self, coro):  # type: ignore[no-untyped-def]
        try:
            return await coro
        except Exception:
            log.exception("outbox worker step failed; retrying")
            await asyncio.sleep(1.0)
            return None

    async def _fill(self) -> tuple[int, bool]:
        """Claim what the inboxes' budgets have room for; returns (claimed, whether to claim again now)."""
        force, self._force_claim = self._force_claim, False
        if not (force or self._budget.wants_claim()):
            return 0, False  # claim in batches, not one row per finished send
        claimed, more = await self._claim(self.cfg.batch_size, budget=self._budget, refresh=force)
        for delivery in claimed:
            self._start(delivery)
        return len(claimed), more and bool(claimed) and self._budget.wants_claim()

    def _start(self, delivery: Any) -> None:
        if delivery.status == "sending":
            self._unjoined[delivery.inbox_id] += 1
            self._unjoined_ids.add(delivery.id)
        task = asyncio.create_task(self.process(delivery))
        self._inflight.add(task)
        self._budget.add(delivery)

        def done(t: asyncio.Task[None]) -> None:
            self._inflight.discard(t)
            self._release(delivery)
            self._freed.set()
            # Its outcome is recorded now: the next delivery of its ordering key may be claimed (unless
            # the outcome found none waiting: then a claim would come back empty).
            if delivery.id in self._quiet:
                self._quiet.discard(delivery.id)
                return
            self._budget.undrain(delivery.inbox_id)
            if self._budget.wants_claim():
                self._wake.set()
            if not t.cancelled() and t.exception() is not None:
                log.error("delivery %s: worker step failed; it is recovered after its lease", delivery.id,
                          exc_info=t.exception())

        task.add_done_callback(done)

    def _release(self, delivery: Any) -> None:
        """The delivery's send is over: its place in the inbox's budget is free (idempotent). (The next row
        of its contact is claimable only once its outcome is recorded: see _start.)"""
        if self._budget.release(delivery):
            self._wake.set()  # the claim loop is woken only when a claim is due, not per finished send
        self._freed.set()

    async def shutdown(self, timeout: float | None = None) -> None:
        """Finish in-flight sends (up to the timeout) and hand back claimed, unstarted rows."""
        self._stopping = True
        self._unsubscribe()
        timeout = timeout or self.ctx.settings.server.shutdown_timeout
        with contextlib.suppress(TimeoutError):  # a batch handing deliveries over: they are started first
            await asyncio.wait_for(self._handovers_done.wait(), timeout)
        if self._inflight:
            await asyncio.wait(set(self._inflight), timeout=timeout)
        with contextlib.suppress(Exception):
            await self.release_claimed()

    # --- deliveries handed over by this process's event log consumer (delivery/handoff.py) -----------

    def reserve(self) -> bool:
        """A consumer batch is about to hand deliveries over; False once this worker is stopping."""
        if self._stopping:
            return False
        self._handovers += 1
        self._handovers_done.clear()
        return True

    def room(self, inbox_id: int) -> int:
        """New deliveries of the inbox to start at once: within its budget and the places its line marks
        `sending` ahead of their go-aheads (a line not started yet: its least)."""
        return max(0, min(self._budget.room(inbox_id), self._unmarked_room(inbox_id)))

    def _unmarked_room(self, inbox_id: int) -> int:
        """How many more deliveries of the inbox may be marked `sending` before they join its line (a resendable
        inbox: all it has room for, see budget.RESENDABLE_AHEAD)."""
        if inbox_id in self._budget.resendable:
            return max(0, self._budget.room(inbox_id))
        pacer = self._pacers.get(inbox_id)
        ahead = pacer.unmarked_room() if pacer is not None else ARM_MIN
        return max(0, ahead - self._unjoined[inbox_id])

    def _joined(self, delivery: Any) -> None:
        """The delivery joined its line, or gave up before (idempotent)."""
        if delivery.id in self._unjoined_ids:
            self._unjoined_ids.discard(delivery.id)
            self._unjoined[delivery.inbox_id] -= 1
            if self._unjoined[delivery.inbox_id] <= 0:
                del self._unjoined[delivery.inbox_id]

    def adopt(self, rows: Sequence[Any]) -> None:
        """Start the deliveries a batch marked `sending` for this worker and committed (ends a reserve)."""
        for delivery in rows:
            self._start(delivery)
        self._handovers -= 1
        if not self._handovers:
            self._handovers_done.set()

    async def run_until_idle(self, timeout: float = 30.0) -> int:
        """Burst mode (tests, `scrm worker --burst`): deliver everything due now, then return the count."""
        done = 0
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            await self.recover_stale()
            last_recover = loop.time()
            while True:
                if loop.time() - last_recover > self._recover_every:
                    await self.recover_stale()
                    last_recover = loop.time()
                self._freed.clear()
                if not self._inflight:
                    self._budget.undrain()
                    self._force_claim = True
                claimed, full = await self._fill()
                done += claimed
                if not claimed and not self._inflight:
                    return done
                if not full and self._inflight:
                    await self._freed.wait()

    async def claim(self, limit: int, exclude_inboxes: Sequence[int] = ()) -> Sequence[Any]:
        """Atomically claim up to `limit` due deliveries, oldest first, one per ordering key."""
        return (await self._claim(limit, exclude_inboxes=exclude_inboxes, refresh=True))[0]

    async def _claim(
        self, limit: int, *, budget: ClaimBudget | None = None, refresh: bool = False,
        exclude_inboxes: Sequence[int] = (),
    ) -> tuple[Sequence[Any], bool]:
        """Claim up to `limit` due deliveries, oldest first, one per ordering key; with a budget, only
        for inboxes due a claim and within their room. Also returns whether due rows were left.

        Each inbox's oldest due rows are asked for on their own (one window across all inboxes in id
        order filled up with a slow channel's backlog and left a fast one short); the queue index
        passes over other inboxes' rows without reading them, and rows behind an earlier row of their
        ordering key (still queued, or claimed or sending, by a live or a dead worker) are passed over
        too, so a few stuck contacts never hold up the rest of their inbox. Returns plain rows
        (attribute access like the model), not ORM objects. `refresh` looks up the inboxes again (one
        added since may have work).
        """
        if limit <= 0:
            return [], False
        now = utcnow()
        announced = self._announced
        async with self._transaction("claim") as tx:
            s = tx.session
            if refresh or not self._budget.inboxes:
                self._budget.inboxes = set((await s.scalars(self._sql.inbox_ids)).all())
            if budget is not None:
                wanted = budget.wanted()
            else:
                wanted = dict.fromkeys(self._budget.inboxes.difference(exclude_inboxes), limit)
            wanted = {i: min(room, limit) for i, room in wanted.items() if room > 0}
            rows, complete = await self._windows(s, wanted, now)
            more = len(complete) < len(wanted)
            if self._announced != announced:
                complete = set()  # work announced meanwhile may have been committed after our look: drain nothing
            if not rows:
                if budget is not None:
                    budget.pick([], limit, complete)
                return [], False
            if budget is None:
                ids = sorted(r.id for r in rows)[:limit]
            else:
                # An inbox whose due rows all came back (and fit) is drained: rows stuck behind a row of their
                # contact are not among them, and the inbox is claimed for again when an outcome finds such a
                # row waiting behind its delivery (see _start), which lets the next row of that contact go.
                ids = budget.pick(rows, limit, complete)
            if not ids:
                return [], more
            # The rows that would be at the front of their inbox's line are marked `sending` by the claim
            # itself (as a consumer batch's hand-over does): one commit before their send, not two.
            arm: list[int] = []
            if budget is not None:
                room: dict[int, int] = {}
                inbox_of = {r.id: r.inbox_id for r in rows}
                for i in sorted(ids):
                    inbox = inbox_of[i]
                    left = room[inbox] = room.get(inbox, self._unmarked_room(inbox)) - 1
                    if left >= 0:
                        arm.append(i)
            claimed = list((await s.execute(self._sql.claim, {
                "ids": ids, "arm": arm, "me": self.name,
                "lease": now + timedelta(seconds=self.cfg.lease_seconds)})).all())
        return sorted(claimed, key=lambda d: d.id), more or len(ids) < len(rows)

    async def _windows(self, s: AsyncSession, wanted: dict[int, int], now: datetime) -> tuple[list[Any], set[int]]:
        """The oldest due rows of each wanted inbox (as many as asked), locked; and the inboxes whose
        due rows all came back (fewer than asked)."""
        if not wanted:
            return [], set()
        if self._sql.postgresql:
            rows = list((await s.execute(self._sql.inbox_windows, {
                "inboxes": list(wanted), "limits": list(wanted.values()), "now": now})).all())
        else:
            rows = []
            for inbox_id, n in wanted.items():
                rows += (await s.execute(self._sql.inbox_windows, {"inbox": inbox_id, "n": n, "now": now})).all()
        got = Counter(r.inbox_id for r in rows)
        return rows, {i for i, n in wanted.items() if got[i] < n}

    async def process(self, delivery: Any) -> None:
        """Send one claimed delivery and record the outcome."""
        message = outbound_from_delivery(delivery)
        try:
            adapter = await self._adapter(delivery.inbox_id)
            if adapter is None:
                self._joined(delivery)
                await self._finish(delivery, "unknown", error=PermanentSendError("inbox deleted or disabled"))
                return
            if not await self._wait_in_line(delivery, adapter, message):
                return
        finally:
            self._joined(delivery)
        result: SendResult | None = None
        error: Exception | None = None
        try:  # holding a send slot until the channel answers
            async with asyncio.timeout(self.cfg.send_timeout):
                result = await adapter.send(message)
        except (TransientSendError, PermanentSendError) as exc:
            error = exc
        except TimeoutError:
            error = TransientSendError("channel timed out")
        except Exception as exc:  # noqa: BLE001 - an adapter bug must not kill the worker
            log.exception("adapter %s crashed sending delivery %s", adapter.channel_type, delivery.id)
            error = TransientSendError(f"internal error: {type(exc).__name__}")
        finally:
            self._slots.release(delivery.inbox_id)
            self._release(delivery)
        await self._finish(delivery, adapter.channel_type, result=result, error=error)

    async def _wait_in_line(self, delivery: Any, adapter: ChannelAdapter, message: OutboundMessage) -> bool:
        """Mark the delivery `sending` once it is near the front of its inbox's line (one handed over by a
        consumer batch is marked already), then wait for the rate limiter's go-ahead and a send slot (which
        the caller gives back). False when it was requeued or is no longer ours (holding no slot)."""
        limits = [paced(lim) for lim in adapter.rate_limits(message)]
        if not limits and adapter.capabilities.idempotent_send:
            self._budget.resendable.add(delivery.inbox_id)
        else:
            self._budget.resendable.discard(delivery.inbox_id)
        pacer = self._pacers.get(delivery.inbox_id)
        if pacer is None:
            pacer = self._pacers[delivery.inbox_id] = Pacer(
                self.ctx.limiter, self._slots, delivery.inbox_id, lambda: self._arm_ahead)
        eta = pacer.eta(limits)
        if self._budget.rates.get(delivery.inbox_id) != pacer.rate:
            self._budget.rates[delivery.inbox_id] = pacer.rate  # its budget follows its rate
            self._wake.set()
        if eta > LINE_HORIZON:
            self._joined(delivery)
            await self._requeue(delivery, eta)
            return False
        # Marked by its claim, or handed over by a consumer batch and marked in its transaction.
        marked = delivery.status == "sending"
        place = pacer.join(limits, armed=marked)
        self._joined(delivery)
        try:
            if not marked:
                await place.armable
                if not await self._mark_sending(delivery):
                    return False
                pacer.arm(place)
            while True:
                try:
                    wait = await pacer.go_ahead(place)
                except Exception:  # noqa: BLE001 - e.g. the shared limiter (Redis) is down
                    log.exception("delivery %s: no rate-limit go-ahead; back to the queue", delivery.id)
                    await self._requeue(delivery, 1.0)  # not sent: it must not end as "outcome unknown"
                    return False
                if wait <= 0:
                    return True
                if wait > MAX_INLINE_WAIT or self._stopping:
                    await self._requeue(delivery, wait)
                    return False
                await asyncio.sleep(wait)  # a per-chat limit: the inbox's other recipients go on meanwhile
                place = pacer.join(limits, armed=True)
        finally:
            pacer.leave(place)

    async def _mark_sending(self, delivery: Any) -> bool:
        """Commit `sending` before the channel is called; False when the row is no longer ours to send."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            return await self._writes.submit(delivery.id)  # False: our lease was taken over (too slow)
        except Exception:  # noqa: BLE001 - still "claimed": recovered (never sent) after the lease
            log.exception("could not mark delivery %s as sending", delivery.id)
            return False
        finally:
            # Lines mark ahead twice as long as this commonly takes (see outbox_pacing.ARM_AHEAD_MIN).
            took = 2 * (loop.time() - started)
            self._arm_ahead = min(ARM_AHEAD_MAX, max(ARM_AHEAD_MIN, 0.9 * self._arm_ahead + 0.1 * took))

    async def _adapter(self, inbox_id: int) -> ChannelAdapter | None:
        """The inbox's adapter; concurrent deliveries share one lookup when the pool's cache expired."""
        lookup = self._lookups.get(inbox_id)
        if lookup is None:
            lookup = self._lookups[inbox_id] = asyncio.ensure_future(self.ctx.adapters.get(inbox_id))
            lookup.add_done_callback(lambda _: self._lookups.pop(inbox_id, None))
        return await asyncio.shield(lookup)

    async def _flush_writes(self, items: list[int | Outcome]) -> list[bool]:
        """One transaction for a batch of "mark sending" requests (ids) and outcomes.

        True where the row was still ours (claimed by this worker) and the change applied. A delivery
        never has both in one batch: its outcome is submitted only after its `sending` committed.
        """
        ids = [i for i in items if isinstance(i, int)]
        outcomes = [i for i in items if isinstance(i, Outcome)]
        now = utcnow()
        sending: set[int] = set()
        logged = await logged_outcome_events(self.ctx) if outcomes else frozenset()
        if "write" in self._own:  # PostgreSQL, running: a batch that is one statement commits it alone
            if ids and not outcomes:
                rows = await self._alone(MARK_SENDING_ALONE, ids, self.name,
                                         now + timedelta(seconds=self.cfg.lease_seconds))
                sending = {r[0] for r in rows}
                return [i in sending for i in ids]
            status = None if ids else sent_alone(outcomes, logged)
            if status is not None:
                return await self._sent_alone(outcomes, status, now)
        live: set[str] = set()  # outcome events pushed live only (no work listener wants them)
        async with self._transaction("write", live) as tx:
            if ids:
                rows = await tx.session.execute(self._sql.mark_sending, {
                    "ids": ids, "me": self.name, "lease": now + timedelta(seconds=self.cfg.lease_seconds)})
                sending = set(rows.scalars())
            decided = [(o, *decide(o, now, self.cfg)) for o in outcomes]
            announced = self._announced
            quiet: set[int] = set()
            applied = (await record_outcomes(tx, decided, now, self.name, self._sql.mark_sent, logged, live,
                                             self._sql.waiting, quiet, self._sql.mark_sent_with_messages)
                       if decided else set())
        if self._announced == announced:  # else a row announced meanwhile may wait behind one of these
            self._quiet |= quiet
        for o, status, values, _ in decided:
            if o.delivery.id in applied:
                DELIVERIES.labels(channel=o.channel, status=status).inc()
                if status == "failed":
                    log.warning("delivery %s failed: %s", o.delivery.id, values.get("last_error"))
        return [i in sending if isinstance(i, int) else i.delivery.id in applied for i in items]

    async def _sent_alone(self, outcomes: list[Outcome], status: str, now: datetime) -> list[bool]:
        """A batch of successful sends of plain messages, one status, nothing to log (outcomes.sent_alone):
        recorded with their messages in one statement that commits alone; its events are pushed live."""
        announced = self._announced
        args = sent_alone_args(outcomes, now, self.name, status)
        # Inboxes whose rows waiting behind these the statement takes too (a resendable one with room).
        take = [] if self._stopping else [i for i in self._budget.resendable if self._budget.room(i) > 0]
        taken: dict[int, TakenDelivery] = {}
        if take:
            rows = await self._alone(MARK_SENT_TAKE_NEXT, *args,
                                     now + timedelta(seconds=self.cfg.lease_seconds), take)
            for r in rows:
                if r["id"] is not None and r["id"] not in taken:
                    taken[r["id"]] = TakenDelivery(r)
            # A sent row whose follower was taken leaves none waiting for a claim.
            quiet = {r[0] for r in rows if not r[1] or r["id"] is not None}
        else:
            rows = await self._alone(MARK_SENT_ALONE, *args)
            quiet = {r[0] for r in rows if not r[1]}
        applied = {r[0] for r in rows}
        if self._announced == announced:  # else a row announced meanwhile may wait behind one of these
            self._quiet |= quiet
        for delivery in sorted(taken.values(), key=lambda d: d.id):
            self._start(delivery)
        # Events only: a plain message's successful send touches no other row (apply_outcome).
        tx = Tx(None, self.ctx.adapters)  # type: ignore[arg-type]
        msg_values = {"delivery_status": status, "delivery_error": None, "sent_at": now}
        for o in outcomes:
            if o.delivery.id in applied:
                await apply_outcome(tx, o, status, msg_values)
                DELIVERIES.labels(channel=o.channel, status=status).inc()
        if tx.events:
            await self.ctx.bus.publish(tx.events, wake=False)  # live pushes only: nothing was logged
        return [o.delivery.id in applied for o in outcomes]

    async def _alone(self, sql: str, *args: Any) -> list[Any]:
        """Run one statement on the worker's own write connection outside a transaction (PostgreSQL
        commits it by itself: no BEGIN and COMMIT round trips). A connection that failed is dropped."""
        conn = self._own["write"]
        if conn is None or conn.closed:
            conn = self._own["write"] = await self.ctx.db.engine.connect()
        try:
            raw = await conn.get_raw_connection()
            return list(await raw.driver_connection.fetch(sql, *args))  # type: ignore[union-attr]
        except BaseException:
            self._own["write"] = None
            with contextlib.suppress(Exception):
                await conn.invalidate()
            with contextlib.suppress(Exception):
                await conn.close()
            raise

    async def _requeue(self, delivery: Any, wait: float) -> None:
        await requeue(self.ctx, delivery, self.name, wait)

    async def _finish(
        self, delivery: Any, channel: str, *, result: SendResult | None = None, error: Exception | None = None
    ) -> None:
        """Record the outcome (group-committed with other deliveries finishing at the same time)."""
        try:
            # Not urgent: no send waits for it, so it rides along with the next "mark sending".
            await self._writes.submit(Outcome(delivery, channel, result, error), urgent=False)
        except Exception:  # noqa: BLE001 - the row stays "sending": recovered after its lease
            log.exception("could not record the outcome of delivery %s", delivery.id)

    async def release_claimed(self) -> int:
        """Give back rows this worker claimed but never started sending (graceful shutdown)."""
        return await release_claimed(self.ctx, self.name)

    async def recover_stale(self, dead: set[str] | frozenset[str] = frozenset()) -> int:
        """Recover deliveries of stopped workers (delivery/recovery.py)."""
        return await recover_stale(self.ctx, dead)


class TakenDelivery:
    """A row taken by MARK_SENT_TAKE_NEXT (an asyncpg record): attribute access like a claim's rows."""

    id: int
    inbox_id: int
    status: str

    def __init__(self, record: Any) -> None:
        for column in D.c.keys():
            setattr(self, column, record[column])


def _freeze_startup_objects() -> None:
    """Keep what the process holds before its first worker runs (modules, settings, pools: most of its
    objects) out of the garbage collector's full passes, once per process.

    A full pass walked them all and stalled the event loop 120-140 ms, twice in 8 s of a broadcast:
    the sends held back left in a burst, and the time was lost to the rate.
    """
    global _FROZEN
    if not _FROZEN:
        _FROZEN = True
        gc.freeze()


_FROZEN = False


