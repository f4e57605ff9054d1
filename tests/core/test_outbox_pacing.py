"""Outbox pacing as a user sees it: a channel's limit holds in every second even on a busy worker; a crash
reports as "outcome unknown" only what was really being sent; messages to one contact follow each other
promptly; a worker leaves a slow channel's backlog queued for others; a hung channel cannot take every
send slot; a late event loop does not push the rate's schedule back."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
import weakref
from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import event, func, select, update

from channels.api import ApiChannelAdapter
from channels.base import Capabilities, RateLimit
from channels.registry import register
from scrm.bootstrap import build_context
from scrm.db.models import Delivery, utcnow
from scrm.delivery.budget import RESENDABLE_AHEAD
from scrm.delivery.pacing import ARM_MIN, RATE_TOLERANCE, Pacer
from scrm.delivery.slots import SendSlots
from scrm.delivery.worker import UNKNOWN_OUTCOME, OutboxWorker
from scrm.domain import OutboundMessage
from scrm.ratelimit import MemoryRateLimiter
from tests.conftest import CallbackServer, make_inbox, wait_for
from tests.core.test_outbox import _queue
from tests.core.test_outbox_batching import TwoPerSecondApi  # noqa: F401 - registers its channel


@register
class TwentyPerSecondApi(ApiChannelAdapter):
    """The API channel behind a platform quota of 20 sends per second."""

    channel_type = "test_twenty_per_second"

    def rate_limits(self, message: OutboundMessage) -> Sequence[RateLimit]:
        return (RateLimit(f"test-twenty:{self.inbox.id}", 20, 1.0),)


@register
class FourPerSecondOnce(ApiChannelAdapter):
    """A channel with a 4/s quota that does not deduplicate: a send cut off by a crash is not repeated."""

    channel_type = "test_four_per_second_once"
    capabilities = Capabilities(buttons=True, max_buttons=10, idempotent_send=False)

    def rate_limits(self, message: OutboundMessage) -> Sequence[RateLimit]:
        return (RateLimit(f"test-four:{self.inbox.id}", 4, 1.0),)


class TimedReceiver(CallbackServer):
    """The callback server, also noting when each message arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.arrivals: list[float] = []

    async def handle(self, request):  # type: ignore[no-untyped-def]
        self.arrivals.append(time.monotonic())
        return await super().handle(request)


def most_in_one_second(times: list[float]) -> int:
    times, best, lo = sorted(times), 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= 1.0:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


async def _run_worker(worker: OutboxWorker, until, timeout: float = 10.0) -> float:  # type: ignore[no-untyped-def]
    """Run `worker` until `until()` holds; returns the seconds it took."""
    stop = asyncio.Event()
    started = time.monotonic()
    task = asyncio.create_task(worker.run(stop))
    try:
        await wait_for(until, timeout=timeout, interval=0.02)
    finally:
        stop.set()
        await task
    return time.monotonic() - started



async def _busy_loop(hold: float) -> None:
    """Other work holding the event loop `hold` seconds per turn, as a busy worker's does."""
    while True:
        time.sleep(hold)
        await asyncio.sleep(0)

async def test_a_channel_limit_holds_in_every_second_while_the_worker_is_busy(ctx):
    receiver = TimedReceiver()
    await receiver.start()
    try:
        inbox = await make_inbox(ctx, "test_twenty_per_second", settings={"callback_url": receiver.url},
                                 secrets={"secret": "s" * 32})
        for i in range(30):
            await _queue(ctx, inbox, [f"第{i}条"], sender=f"c{i}")

        noise = asyncio.create_task(_busy_loop(0.001))  # every timer fires late
        try:
            await _run_worker(OutboxWorker(ctx), lambda: len(receiver.arrivals) >= 30)
        finally:
            noise.cancel()
    finally:
        await receiver.stop()
    assert most_in_one_second(receiver.arrivals) <= 20  # the platform's quota, counted on its clock


IN_THE_DYING_WORKER: contextvars.ContextVar[bool] = contextvars.ContextVar("in_the_dying_worker", default=False)


@contextlib.contextmanager
def tasks_started_in_the_dying_worker() -> Iterator[weakref.WeakSet[asyncio.Task[Any]]]:
    """Every task started, directly or not, by code running with IN_THE_DYING_WORKER set: the tasks a SIGKILL
    of its process would end. Telling them by their code would also take tasks of the surviving context (the
    test process's own event log consumer works the deliveries' events meanwhile): killing one process must not
    cut the other's work short."""
    loop = asyncio.get_running_loop()
    previous = loop.get_task_factory()
    started: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Future[Any]:
        task = previous(loop, coro, **kwargs) if previous else asyncio.Task(coro, loop=loop, **kwargs)
        context = kwargs.get("context") or contextvars.copy_context()
        if context.get(IN_THE_DYING_WORKER) and isinstance(task, asyncio.Task):
            started.add(task)
        return task

    loop.set_task_factory(factory)
    try:
        yield started
    finally:
        loop.set_task_factory(previous)


async def test_a_crash_reports_unknown_only_for_what_was_being_sent(ctx, settings, callback_server):
    inbox = await make_inbox(ctx, "test_four_per_second_once", settings={"callback_url": callback_server.url},
                             secrets={"secret": "s" * 32})
    ids = []
    for i in range(10):
        ids += await _queue(ctx, inbox, [f"通知{i}"], sender=f"c{i}")
    dying_ctx = await build_context(settings)  # a process of its own, killed half-way
    held: set[object] = set()  # its connections now checked out of its pools
    for engine in {dying_ctx.db.engine, dying_ctx.db.read_engine}:
        event.listen(engine.sync_engine, "checkout", lambda conn, rec, proxy: held.add(conn))
        event.listen(engine.sync_engine, "checkin", lambda conn, rec: held.discard(conn))
    dying = OutboxWorker(dying_ctx, name="dying")

    async def no_goodbye(timeout: float | None = None) -> None:  # SIGKILL: nothing is handed back
        return None

    dying.shutdown = no_goodbye  # type: ignore[method-assign]
    with tasks_started_in_the_dying_worker() as its_tasks:
        in_the_worker = contextvars.copy_context()
        in_the_worker.run(IN_THE_DYING_WORKER.set, True)
        task = asyncio.create_task(dying.run(asyncio.Event()), context=in_the_worker)
        await wait_for(lambda: len(callback_server.received) >= 3, timeout=5)
        # Every task the worker started dies with it: its sends, pacers and writes, and its heartbeat, whose
        # transaction (SQLite's write lock) outlived the kill when only the listed tasks were cancelled.
        while tasks := [t for t in its_tasks if not t.done()]:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    assert task.done()
    # Its connections go, as with the process, with whatever they held: a task cancelled inside a
    # transaction leaves its connection checked out (on SQLite holding the write lock), which the pool's
    # dispose() does not close.
    for conn in list(held):
        closed = conn.driver_connection.close()  # type: ignore[attr-defined]
        if asyncio.iscoroutine(closed) or isinstance(closed, asyncio.Future):
            await closed
    held.clear()
    await dying_ctx.close()
    async with ctx.db.transaction() as s:  # its leases run out
        await s.execute(update(Delivery).where(Delivery.status.in_(("claimed", "sending")))
                        .values(lease_until=utcnow() - timedelta(seconds=1)))
    await OutboxWorker(ctx, name="next").run_until_idle(timeout=20)

    received = [r["delivery_id"] for r in callback_server.received]
    assert len(received) == len(set(received))  # nobody got a message twice
    async with ctx.db.session() as s:
        rows = (await s.execute(select(Delivery.id, Delivery.status, Delivery.last_error)
                                .where(Delivery.id.in_(ids)))).all()
    unknown = [r.id for r in rows if r.status == "failed"]
    assert all(r.last_error == UNKNOWN_OUTCOME for r in rows if r.status == "failed")
    assert {r.id for r in rows if r.status == "sent"} == set(received) - set(unknown)
    # Only the line's front was marked as being sent (plus one in the channel's hands); the rest of
    # what the dead worker had claimed was sent by the next one.
    assert len(unknown) <= ARM_MIN + 1
    assert len(received) + len(set(unknown) - set(received)) == 10


async def test_an_unpaced_idempotent_channel_is_claimed_marked_and_a_crash_resends_with_the_same_keys(
        ctx, settings, callback_server):
    """An inbox without a rate limit whose channel drops repeats by our idempotency key (the API channel) holds
    RESENDABLE_AHEAD x concurrency deliveries, each marked `sending` by its claim (or a consumer batch's
    hand-over): none left queued for a later claim, none marked by a commit of its own. A worker killed
    meanwhile leaves them `sending`; the next resends them with their keys: every one arrives once, none is
    reported as "outcome unknown"."""
    inbox = await make_inbox(ctx, settings={"callback_url": callback_server.url})
    paced_inbox = await make_inbox(ctx, "test_twenty_per_second", settings={"callback_url": callback_server.url},
                                   secrets={"secret": "s" * 32})
    await _queue(ctx, inbox, ["你好"], sender="r-first")
    await _queue(ctx, paced_inbox, ["限速"], sender="p0")
    dying_ctx = await build_context(settings)
    dying = OutboxWorker(dying_ctx, name="dying")
    assert await dying.run_until_idle(timeout=10) == 2  # the first sends tell each inbox's kind
    assert inbox.id in dying._budget.resendable  # noqa: SLF001
    assert paced_inbox.id not in dying._budget.resendable  # noqa: SLF001 - rate-limited
    ids = []
    for i in range(30):
        ids += await _queue(ctx, inbox, [f"答复{i}"], sender=f"r{i}")
    assert dying.room(inbox.id) == RESENDABLE_AHEAD * dying.cfg.concurrency
    dying._budget.undrain()  # noqa: SLF001 - new work was announced
    claimed, _ = await dying._claim(len(ids), budget=dying._budget, refresh=True)  # noqa: SLF001
    assert [d.id for d in claimed] == ids  # more than the concurrency (8) and its margin, every row marked
    assert {d.status for d in claimed} == {"sending"}
    callback_server.received.clear()
    # Killed before it sent any: its rows stay `sending`, its lease runs out.
    await dying_ctx.close()
    async with ctx.db.transaction() as s:
        await s.execute(update(Delivery).where(Delivery.status.in_(("claimed", "sending")))
                        .values(lease_until=utcnow() - timedelta(seconds=1)))
    await OutboxWorker(ctx, name="next").run_until_idle(timeout=20)
    async with ctx.db.session() as s:
        rows = dict((await s.execute(select(Delivery.id, Delivery.status).where(Delivery.id.in_(ids)))).all())
    assert set(rows.values()) == {"sent"}  # none "outcome unknown"
    assert sorted(r["delivery_id"] for r in callback_server.received) == ids  # each once


async def test_messages_to_one_contact_follow_each_other_promptly_in_order(ctx, callback_server):
    inbox = await make_inbox(ctx, settings={"callback_url": callback_server.url})
    await _queue(ctx, inbox, ["第一句", "第二句", "第三句", "第四句"], sender="u1")
    worker = OutboxWorker(ctx)
    worker.cfg = worker.cfg.model_copy(update={"poll_interval": 5.0})  # no help from polling
    took = await _run_worker(worker, lambda: len(callback_server.received) >= 4)
    assert [r["message"]["text"] for r in callback_server.received] == ["第一句", "第二句", "第三句", "第四句"]
    assert took < 2.0


async def test_a_worker_leaves_a_slow_channels_backlog_queued_for_others(ctx, callback_server):
    slow = await make_inbox(ctx, "test_two_per_second", settings={"callback_url": callback_server.url},
                            secrets={"secret": "s" * 32})
    for i in range(20):
        await _queue(ctx, slow, [f"slow {i}"], sender=f"s{i}")
    held: list[int] = []

    async def sample() -> bool:
        async with ctx.db.session() as s:
            held.append(await s.scalar(select(func.count()).select_from(Delivery).where(
                Delivery.status.in_(("claimed", "sending")))))
        return len(callback_server.received) >= 3

    await _run_worker(OutboxWorker(ctx), sample)
    # About half a second of its rate (2/s) at a time, not a slot-full: another worker can take the rest.
    assert max(held) <= 3


async def test_a_hung_channel_cannot_hold_every_send_slot():
    slots = SendSlots(4)
    for _ in range(3):
        await slots.acquire("hung")  # alone, an inbox may use every slot
    await asyncio.wait_for(slots.acquire("other"), 1)  # another inbox still gets one at once
    waiting = asyncio.create_task(slots.acquire("hung"))
    await asyncio.sleep(0.01)
    assert not waiting.done()  # all 4 in use
    slots.release("hung")
    await asyncio.sleep(0.01)
    assert not waiting.done()  # the hung inbox holds its even share (2): the freed slot is not its
    await asyncio.wait_for(slots.acquire("other"), 1)
    assert slots.in_use == 4
    waiting.cancel()


async def test_turns_keep_their_schedule_when_wake_ups_come_late():
    """A busy loop wakes the line late: the late turns are caught up, not pushed back (sends spaced from
    each late wake-up left a 300/s channel at 130/s)."""
    pacer = Pacer(MemoryRateLimiter())
    limits = [RateLimit("k", 460.0, 1.0)]  # a paced limit: the platform's 500/s at 92%
    pacer.eta(limits)

    async def send() -> float:
        assert await pacer.go_ahead(pacer.join(limits, armed=True)) == 0
        return time.monotonic()

    noise = asyncio.create_task(_busy_loop(0.002))  # every timer fires late
    try:
        done = await asyncio.gather(*(send() for _ in range(100)))
    finally:
        noise.cancel()
    span = max(done) - min(done)
    assert span >= 99 / 460 - RATE_TOLERANCE - 0.005  # never faster than the rate allows
    assert span < 99 / 460 * 1.3


async def test_a_delivery_whose_rate_limiter_fails_goes_back_to_the_queue(ctx, callback_server):
    """The shared limiter (Redis) is down for a moment: the delivery is sent once it is back, not reported
    as "outcome unknown" although it was already marked as being sent."""

    class FlakyLimiter(MemoryRateLimiter):
        failures = 2

        async def acquire(self, limits, tolerance=0.0):  # type: ignore[no-untyped-def]
            if self.failures:
                self.failures -= 1
                raise ConnectionError("redis down")
            return await super().acquire(limits, tolerance)

    ctx.limiter = FlakyLimiter()
    inbox = await make_inbox(ctx, "test_twenty_per_second", settings={"callback_url": callback_server.url},
                             secrets={"secret": "s" * 32})
    [did] = await _queue(ctx, inbox, ["限流器恢复后送达"])
    await _run_worker(OutboxWorker(ctx), lambda: len(callback_server.received) >= 1)
    async with ctx.db.session() as s:
        assert (await s.get(Delivery, did)).status == "sent"
    assert len(callback_server.received) == 1


def test_a_resendable_inbox_claims_ahead_for_replies_but_not_for_a_broadcast() -> None:
    """Replies of an unpaced idempotent inbox may be claimed RESENDABLE_AHEAD x concurrency ahead; a broadcast's
    deliveries keep to the ordinary room, so pausing the broadcast still holds the rest of its queue."""
    from types import SimpleNamespace

    from scrm.delivery.budget import ClaimBudget

    budget = ClaimBudget(concurrency=8, min_claim=4)
    budget.rates[1] = 0.0
    budget.resendable.add(1)
    replies = [SimpleNamespace(id=i, inbox_id=1, kind="message") for i in range(1, 41)]
    assert len(budget.pick(replies, 100)) == RESENDABLE_AHEAD * 8
    broadcast = [SimpleNamespace(id=i, inbox_id=1, kind="broadcast") for i in range(1, 41)]
    assert len(budget.pick(broadcast, 100)) == 8 + 4
    budget.resendable.discard(1)  # an ordinary unpaced inbox: the same for both
    assert len(budget.pick(replies, 100)) == len(budget.pick(broadcast, 100)) == 8 + 4
