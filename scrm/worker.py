"""The outbox worker: claim delivery rows, respect channel rate limits, send, record the outcome.

A delivery moves queued -> claimed -> sending -> sent | failed (or back to queued for a retry).
`claimed` rows were never handed to a channel, so after a crash they are simply queued again.
`sending` rows may or may not have reached the channel: they are sent again only where the channel
deduplicates by our idempotency key; elsewhere they fail as "outcome unknown" for an agent to
decide, so nobody gets a message twice. PostgreSQL claims with FOR UPDATE SKIP LOCKED; SQLite
serializes writers, which makes the same UPDATE ... RETURNING safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy import and_, func, select, update

from channels.registry import get_adapter_class
from scrm import events as ev
from scrm.db.models import ContactIdentity, Delivery, Inbox, Message, utcnow
from scrm.domain import PermanentSendError, SendResult, TransientSendError
from scrm.metrics import DELIVERIES, OUTBOX_DEPTH
from scrm.services.outbox import outbound_from_delivery
from scrm.services.uow import unit_of_work

if TYPE_CHECKING:
    from scrm.context import AppContext

log = logging.getLogger("scrm.worker")

ACTIVE = ("queued", "claimed", "sending")
UNKNOWN_OUTCOME = "outcome unknown: the worker stopped while sending; not resent to avoid a duplicate"
MAX_INLINE_WAIT = 5.0  # rate-limit waits longer than this go back to the queue


class OutboxWorker:
    """Delivers the outbox. Several may run in several processes."""

    def __init__(self, ctx: AppContext, name: str | None = None) -> None:
        self.ctx = ctx
        self.cfg = ctx.settings.worker
        self.name = name or f"worker:{ctx.process_id}"
        self._wake = asyncio.Event()
        self._inflight: set[asyncio.Task[None]] = set()
        self._unsubscribe = ctx.bus.subscribe(self._on_enqueued, ev.OUTBOX_ENQUEUED, everywhere=True)
        self._stopping = False

    async def _on_enqueued(self, _event: ev.Event) -> None:
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until `stop` is set, then release what was claimed but not started."""
        log.info("outbox worker %s started", self.name)
        last_recover = 0.0
        loop = asyncio.get_running_loop()
        try:
            while not stop.is_set():
                if loop.time() - last_recover > min(self.cfg.lease_seconds / 2, 15):
                    await self._guard(self.recover_stale())
                    last_recover = loop.time()
                free = self.cfg.concurrency - len(self._inflight)
                claimed = await self._guard(self.claim(min(free, self.cfg.batch_size))) if free > 0 else []
                for delivery in claimed or []:
                    self._start(delivery)
                if claimed:
                    await asyncio.sleep(0)
                    continue
                self._wake.clear()
                waiters = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
                if self._inflight:
                    waiters.append(asyncio.ensure_future(asyncio.wait(set(self._inflight), return_when="FIRST_COMPLETED")))
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

    def _start(self, delivery: Delivery) -> None:
        task = asyncio.create_task(self.process(delivery))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

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
                if loop.time() - last_recover > min(self.cfg.lease_seconds / 2, 15):
                    await self.recover_stale()
                    last_recover = loop.time()
                free = self.cfg.concurrency - len(self._inflight)
                claimed = await self.claim(min(free, self.cfg.batch_size)) if free > 0 else []
                if not claimed and not self._inflight:
                    return done
                for delivery in claimed:
                    self._start(delivery)
                    done += 1
                if self._inflight and (not claimed or free <= len(claimed)):
                    await asyncio.wait(set(self._inflight), return_when="FIRST_COMPLETED")

    async def claim(self, limit: int) -> Sequence[Delivery]:
        """Atomically claim up to `limit` due deliveries, oldest first, one per ordering key.

        Two indexed steps instead of one NOT EXISTS per row (which degrades with the backlog):
        lock a window of queued rows, then keep only the head of each ordering key.
        """
        if limit <= 0:
            return []
        now = utcnow()
        window = (
            select(Delivery.id, Delivery.ordering_key)
            .where(Delivery.status == "queued", Delivery.next_attempt_at <= now)
            .order_by(Delivery.id)
            .limit(limit * 4)
            .with_for_update(skip_locked=True)
        )
        async with self.ctx.db.transaction() as s:
            rows = (await s.execute(window)).all()
            if not rows:
                return []
            keys = {r.ordering_key for r in rows}
            heads = dict(
                (await s.execute(
                    select(Delivery.ordering_key, func.min(Delivery.id))
                    .where(Delivery.ordering_key.in_(keys), Delivery.status.in_(ACTIVE))
                    .group_by(Delivery.ordering_key)
                )).all()
            )
            ids = [r.id for r in rows if heads.get(r.ordering_key) == r.id][:limit]
            if not ids:
                return []
            stmt = (
                update(Delivery)
                .where(Delivery.id.in_(ids), Delivery.status == "queued")
                .values(
                    status="claimed",
                    claimed_by=self.name,
                    lease_until=now + timedelta(seconds=self.cfg.lease_seconds),
                    attempts=Delivery.attempts + 1,
                )
                .returning(Delivery)
                .execution_options(synchronize_session=False)
            )
            claimed = list((await s.scalars(stmt)).all())
        return sorted(claimed, key=lambda d: d.id)

    async def process(self, delivery: Delivery) -> None:
        """Send one claimed delivery and record the outcome."""
        adapter = await self.ctx.adapters.get(delivery.inbox_id)
        if adapter is None:
            await self._finish(delivery, "unknown", error=PermanentSendError("inbox deleted or disabled"))
            return
        message = outbound_from_delivery(delivery)
        limits = adapter.rate_limits(message)
        while True:
            wait = await self.ctx.limiter.acquire(limits)
            if wait <= 0:
                break
            if wait > MAX_INLINE_WAIT or self._stopping:
                await self._requeue(delivery, wait)
                return
            await asyncio.sleep(wait)
        if not await self._mark_sending(delivery):
            return  # our lease was taken over (we were too slow): someone else owns it now
        try:
            async with asyncio.timeout(self.cfg.send_timeout):
                result = await adapter.send(message)
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

    async def _mark_sending(self, delivery: Delivery) -> bool:
        async with self.ctx.db.transaction() as s:
            res = await s.execute(
                update(Delivery)
                .where(Delivery.id == delivery.id, Delivery.status == "claimed", Delivery.claimed_by == self.name)
                .values(status="sending", lease_until=utcnow() + timedelta(seconds=self.cfg.lease_seconds))
            )
            return res.rowcount == 1  # type: ignore[attr-defined]

    async def _requeue(self, delivery: Delivery, wait: float) -> None:
        async with self.ctx.db.transaction() as s:
            await s.execute(
                update(Delivery)
                .where(Delivery.id == delivery.id, Delivery.status == "claimed", Delivery.claimed_by == self.name)
                .values(
                    status="queued",
                    claimed_by=None,
                    lease_until=None,
                    attempts=Delivery.attempts - 1,
                    next_attempt_at=utcnow() + timedelta(seconds=wait),
                )
            )

    def _backoff(self, attempts: int) -> float:
        delay = min(self.cfg.backoff_max, self.cfg.backoff_base ** max(attempts, 1))
        return delay * random.uniform(0.8, 1.2)

    async def _finish(
        self, delivery: Delivery, channel: str, *, result: SendResult | None = None, error: Exception | None = None
    ) -> None:
        """Record the outcome with plain UPDATEs guarded by our claim (no ORM load: this is the hot path)."""
        now = utcnow()
        d = delivery
        values: dict[str, object] = {"lease_until": None}
        msg_values: dict[str, object] = {}
        if result is not None:
            status = "delivered" if result.delivered else "sent"
            values |= {"status": status, "external_id": result.external_id, "sent_at": now, "last_error": None}
            msg_values = {"delivery_status": status, "delivery_error": None, "sent_at": now}
        elif isinstance(error, TransientSendError) and d.attempts < self.cfg.max_attempts:
            status = "queued"
            delay = error.retry_after if error.retry_after is not None else self._backoff(d.attempts)
            reason = f"{error.reason} (retrying)"
            values |= {"status": status, "claimed_by": None, "next_attempt_at": now + timedelta(seconds=delay),
                       "last_error": reason, "error_code": error.code}
            msg_values = {"delivery_error": reason}
        else:
            assert error is not None
            status = "failed"
            reason = getattr(error, "reason", str(error))
            values |= {"status": status, "last_error": reason, "error_code": getattr(error, "code", None)}
            msg_values = {"delivery_status": "failed", "delivery_error": reason}
        async with unit_of_work(self.ctx) as tx:
            s = tx.session
            res = await s.execute(
                update(Delivery)
                .where(Delivery.id == d.id, Delivery.claimed_by == self.name, Delivery.status.in_(("claimed", "sending")))
                .values(**values)
            )
            if res.rowcount != 1:  # type: ignore[attr-defined]
                return  # recovered by another worker meanwhile; it owns the outcome now
            if d.message_id is not None:
                await s.execute(update(Message).where(Message.id == d.message_id).values(**msg_values))
                if result is not None and result.external_id and not await _external_id_taken(s, d.inbox_id, result.external_id):
                    await s.execute(update(Message).where(Message.id == d.message_id).values(external_id=result.external_id))
                tx.emit(ev.MESSAGE_UPDATED, message_id=d.message_id, conversation_id=d.conversation_id,
                        delivery_status=msg_values.get("delivery_status"))
            if isinstance(error, PermanentSendError) and error.contact_unreachable and d.identity_id:
                identity = await s.get(ContactIdentity, d.identity_id)
                if identity is not None:
                    identity.reachable = False
                    identity.unreachable_reason = error.reason
                    tx.emit(ev.CONTACT_UPDATED, contact_id=identity.contact_id, identity_id=identity.id)
            tx.emit(ev.DELIVERY_UPDATED, delivery_id=d.id, status=status, conversation_id=d.conversation_id,
                    kind=d.kind)
        DELIVERIES.labels(channel=channel, status=status).inc()
        if status == "failed":
            log.warning("delivery %s failed: %s", d.id, values.get("last_error"))

    async def release_claimed(self) -> int:
        """Give back rows this worker claimed but never started sending (graceful shutdown)."""
        async with self.ctx.db.transaction() as s:
            res = await s.execute(
                update(Delivery)
                .where(Delivery.status == "claimed", Delivery.claimed_by == self.name)
                .values(status="queued", claimed_by=None, lease_until=None, attempts=Delivery.attempts - 1)
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
