"""The outbox worker: claim delivery rows, respect channel rate limits, send, record the outcome.

A delivery moves queued -> claimed -> sending -> sent | failed (or back to queued for a retry).
`claimed` rows were never handed to a channel, so after a crash they are simply queued again.
`sending` rows may or may not have reached the channel: they are sent again only where the channel
deduplicates by our idempotency key; elsewhere they fail as "outcome unknown" for an agent to
decide, so nobody gets a message twice. PostgreSQL claims with FOR UPDATE SKIP LOCKED; SQLite
serializes writers, which makes the same UPDATE ... RETURNING safe.

Throughput: the state changes are group-committed. Every delivery is still marked `sending` (and
committed) before its channel is called, but the deliveries that got their rate-limit slot while a
commit was running share the next one; outcomes likewise. Deliveries of one inbox take their
rate-limit turn one at a time (a FIFO gate), so a thousand waiting rows do not all poll the limiter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from sqlalchemy import and_, case, func, select, update

from channels.base import ChannelAdapter, RateLimit
from channels.registry import get_adapter_class
from scrm import events as ev
from scrm.db.models import ContactIdentity, Delivery, Inbox, Message, utcnow
from scrm.domain import OutboundMessage, PermanentSendError, SendResult, TransientSendError
from scrm.metrics import DELIVERIES, OUTBOX_DEPTH
from scrm.services.outbox import outbound_from_delivery
from scrm.services.uow import Tx, unit_of_work

if TYPE_CHECKING:
    from scrm.context import AppContext

log = logging.getLogger("scrm.worker")

ACTIVE = ("queued", "claimed", "sending")
UNKNOWN_OUTCOME = "outcome unknown: the worker stopped while sending; not resent to avoid a duplicate"
MAX_INLINE_WAIT = 5.0  # rate-limit waits longer than this go back to the queue
# Pace at 92% of a platform's limit. The platform counts arrivals by its own clock: the catch-up
# tolerance below, the group commit between our slot and the send, and network jitter can squeeze
# up to ~1.08 s of our slots into one of its seconds, and the margin keeps that under the limit
# (measured: 96% let a loaded machine exceed a 150/s limit by 4%).
RATE_HEADROOM = 0.92
RATE_TOLERANCE = 0.02  # seconds of catch-up after a late wake-up (GCRA burst tolerance)
# A delivery that would wait longer than this in its inbox's line goes back to the queue (due when its
# turn would come), and an inbox with half that much waiting is not claimed for: a slow channel's
# backlog must not fill the slots a fast one could use.
LINE_HORIZON = 1.0
D = Delivery.__table__
T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    """Coalesce concurrent requests into one database transaction.

    The first request starts a flush at once; requests arriving while it runs wait for the next one,
    so batches grow with load and an idle worker adds no delay. A failed flush is retried twice (the
    statements are guarded by status and owner, so a retry never applies anything twice), then every
    caller in the batch gets the error.
    """

    RETRIES = 2

    def __init__(self, flush: Callable[[list[T]], Awaitable[list[R]]], max_batch: int = 500) -> None:
        self._flush = flush
        self._max_batch = max_batch
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        return await future

    async def _run(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch:]
            items = [item for item, _ in batch]
            for attempt in range(self.RETRIES + 1):
                try:
                    results = await self._flush(items)
                except Exception as exc:  # noqa: BLE001 - handed to the callers
                    if attempt < self.RETRIES:
                        log.warning("outbox commit of %d rows failed (%s); retrying", len(items), exc)
                        await asyncio.sleep(0.2 * 2**attempt)
                        continue
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                else:
                    for (_, future), result in zip(batch, results, strict=True):
                        if not future.done():
                            future.set_result(result)
                break


@dataclass(frozen=True)
class _Outcome:
    delivery: Any  # a claimed deliveries row
    channel: str
    result: SendResult | None
    error: Exception | None


class _Pacer:
    """Hands out one inbox's rate-limit slots in arrival order.

    One task asks the limiter for the deliveries waiting in line, back to back while slots are
    free, so neither a crowd of waiting deliveries polls the limiter nor a slot waits for a waiting
    task to be scheduled. A wait longer than the channel's own interval comes from a narrower limit
    (one chat): that delivery is handed the wait to sleep on its own, and the line moves on.
    """

    def __init__(self, limiter: Any) -> None:
        self.limiter = limiter
        self._line: deque[tuple[Sequence[RateLimit], asyncio.Future[float]]] = deque()
        self._task: asyncio.Task[None] | None = None
        self.interval = 0.0  # seconds between two sends of this inbox (its narrowest shared limit)
        self._next_send = 0.0

    def eta(self, limits: Sequence[RateLimit]) -> float:
        """Seconds a delivery joining the line now would wait for its turn."""
        self.interval = min((lim.per / lim.rate for lim in limits), default=0.0)
        return len(self._line) * self.interval

    def backlog(self) -> float:
        return len(self._line) * self.interval

    async def spaced(self) -> None:
        """Keep this worker's actual sends of the inbox at least a platform interval apart.

        Slots are granted smoothly, but a commit or a stalled event loop can release several at
        once; spreading them again here keeps every one-second window under the platform's limit.
        """
        gap = self.interval * RATE_HEADROOM / 0.99  # the platform's own interval, less 1%
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            if now >= self._next_send:
                self._next_send = now + gap
                return
            await asyncio.sleep(self._next_send - now)

    async def turn(self, limits: Sequence[RateLimit]) -> float:
        """0 once a slot was consumed for this delivery, else the seconds it should wait first."""
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._line.append((limits, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        return await future

    async def _run(self) -> None:
        while self._line:
            limits, future = self._line[0]
            if future.done():  # the delivery was cancelled
                self._line.popleft()
                continue
            hold = min((lim.per / lim.rate for lim in limits), default=0.0) * 1.05
            try:
                wait = await self.limiter.acquire(limits, RATE_TOLERANCE)
            except Exception as exc:  # noqa: BLE001 - e.g. Redis down: this delivery fails its turn
                self._line.popleft()
                if not future.done():
                    future.set_exception(exc)
                continue
            if wait <= 0 or wait > hold:
                self._line.popleft()
                if not future.done():
                    future.set_result(max(wait, 0.0))
                continue
            await asyncio.sleep(wait)


class OutboxWorker:
    """Delivers the outbox. Several may run in several processes."""

    def __init__(self, ctx: AppContext, name: str | None = None) -> None:
        self.ctx = ctx
        self.cfg = ctx.settings.worker
        self.name = name or f"worker:{ctx.process_id}"
        self._wake = asyncio.Event()
        self._freed = asyncio.Event()  # a delivery finished: room to claim, or a new head of its ordering key
        self._inflight: set[asyncio.Task[None]] = set()
        # Deliveries between claim and the end of their send count against `concurrency` (per inbox too);
        # recording the outcome afterwards is group-committed and does not hold a slot.
        self._holding: set[int] = set()
        self._held: Counter[int] = Counter()
        self._pacers: dict[int, _Pacer] = {}
        self._lookups: dict[int, asyncio.Future[ChannelAdapter | None]] = {}
        self._sending: GroupCommit[int, bool] = GroupCommit(self._flush_sending)
        self._outcomes: GroupCommit[_Outcome, bool] = GroupCommit(self._flush_outcomes)
        self._min_claim = max(1, min(self.cfg.batch_size, self.cfg.concurrency // 4))
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
                waiters = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
                if self._inflight:
                    waiters.append(asyncio.ensure_future(self._freed.wait()))
                _, pending = await asyncio.wait(waiters, timeout=self.cfg.poll_interval, return_when="FIRST_COMPLETED")
                for w in pending:
                    w.cancel()
        finally:
            await self.shutdown()

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
        window = (
            select(D.c.id, D.c.ordering_key)
            .where(D.c.status == "queued", D.c.next_attempt_at <= now)
            .order_by(D.c.id)
            .limit(limit * 4)
            .with_for_update(skip_locked=True)
        )
        if exclude_inboxes:
            window = window.where(D.c.inbox_id.not_in(list(exclude_inboxes)))
        async with self.ctx.db.transaction() as s:
            rows = (await s.execute(window)).all()
            if not rows:
                return []
            keys = {r.ordering_key for r in rows}
            heads = dict(
                (await s.execute(
                    select(D.c.ordering_key, func.min(D.c.id))
                    .where(D.c.ordering_key.in_(keys), D.c.status.in_(ACTIVE))
                    .group_by(D.c.ordering_key)
                )).all()
            )
            ids = [r.id for r in rows if heads.get(r.ordering_key) == r.id][:limit]
            if not ids:
                return []
            stmt = (
                update(D)
                .where(D.c.id.in_(ids), D.c.status == "queued")
                .values(
                    status="claimed",
                    claimed_by=self.name,
                    lease_until=now + timedelta(seconds=self.cfg.lease_seconds),
                    attempts=D.c.attempts + 1,
                )
                .returning(*D.c)
            )
            claimed = list((await s.execute(stmt)).all())
        return sorted(claimed, key=lambda d: d.id)

    async def process(self, delivery: Any) -> None:
        """Send one claimed delivery and record the outcome."""
        message = outbound_from_delivery(delivery)
        adapter = await self._pace(delivery, message)
        if adapter is None:
            return
        try:
            if not await self._sending.submit(delivery.id):
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
        limits = [RateLimit(lim.key, lim.rate * RATE_HEADROOM, lim.per) for lim in adapter.rate_limits(message)]
        pacer = self._pacers.get(delivery.inbox_id)
        if pacer is None:
            pacer = self._pacers[delivery.inbox_id] = _Pacer(self.ctx.limiter)
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

    async def _flush_sending(self, ids: list[int]) -> list[bool]:
        """Mark claimed deliveries `sending` in one statement; False for rows no longer ours."""
        async with self.ctx.db.transaction() as s:
            rows = await s.execute(
                update(D)
                .where(D.c.id.in_(ids), D.c.status == "claimed", D.c.claimed_by == self.name)
                .values(status="sending", lease_until=utcnow() + timedelta(seconds=self.cfg.lease_seconds))
                .returning(D.c.id)
            )
            ours = set(rows.scalars())
        return [i in ours for i in ids]

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
            await self._outcomes.submit(_Outcome(delivery, channel, result, error))
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

    async def _flush_outcomes(self, outcomes: list[_Outcome]) -> list[bool]:
        """Record a batch of outcomes in one transaction, guarded by our claim.

        Successful sends (nearly all of them) take one UPDATE per status; retries and failures one
        each. A row recovered by another worker meanwhile is left alone: it owns the outcome now.
        """
        now = utcnow()
        decided = [(o, *self._decide(o, now)) for o in outcomes]
        ours = and_(D.c.claimed_by == self.name, D.c.status.in_(("claimed", "sending")))
        applied: set[int] = set()
        async with unit_of_work(self.ctx) as tx:
            s = tx.session
            for status in ("sent", "delivered"):
                group = [o for o, st, _, _ in decided if st == status]
                if not group:
                    continue
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
        for o, status, values, _ in decided:
            if o.delivery.id in applied:
                DELIVERIES.labels(channel=o.channel, status=status).inc()
                if status == "failed":
                    log.warning("delivery %s failed: %s", o.delivery.id, values.get("last_error"))
        return [o.delivery.id in applied for o in outcomes]

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
