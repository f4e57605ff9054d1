"""The outbox worker: claim delivery rows, respect channel rate limits, send, record the outcome.

A delivery moves queued -> claimed -> sending -> sent | failed (or back to queued for a retry).
`claimed` rows were never handed to a channel, so after a crash they are simply queued again.
`sending` rows may or may not have reached the channel: they are sent again only where the channel
deduplicates by our idempotency key; elsewhere they fail as "outcome unknown" for an agent to
decide, so nobody gets a message twice. PostgreSQL claims with FOR UPDATE SKIP LOCKED; SQLite
serializes writers, which makes the same UPDATE ... RETURNING safe.

Throughput: the state changes are group-committed. Every delivery is still marked `sending` (and
committed) before its channel is called, but the deliveries that got their rate-limit slot while a
commit was running share the next one, and outcomes (which no send waits for) ride along in it
(or go 50 ms later when nothing is being sent): about one commit per batch instead of two per
delivery. The hot statements are built once per worker with array parameters (PostgreSQL
`= ANY(:ids)`, unnest), so neither SQLAlchemy's statement building nor its per-call IN-list
rendering runs per delivery, and on PostgreSQL a running worker keeps its own two connections
(claims, writes) instead of a pool checkout with a liveness ping per transaction. Deliveries of
one inbox take their rate-limit turn one at a time (a FIFO gate), so a thousand waiting rows do not
all poll the limiter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, case, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from channels.base import ChannelAdapter
from channels.registry import get_adapter_class
from scrm import events as ev
from scrm.db.models import ContactIdentity, Delivery, Inbox, Message, utcnow
from scrm.domain import OutboundMessage, PermanentSendError, SendResult, TransientSendError
from scrm.metrics import DELIVERIES, OUTBOX_DEPTH
from scrm.services.outbox import outbound_from_delivery
from scrm.services.outbox_batching import ACTIVE, GroupCommit, OutboxStatements
from scrm.services.outbox_pacing import Pacer, paced
from scrm.services.uow import Tx, unit_of_work

if TYPE_CHECKING:
    from scrm.context import AppContext

log = logging.getLogger("scrm.worker")

UNKNOWN_OUTCOME = "outcome unknown: the worker stopped while sending; not resent to avoid a duplicate"
MAX_INLINE_WAIT = 5.0  # rate-limit waits longer than this go back to the queue
# A delivery that would wait longer than this in its inbox's line goes back to the queue (due when its
# turn would come), and an inbox with half that much waiting is not claimed for: a slow channel's
# backlog must not fill the slots a fast one could use.
LINE_HORIZON = 1.0
D = Delivery.__table__


@dataclass(frozen=True)
class _Outcome:
    delivery: Any  # a claimed deliveries row
    channel: str
    result: SendResult | None
    error: Exception | None


class OutboxWorker:
    """Delivers the outbox. Several may run in several processes."""

    def __init__(self, ctx: AppContext, name: str | None = None) -> None:
        self.ctx = ctx
        self.cfg = ctx.settings.worker
        self.name = name or f"worker:{ctx.process_id}"
        self._wake = asyncio.Event()  # look again: new work, stop, or room for a claim batch
        self._freed = asyncio.Event()  # a delivery finished: room to claim, or a new head of its ordering key
        self._inflight: set[asyncio.Task[None]] = set()
        # Deliveries between claim and the end of their send count against `concurrency` (per inbox too);
        # recording the outcome afterwards is group-committed and does not hold a slot.
        self._holding: set[int] = set()
        self._held: Counter[int] = Counter()
        self._pacers: dict[int, Pacer] = {}
        self._lookups: dict[int, asyncio.Future[ChannelAdapter | None]] = {}
        # One queue for both writes of a delivery: "mark sending" (an id) and "record the outcome".
        self._writes: GroupCommit[int | _Outcome, bool] = GroupCommit(self._flush_writes)
        self._sql = OutboxStatements(ctx.db.dialect == "postgresql")
        self._own: dict[str, AsyncConnection | None] = {}  # connections held by `run` (PostgreSQL)
        self._min_claim = max(1, min(self.cfg.batch_size, self.cfg.concurrency // 8))
        self._recover_every = min(self.cfg.lease_seconds / 2, 15)
        self._unsubscribe = ctx.bus.subscribe(self._on_enqueued, ev.OUTBOX_ENQUEUED, everywhere=True)
        self._stopping = False

    async def _on_enqueued(self, _event: ev.Event) -> None:
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until `stop` is set, then release what was claimed but not started."""
        log.info("outbox worker %s started", self.name)
        last_recover = float("-inf")
        loop = asyncio.get_running_loop()
        if self._sql.postgresql:
            self._own = {"claim": None, "write": None}
        stopping = asyncio.ensure_future(stop.wait())
        stopping.add_done_callback(lambda _: self._wake.set())
        try:
            while not stop.is_set():
                if loop.time() - last_recover > self._recover_every:
                    await self._guard(self.recover_stale())
                    last_recover = loop.time()
                # Cleared before looking, so a wake-up that arrives meanwhile is not lost.
                self._wake.clear()
                self._freed.clear()
                filled = await self._guard(self._fill())
                if filled and filled[1]:
                    await asyncio.sleep(0)
                    continue
                # One event (new work, stop, or room for a claim batch) and a deadline, not three waiter
                # tasks per turn: this loop turns for every batch of finished deliveries.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.cfg.poll_interval):
                        await self._wake.wait()
        finally:
            stopping.cancel()
            try:
                await self.shutdown()
            finally:
                await self._close_own()

    @contextlib.asynccontextmanager
    async def _transaction(self, role: str) -> AsyncIterator[Tx]:
        """A unit of work for the hot path ("claim" or "write"), events published after commit.

        While `run` goes on PostgreSQL, each role keeps one connection of its own: checking one
        out of the pool per transaction (with its liveness ping) cost as much CPU as the statements.
        A connection that failed is dropped and the next transaction opens a new one.
        """
        if role not in self._own:  # SQLite (its write lock lives in Database.transaction), or not running
            async with unit_of_work(self.ctx) as tx:
                yield tx
            return
        conn = self._own[role]
        if conn is None or conn.closed:
            conn = self._own[role] = await self.ctx.db.engine.connect()
        try:
            async with conn.begin():
                # The session joins the connection's transaction; ORM changes are flushed before commit.
                session = AsyncSession(bind=conn, expire_on_commit=False)
                try:
                    tx = Tx(session)
                    yield tx
                    await session.flush()
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
            await self.ctx.bus.publish(tx.events)

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
        """Claim what there is room for; returns (claimed, whether a full batch came back)."""
        want = min(self.cfg.concurrency - len(self._holding), self.cfg.batch_size)
        if want <= 0 or (want < self._min_claim and self._holding):
            return 0, False  # claim in batches, not one row per finished send
        claimed = await self.claim(want, exclude_inboxes=self._saturated())
        for delivery in claimed:
            self._start(delivery)
        return len(claimed), len(claimed) == want

    def _saturated(self) -> list[int]:
        """Inboxes not to claim for now: a long line for their rate limit, or their fair share held.

        Without this a slow channel's backlog fills every slot and starves the fast ones
        (claims come in id order, and the slow channel's rows leave last).
        """
        slow = {inbox_id for inbox_id, pacer in self._pacers.items() if pacer.backlog() >= LINE_HORIZON / 2}
        busy = [inbox_id for inbox_id, n in self._held.items() if n > 0]
        if len(busy) >= 2:
            share = -(-self.cfg.concurrency // len(busy))
            slow.update(inbox_id for inbox_id in busy if self._held[inbox_id] >= share)
        return sorted(slow)

    def _start(self, delivery: Any) -> None:
        task = asyncio.create_task(self.process(delivery))
        self._inflight.add(task)
        self._holding.add(delivery.id)
        self._held[delivery.inbox_id] += 1

        def done(t: asyncio.Task[None]) -> None:
            self._inflight.discard(t)
            self._release(delivery)
            self._freed.set()
            # Its outcome is recorded now: the next delivery of its ordering key may be claimed.
            if self._claim_fits():
                self._wake.set()
            if not t.cancelled() and t.exception() is not None:
                log.error("delivery %s: worker step failed; it is recovered after its lease", delivery.id,
                          exc_info=t.exception())

        task.add_done_callback(done)

    def _release(self, delivery: Any) -> None:
        if delivery.id in self._holding:
            self._holding.discard(delivery.id)
            self._held[delivery.inbox_id] -= 1
            if self._held[delivery.inbox_id] <= 0:
                del self._held[delivery.inbox_id]
            self._freed.set()
            if self._claim_fits():
                self._wake.set()

    def _claim_fits(self) -> bool:
        """Whether `_fill` would claim now: the claim loop is woken only then, not per finished send."""
        return not self._holding or self.cfg.concurrency - len(self._holding) >= self._min_claim

    async def shutdown(self, timeout: float | None = None) -> None:
        """Finish in-flight sends (up to the timeout) and hand back claimed, unstarted rows."""
        self._stopping = True
        self._unsubscribe()
        if self._inflight:
            await asyncio.wait(set(self._inflight), timeout=timeout or self.ctx.settings.server.shutdown_timeout)
        with contextlib.suppress(Exception):
            await self.release_claimed()

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
                claimed, full = await self._fill()
                done += claimed
                if not claimed and not self._inflight:
                    return done
                if not full and self._inflight:
                    await self._freed.wait()

    async def claim(self, limit: int, exclude_inboxes: Sequence[int] = ()) -> Sequence[Any]:
        """Atomically claim up to `limit` due deliveries, oldest first, one per ordering key.

        Two indexed steps instead of one NOT EXISTS per row (which degrades with the backlog):
        lock a window of queued rows, then keep only the head of each ordering key. Returns plain
        rows (attribute access like the model), not ORM objects: this runs for every delivery.
        """
        if limit <= 0:
            return []
        now = utcnow()
        window = self._sql.window_excluding if exclude_inboxes else self._sql.window
        async with self._transaction("claim") as tx:
            s = tx.session
            rows = (await s.execute(window, {"now": now, "n": limit * 4, "excluded": list(exclude_inboxes)})).all()
            if not rows:
                return []
            heads = dict((await s.execute(self._sql.heads, {"keys": list({r.ordering_key for r in rows})})).all())
            ids = [r.id for r in rows if heads.get(r.ordering_key) == r.id][:limit]
            if not ids:
                return []
            claimed = list((await s.execute(self._sql.claim, {
                "ids": ids, "me": self.name, "lease": now + timedelta(seconds=self.cfg.lease_seconds)})).all())
        return sorted(claimed, key=lambda d: d.id)

    async def process(self, delivery: Any) -> None:
        """Send one claimed delivery and record the outcome."""
        message = outbound_from_delivery(delivery)
        adapter = await self._pace(delivery, message)
        if adapter is None:
            return
        try:
            if not await self._writes.submit(delivery.id):
                return  # our lease was taken over (we were too slow): someone else owns it now
        except Exception:  # noqa: BLE001 - still "claimed": recovered (never sent) after the lease
            log.exception("could not mark delivery %s as sending", delivery.id)
            return
        await self._pacers[delivery.inbox_id].spaced()
        try:
            async with asyncio.timeout(self.cfg.send_timeout):
                result = await adapter.send(message)
            self._release(delivery)
        except (TransientSendError, PermanentSendError) as exc:
            await self._finish(delivery, adapter.channel_type, error=exc)
        except TimeoutError:
            await self._finish(delivery, adapter.channel_type, error=TransientSendError("channel timed out"))
        except Exception as exc:  # noqa: BLE001 - an adapter bug must not kill the worker
            log.exception("adapter %s crashed sending delivery %s", adapter.channel_type, delivery.id)
            await self._finish(delivery, adapter.channel_type,
                               error=TransientSendError(f"internal error: {type(exc).__name__}"))
        else:
            await self._finish(delivery, adapter.channel_type, result=result)

    async def _pace(self, delivery: Any, message: OutboundMessage) -> ChannelAdapter | None:
        """Wait for the delivery's rate-limit slot; None when it was finished or requeued instead."""
        adapter = await self._adapter(delivery.inbox_id)
        if adapter is None:
            await self._finish(delivery, "unknown", error=PermanentSendError("inbox deleted or disabled"))
            return None
        limits = [paced(lim) for lim in adapter.rate_limits(message)]
        pacer = self._pacers.get(delivery.inbox_id)
        if pacer is None:
            pacer = self._pacers[delivery.inbox_id] = Pacer(self.ctx.limiter)
        eta = pacer.eta(limits)
        if eta > LINE_HORIZON:
            await self._requeue(delivery, eta)
            return None
        while True:
            wait = await pacer.turn(limits)
            if wait <= 0:
                return adapter
            if wait > MAX_INLINE_WAIT or self._stopping:
                await self._requeue(delivery, wait)
                return None
            await asyncio.sleep(wait)  # a per-chat limit: the inbox's other recipients go on meanwhile

    async def _adapter(self, inbox_id: int) -> ChannelAdapter | None:
        """The inbox's adapter; concurrent deliveries share one lookup when the pool's cache expired."""
        lookup = self._lookups.get(inbox_id)
        if lookup is None:
            lookup = self._lookups[inbox_id] = asyncio.ensure_future(self.ctx.adapters.get(inbox_id))
            lookup.add_done_callback(lambda _: self._lookups.pop(inbox_id, None))
        return await asyncio.shield(lookup)

    async def _flush_writes(self, items: list[int | _Outcome]) -> list[bool]:
        """One transaction for a batch of "mark sending" requests (ids) and outcomes.

        True where the row was still ours (claimed by this worker) and the change applied. A delivery
        never has both in one batch: its outcome is submitted only after its `sending` committed.
        """
        ids = [i for i in items if isinstance(i, int)]
        outcomes = [i for i in items if isinstance(i, _Outcome)]
        now = utcnow()
        sending: set[int] = set()
        async with self._transaction("write") as tx:
            if ids:
                rows = await tx.session.execute(self._sql.mark_sending, {
                    "ids": ids, "me": self.name, "lease": now + timedelta(seconds=self.cfg.lease_seconds)})
                sending = set(rows.scalars())
            decided = [(o, *self._decide(o, now)) for o in outcomes]
            applied = await self._record_outcomes(tx, decided, now) if decided else set()
        for o, status, values, _ in decided:
            if o.delivery.id in applied:
                DELIVERIES.labels(channel=o.channel, status=status).inc()
                if status == "failed":
                    log.warning("delivery %s failed: %s", o.delivery.id, values.get("last_error"))
        return [i in sending if isinstance(i, int) else i.delivery.id in applied for i in items]

    async def _requeue(self, delivery: Any, wait: float) -> None:
        async with self.ctx.db.transaction() as s:
            await s.execute(
                update(D)
                .where(D.c.id == delivery.id, D.c.status == "claimed", D.c.claimed_by == self.name)
                .values(
                    status="queued",
                    claimed_by=None,
                    lease_until=None,
                    attempts=D.c.attempts - 1,
                    next_attempt_at=utcnow() + timedelta(seconds=wait),
                )
            )

    def _backoff(self, attempts: int) -> float:
        delay = min(self.cfg.backoff_max, self.cfg.backoff_base ** max(attempts, 1))
        return delay * random.uniform(0.8, 1.2)

    async def _finish(
        self, delivery: Any, channel: str, *, result: SendResult | None = None, error: Exception | None = None
    ) -> None:
        """Record the outcome (group-committed with other deliveries finishing at the same time)."""
        try:
            # Not urgent: no send waits for it, so it rides along with the next "mark sending".
            await self._writes.submit(_Outcome(delivery, channel, result, error), urgent=False)
        except Exception:  # noqa: BLE001 - the row stays "sending": recovered after its lease
            log.exception("could not record the outcome of delivery %s", delivery.id)

    def _decide(self, o: _Outcome, now: datetime) -> tuple[str, dict[str, Any], dict[str, Any]]:
        """(status, delivery values, message values) for one outcome."""
        values: dict[str, Any] = {"lease_until": None}
        error = o.error
        if o.result is not None:
            status = "delivered" if o.result.delivered else "sent"
            values |= {"status": status, "external_id": o.result.external_id, "sent_at": now, "last_error": None}
            return status, values, {"delivery_status": status, "delivery_error": None, "sent_at": now}
        if isinstance(error, TransientSendError) and o.delivery.attempts < self.cfg.max_attempts:
            delay = error.retry_after if error.retry_after is not None else self._backoff(o.delivery.attempts)
            reason = f"{error.reason} (retrying)"
            values |= {"status": "queued", "claimed_by": None, "next_attempt_at": now + timedelta(seconds=delay),
                       "last_error": reason, "error_code": error.code}
            return "queued", values, {"delivery_error": reason}
        assert error is not None
        reason = getattr(error, "reason", str(error))
        values |= {"status": "failed", "last_error": reason, "error_code": getattr(error, "code", None)}
        return "failed", values, {"delivery_status": "failed", "delivery_error": reason}

    async def _record_outcomes(
        self, tx: Tx, decided: list[tuple[_Outcome, str, dict[str, Any], dict[str, Any]]], now: datetime
    ) -> set[int]:
        """Record a batch of outcomes, guarded by our claim; returns the ids it applied to.

        Successful sends (nearly all of them) take one UPDATE per status; retries and failures one
        each. A row recovered by another worker meanwhile is left alone: it owns the outcome now.
        """
        ours = and_(D.c.claimed_by == self.name, D.c.status.in_(("claimed", "sending")))
        applied: set[int] = set()
        s = tx.session
        for status in ("sent", "delivered"):
            group = [o for o, st, _, _ in decided if st == status]
            if not group:
                continue
            if self._sql.mark_sent is not None:
                rows = await s.execute(self._sql.mark_sent, {
                    "ids": [o.delivery.id for o in group], "me": self.name, "new_status": status, "now": now,
                    "exts": [o.result.external_id if o.result else None for o in group]})
            else:
                external = {o.delivery.id: o.result.external_id for o in group if o.result and o.result.external_id}
                rows = await s.execute(
                    update(D)
                    .where(D.c.id.in_([o.delivery.id for o in group]), ours)
                    .values(status=status, sent_at=now, last_error=None, lease_until=None,
                            external_id=case(external, value=D.c.id, else_=None) if external else None)
                    .returning(D.c.id)
                )
            applied.update(rows.scalars())
        for o, status, values, _ in decided:
            if status in ("sent", "delivered"):
                continue
            res = await s.execute(update(D).where(D.c.id == o.delivery.id, ours).values(**values))
            if res.rowcount == 1:  # type: ignore[attr-defined]
                applied.add(o.delivery.id)
        for o, status, _, msg_values in decided:
            if o.delivery.id in applied:
                await self._apply_outcome(tx, o, status, msg_values)
        return applied

    async def _apply_outcome(self, tx: Tx, o: _Outcome, status: str, msg_values: dict[str, Any]) -> None:
        """The outcome's side effects: the conversation message's status, an unreachable identity, events."""
        s, d = tx.session, o.delivery
        if d.message_id is not None:
            await s.execute(update(Message).where(Message.id == d.message_id).values(**msg_values))
            ext = o.result.external_id if o.result is not None else None
            if ext and not await _external_id_taken(s, d.inbox_id, ext):
                await s.execute(update(Message).where(Message.id == d.message_id).values(external_id=ext))
            tx.emit(ev.MESSAGE_UPDATED, message_id=d.message_id, conversation_id=d.conversation_id,
                    delivery_status=msg_values.get("delivery_status"))
        error = o.error
        if isinstance(error, PermanentSendError) and error.contact_unreachable and d.identity_id:
            identity = await s.get(ContactIdentity, d.identity_id)
            if identity is not None:
                identity.reachable = False
                identity.unreachable_reason = error.reason
                tx.emit(ev.CONTACT_UPDATED, contact_id=identity.contact_id, identity_id=identity.id)
        tx.emit(ev.DELIVERY_UPDATED, delivery_id=d.id, status=status, conversation_id=d.conversation_id, kind=d.kind)

    async def release_claimed(self) -> int:
        """Give back rows this worker claimed but never started sending (graceful shutdown)."""
        async with self.ctx.db.transaction() as s:
            res = await s.execute(
                update(D)
                .where(D.c.status == "claimed", D.c.claimed_by == self.name)
                .values(status="queued", claimed_by=None, lease_until=None, attempts=D.c.attempts - 1)
            )
            return int(res.rowcount or 0)  # type: ignore[attr-defined]

    async def recover_stale(self) -> int:
        """Recover deliveries whose worker died: claimed -> queued; sending -> resend or fail."""
        now = utcnow()
        recovered = 0
        async with unit_of_work(self.ctx) as tx:
            s = tx.session
            res = await s.execute(
                update(Delivery)
                .where(Delivery.status == "claimed", Delivery.lease_until < now)
                .values(status="queued", claimed_by=None, lease_until=None)
            )
            recovered += int(res.rowcount or 0)  # type: ignore[attr-defined]
            stale = (
                await s.execute(
                    select(Delivery, Inbox.channel_type)
                    .join(Inbox, Inbox.id == Delivery.inbox_id)
                    .where(Delivery.status == "sending", Delivery.lease_until < now)
                    .with_for_update(skip_locked=True, of=Delivery)
                )
            ).all()
            for d, channel_type in stale:
                recovered += 1
                if _idempotent(channel_type):
                    d.status, d.claimed_by, d.lease_until = "queued", None, None
                    continue
                d.status, d.lease_until, d.last_error, d.error_code = "failed", None, UNKNOWN_OUTCOME, "unknown_outcome"
                if d.message_id:
                    await s.execute(
                        update(Message)
                        .where(Message.id == d.message_id)
                        .values(delivery_status="failed", delivery_error=UNKNOWN_OUTCOME)
                    )
                    tx.emit(ev.MESSAGE_UPDATED, message_id=d.message_id, conversation_id=d.conversation_id)
            if recovered:
                log.warning("recovered %d deliveries left by a stopped worker", recovered)
        return recovered


async def update_outbox_depth(ctx: AppContext) -> None:
    """Refresh the outbox depth gauge (called when /metrics is scraped)."""
    async with ctx.db.session() as s:
        rows = await s.execute(
            select(Delivery.status, func.count()).where(Delivery.status.in_(ACTIVE)).group_by(Delivery.status)
        )
        counts = {status: n for status, n in rows}
    for status in ACTIVE:
        OUTBOX_DEPTH.labels(status=status).set(counts.get(status, 0))


def _idempotent(channel_type: str) -> bool:
    try:
        return get_adapter_class(channel_type).capabilities.idempotent_send
    except KeyError:
        return False


async def _external_id_taken(session, inbox_id: int, external_id: str) -> bool:  # type: ignore[no-untyped-def]
    found = await session.scalar(
        select(Message.id).where(and_(Message.inbox_id == inbox_id, Message.external_id == external_id))
    )
    return found is not None
