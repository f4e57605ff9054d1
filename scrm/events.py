"""The event bus: named events published after commit and dispatched to listeners.

In-process by default. With Redis configured, every event goes through a Redis pub/sub channel
and each process dispatches what it receives, so a listener in any process sees an event
committed in any other (WebSocket fan-out across `scrm serve` processes).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from scrm.redis_client import bounded, unavailable

log = logging.getLogger("scrm.events")

# Event names (Chatwoot's Events::Types)
MESSAGE_CREATED = "message.created"
MESSAGE_UPDATED = "message.updated"
CONVERSATION_CREATED = "conversation.created"
CONVERSATION_UPDATED = "conversation.updated"
CONVERSATION_STATUS_CHANGED = "conversation.status_changed"
CONVERSATION_ASSIGNED = "conversation.assigned"
CONVERSATION_HANDLER_CHANGED = "conversation.handler_changed"
CONTACT_UPDATED = "contact.updated"
DELIVERY_UPDATED = "delivery.updated"
OUTBOX_ENQUEUED = "outbox.enqueued"
TICKET_OPENED = "ticket.opened"
FAQ_CHANGED = "faq.changed"
TYPING = "conversation.typing"


@dataclass(frozen=True)
class Event:
    name: str
    data: dict[str, Any]
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    origin: str | None = None  # process id that published it

    def to_json(self) -> str:
        return json.dumps(
            {"name": self.name, "data": self.data, "id": self.id, "at": self.at, "origin": self.origin},
            ensure_ascii=False,
            default=str,
        )

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "data": self.data, "id": self.id, "at": self.at, "origin": self.origin}

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> Event:
        return cls(name=obj["name"], data=obj["data"], id=obj["id"], at=obj["at"], origin=obj.get("origin"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> Event:
        return cls.from_dict(json.loads(raw))


def events_to_json(events: list[Event]) -> str:
    """One commit's events as one JSON array (one Redis message and one work entry for all of them)."""
    return json.dumps([e.to_dict() for e in events], ensure_ascii=False, default=str)


def events_from_json(raw: str | bytes) -> list[Event]:
    """An array written by events_to_json, or a single event object (written by an older version)."""
    obj = json.loads(raw)
    return [Event.from_dict(o) for o in obj] if isinstance(obj, list) else [Event.from_dict(obj)]


Listener = Callable[[Event], Awaitable[None]]
LISTENER_SLOTS = 4


class _Slots:
    """A FIFO semaphore whose waiters leave in O(1).

    asyncio.Semaphore removes each woken waiter from its deque by value, which is O(n): with
    thousands of listener calls queued under load that made every hand-over quadratic (a fifth of
    a busy server's CPU). Here release() hands the slot straight to the oldest live waiter.
    """

    def __init__(self, size: int) -> None:
        self._free = size
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def acquire(self) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():  # the slot came just as we were cancelled
                self.release()
            raise

    def release(self) -> None:
        while self._waiters:
            future = self._waiters.popleft()
            if not future.done():  # skip waiters that were cancelled
                future.set_result(None)
                return
        self._free += 1


class _Turns:
    """Calls with the same key take turns, first come first served; other keys run side by side."""

    def __init__(self) -> None:
        self._locks: dict[Any, list[Any]] = {}  # key -> [lock, calls holding or waiting for it]

    @contextlib.asynccontextmanager
    async def turn(self, key: Any) -> AsyncIterator[None]:
        if key is None:
            yield
            return
        entry = self._locks.get(key)
        if entry is None:
            entry = self._locks[key] = [asyncio.Lock(), 0]
        entry[1] += 1
        try:
            async with entry[0]:
                yield
        finally:
            entry[1] -= 1
            if not entry[1]:
                del self._locks[key]


@dataclass(eq=False)
class _Subscription:
    listener: Listener
    name: str | None  # only events of this name; None: every event
    everywhere: bool
    wants: Callable[[Event], bool] | None
    per_conversation: bool


class EventBus:
    """In-process bus. Listeners run as tasks so a slow listener never blocks the publisher."""

    def __init__(self, process_id: str | None = None) -> None:
        self.process_id = process_id or uuid.uuid4().hex[:12]
        self._listeners: list[_Subscription] = []
        self._tasks: set[asyncio.Task[None]] = set()
        # Listener work (bot turns, SLA, media) queues behind this many slots so it never takes
        # every database connection from the requests that acknowledge webhooks.
        self._slots = _Slots(LISTENER_SLOTS)
        self._turns = _Turns()
        self.turns_per_conversation = True  # off on SQLite (context.py)
        self._queued = 0  # work-listener calls waiting for a slot

    def subscribe(self, listener: Listener, name: str | None = None, *, everywhere: bool = False,
                  wants: Callable[[Event], bool] | None = None, per_conversation: bool = False) -> Callable[[], None]:
        """Call `listener` for every event (or only events called `name`); returns unsubscribe.

        By default a listener runs once per event, in the process that committed it (the bot must
        answer once, not once per server). `everywhere=True` listeners run in every process:
        WebSocket fan-out, worker wake-ups, in-memory index refreshes. `wants`, a cheap synchronous
        test, spares the listener's task for events it would ignore (a server under load publishes
        thousands a second; WebSocket fan-out with no agent connected wants none of them).
        `per_conversation`: calls for one conversation take turns in this process, in arrival order,
        and wait for their turn before taking a slot. Listeners that lock the conversation's row
        (bot, desk) otherwise filled every slot with calls waiting on one row lock, each holding a
        database connection, while other conversations' work waited.
        """
        entry = _Subscription(listener, name, everywhere, wants, per_conversation)
        self._listeners.append(entry)
        return lambda: self._listeners.remove(entry) if entry in self._listeners else None

    async def publish(self, events: Iterable[Event]) -> None:
        """Publish events that were just committed."""
        for event in events:
            self._dispatch(event)

    def _dispatch(self, event: Event, *, scope: str = "all") -> list[asyncio.Task[None]]:
        """scope: "all" (in-process bus), "origin" (work listeners), "everywhere" (fan-out listeners)."""
        started: list[asyncio.Task[None]] = []
        for sub in list(self._listeners):
            if scope == "origin" and sub.everywhere or scope == "everywhere" and not sub.everywhere:
                continue
            if (sub.name is None or sub.name == event.name) and (sub.wants is None or sub.wants(event)):
                task = asyncio.create_task(self._run(sub, event))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                started.append(task)
        return started

    async def _run(self, sub: _Subscription, event: Event) -> None:
        listener = sub.listener
        key = event.data.get("conversation_id") if self.turns_per_conversation and sub.per_conversation else None
        try:
            if not sub.everywhere:  # work listeners queue for a slot; fan-out (WebSocket push) never waits
                self._queued += 1
                waiting = True
                try:
                    async with self._turns.turn(key):
                        try:
                            await self._slots.acquire()
                        finally:
                            waiting = False
                            self._queued -= 1
                        try:
                            await listener(event)
                        finally:
                            self._slots.release()
                finally:
                    if waiting:
                        self._queued -= 1
            else:
                await listener(event)
        except Exception:
            log.exception("listener %s failed on %s", getattr(listener, "__qualname__", listener), event.name)

    @property
    def backlog(self) -> int:
        """Work-listener calls (bot, desk, ...) queued behind busy slots: how far behind this process is."""
        return self._queued

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait until listener tasks started so far (and those they start) have finished."""
        deadline = asyncio.get_running_loop().time() + timeout
        while self._tasks and asyncio.get_running_loop().time() < deadline:
            await asyncio.wait(set(self._tasks), timeout=max(0.01, deadline - asyncio.get_running_loop().time()))

    async def start(self) -> None:
        """Start receiving (no-op in-process)."""

    def consume_work(self) -> Callable[[], asyncio.Task[None] | None]:
        """In-process, every publisher runs its own work listeners already."""
        return lambda: None

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()


class RedisEventBus(EventBus):
    """Events cross processes through Redis.

    Two paths: a pub/sub channel fans every event out to every process (WebSocket pushes, worker
    wake-ups, index refreshes), and a stream read by one consumer group carries the work (bot turns,
    desk bookkeeping, opt-outs) to the processes that run workers. A `scrm serve --no-worker` only
    stores and acknowledges; the follow-up work of its messages is done by `scrm worker` processes,
    which scale out on their own and pick up a crashed worker's unfinished events.
    """

    CHANNEL = "scrm:events"
    STREAM = "scrm:work"
    GROUP = "listeners"
    READ_AHEAD = 64  # events a consumer holds at once (give or take one entry); their database work queues on the slots
    RECLAIM_IDLE_MS = 60_000  # an event unacknowledged this long belonged to a dead consumer
    HOUSEKEEPING_SECONDS = 15.0  # re-claim own long events, take over dead ones, trim acknowledged ones
    READ_BLOCK_MS = 500
    FORGET_IDLE_MS = 3_600_000
    MAX_BACKLOG = 1_000_000  # with no worker running at all, Redis must not grow without bound

    def __init__(self, redis: Any, process_id: str | None = None) -> None:
        super().__init__(process_id)
        self.redis = redis
        # Pub/sub channels are server-wide, not per database: two installations sharing a Redis server
        # (each with its own db number) must not see each other's events.
        db = getattr(getattr(redis, "connection_pool", None), "connection_kwargs", {}).get("db", 0)
        self.channel = f"{self.CHANNEL}:{db}"
        self._reader: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._consumer: asyncio.Task[None] | None = None
        self._stopping = False  # the reader stops between reads: cancelling a blocked XREADGROUP can hang redis-py
        self._held: dict[str, int] = {}  # stream id -> listener calls still running for its events
        self._held_events = 0  # events of the held entries
        self._held_sizes: dict[str, int] = {}
        self._room = asyncio.Event()
        self._acks: list[str] = []
        self._ack_wake = asyncio.Event()
        self._acker: asyncio.Task[None] | None = None
        self._acks_closing = False
        self._published_upto: str | None = None
        self._lag = 0
        self._lag_at = -1.0
        self._lag_task: asyncio.Task[None] | None = None

    async def publish(self, events: Iterable[Event]) -> None:
        stamped = [Event(e.name, e.data, e.id, e.at, self.process_id) for e in events]
        if not stamped:
            return
        for event in stamped:  # this process's WebSocket clients get it now; its copy from Redis is skipped
            self._dispatch(event, scope="everywhere")
        try:
            # One commit's events travel together: one work entry and one message, in one round trip.
            # Per event, a busy server spent a tenth of its time building and reading back Redis commands.
            raw = events_to_json(stamped)
            # Bounded: this runs before the webhook is answered, which must never wait on Redis.
            async with bounded(self.redis), self.redis.pipeline(transaction=False) as pipe:
                pipe.xadd(self.STREAM, {"b": raw}, maxlen=self.MAX_BACKLOG, approximate=True)
                # The origin goes first so every reader can skip its own events before parsing them.
                pipe.publish(self.channel, f"{self.process_id}\n{raw}")
                results = await pipe.execute()
            last = results[0]
            self._published_upto = last.decode() if isinstance(last, bytes) else str(last)
        except Exception as exc:
            # The database stays the source of truth: without Redis this process does the work
            # itself and its own WebSocket clients still get the live update.
            if unavailable(exc):  # the breaker logged it once; not a traceback per batch
                log.debug("Redis unavailable; dispatching %d events locally", len(stamped))
            else:
                log.exception("could not publish %d events to Redis; dispatching locally", len(stamped))
            for event in stamped:
                self._dispatch(event, scope="origin")

    async def start(self) -> None:
        with contextlib.suppress(Exception):  # events published from now on wait for a consumer
            await self._ensure_group()
        self._reader = asyncio.create_task(self._read_forever())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), 5)

    def consume_work(self) -> Callable[[], asyncio.Task[None] | None]:
        """Run the work listeners of this process for events committed in any process.

        Returns a stopper: it stops reading and returns a task that finishes the events in hand.
        """
        if self._consumer is None:
            self._consumer = asyncio.create_task(self._consume_forever())
            self._acker = asyncio.create_task(self._ack_forever())
        return self._stop_consuming

    def _stop_consuming(self) -> asyncio.Task[None] | None:
        if self._consumer is None:
            return None
        return asyncio.create_task(self._finish_held())

    async def _stop_reader(self) -> None:
        """Stop reading between two reads (within one READ_BLOCK_MS)."""
        self._stopping = True
        self._room.set()
        if self._consumer is not None and not self._consumer.done():
            await asyncio.wait({self._consumer}, timeout=self.READ_BLOCK_MS / 1000 + 1)

    async def _finish_held(self) -> None:
        """Let the reader stop and the listener calls in hand finish (bounded by the caller), then acknowledge."""
        await self._stop_reader()
        while self._held:
            self._room.clear()
            await self._room.wait()
        await self._stop_acker()

    async def _stop_acker(self) -> None:
        if self._acker is not None and not self._acker.done():
            self._acks_closing = True
            self._ack_wake.set()
            await asyncio.wait({self._acker}, timeout=5)

    async def _ensure_group(self) -> None:
        try:
            # "$": a new group starts with the events published from now on, not a trimmed history.
            await self.redis.xgroup_create(self.STREAM, self.GROUP, id="$", mkstream=True)
        except Exception as exc:  # noqa: BLE001
            if "BUSYGROUP" not in str(exc):
                raise

    async def _consume_forever(self) -> None:
        loop = asyncio.get_running_loop()
        housekeeping_at = 0.0
        while not self._stopping:
            try:
                await self._ensure_group()
                while not self._stopping:
                    if self._held_events >= self.READ_AHEAD:
                        self._room.clear()
                        await self._room.wait()
                        continue
                    if loop.time() >= housekeeping_at:
                        housekeeping_at = loop.time() + self.HOUSEKEEPING_SECONDS
                        await self._housekeeping()
                    # An entry holds one commit's events (a busy server's batch: hundreds): while some are
                    # in hand, take one more entry at a time so the read-ahead stays near READ_AHEAD events.
                    reply = await self.redis.xreadgroup(
                        self.GROUP, self.process_id, {self.STREAM: ">"},
                        count=1 if self._held else self.READ_AHEAD, block=self.READ_BLOCK_MS)
                    for _stream, entries in reply or ():
                        for entry_id, fields in entries:
                            self._take(entry_id, fields)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001
                if "NOGROUP" in str(exc):  # the stream was deleted (FLUSHDB): recreate and go on
                    continue
                log.exception("reading the work stream failed; retrying")
                await asyncio.sleep(1.0)

    def _take(self, entry_id: bytes | str, fields: dict[Any, Any]) -> None:
        sid = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
        if sid in self._held:
            return  # re-claimed while our own listener still runs it
        raw = fields.get(b"b") or fields.get("b") or fields.get(b"e") or fields.get("e")
        try:
            events = events_from_json(raw)
        except (TypeError, ValueError, KeyError):
            log.warning("dropping malformed work entry %s", sid)
            self._ack(sid)
            return
        tasks = [task for event in events for task in self._dispatch(event, scope="origin")]
        if not tasks:
            self._ack(sid)
            return
        self._held[sid] = len(tasks)
        self._held_events += len(events)
        self._held_sizes[sid] = len(events)
        for task in tasks:
            task.add_done_callback(lambda _t, sid=sid: self._done(sid))

    def _done(self, sid: str) -> None:
        left = self._held.get(sid, 1) - 1
        if left > 0:
            self._held[sid] = left
            return
        self._held.pop(sid, None)
        self._held_events -= self._held_sizes.pop(sid, 0)
        self._ack(sid)  # a listener that failed logged its error; the event is not retried forever
        self._room.set()

    def _ack(self, sid: str) -> None:
        self._acks.append(sid)
        self._ack_wake.set()

    async def _ack_forever(self) -> None:
        # Stopped by a flag, not by cancel(): redis-py can swallow a cancellation that lands inside a
        # command (its socket timeouts), leaving the task waiting forever.
        while True:
            await self._ack_wake.wait()
            self._ack_wake.clear()
            try:
                await self._send_acks()
            except Exception:  # noqa: BLE001
                log.exception("acknowledging work events failed; retrying")
                if self._acks_closing:
                    return
                await asyncio.sleep(1.0)
                self._ack_wake.set()
            if self._acks_closing and not self._acks:
                return

    async def _send_acks(self) -> None:
        if not self._acks:
            return
        ids, self._acks = self._acks, []
        try:
            await self.redis.xack(self.STREAM, self.GROUP, *ids)
        except BaseException:
            self._acks[:0] = ids
            raise

    async def _housekeeping(self) -> None:
        """Keep own long-running events, take over a dead consumer's, and trim what is acknowledged."""
        if self._held:  # claiming resets the idle time: nobody takes an event we are still working on
            await self.redis.xclaim(self.STREAM, self.GROUP, self.process_id, 0, list(self._held), justid=True)
        reply = await self.redis.xautoclaim(self.STREAM, self.GROUP, self.process_id, self.RECLAIM_IDLE_MS,
                                            start_id="0-0", count=self.READ_AHEAD)
        orphans = reply[1] if reply and len(reply) > 1 else []
        if orphans:
            log.warning("taking over %d work events from a consumer that stopped", len(orphans))
        for entry_id, fields in orphans:
            if fields:
                self._take(entry_id, fields)
        await self._trim()

    async def _group(self) -> dict[str, Any] | None:
        """The consumer group's XINFO GROUPS entry (lag, pending, last-delivered-id), if it exists."""
        groups = await self.redis.xinfo_groups(self.STREAM)
        return next((g for g in groups if _text(g.get("name")) == self.GROUP), None)

    async def _trim(self) -> None:
        """Drop events every consumer is done with: before the oldest unacknowledged or unread one."""
        group = await self._group()
        if group is None:
            return
        floor = _text(group.get("last-delivered-id"))
        summary = await self.redis.xpending(self.STREAM, self.GROUP)
        if summary and summary.get("pending") and summary.get("min"):
            floor = min(floor, _text(summary["min"]), key=_stream_key)
        if floor and floor != "0-0":
            await self.redis.xtrim(self.STREAM, minid=floor, approximate=True)
        # Each process start is a new consumer name: forget stopped ones that hold nothing.
        for consumer in await self.redis.xinfo_consumers(self.STREAM, self.GROUP):
            if not int(consumer.get("pending") or 0) and int(consumer.get("idle") or 0) > self.FORGET_IDLE_MS:
                await self.redis.xgroup_delconsumer(self.STREAM, self.GROUP, consumer["name"])

    @property
    def backlog(self) -> int:
        """Work waiting cluster-wide: work entries (one commit's events each) no consumer has finished, plus this process's queue."""
        loop = asyncio.get_running_loop()
        if loop.time() - self._lag_at > 0.5 and (self._lag_task is None or self._lag_task.done()):
            self._lag_task = loop.create_task(self._refresh_lag())
        return self._queued + self._lag

    async def _refresh_lag(self) -> None:
        with contextlib.suppress(Exception):
            group = await self._group()
            if group is not None:
                self._lag = int(group.get("lag") or 0) + int(group.get("pending") or 0)
        self._lag_at = asyncio.get_running_loop().time()

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait until every event this process published has been worked off (by any consumer)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._consumer is not None and not self._stopping and self._published_upto and loop.time() < deadline:
            try:
                group = await self._group()
            except Exception:  # noqa: BLE001
                break
            if group is None:
                break
            read = _text(group.get("last-delivered-id"))
            if _stream_key(read) >= _stream_key(self._published_upto) and not int(group.get("pending") or 0):
                break
            await asyncio.sleep(0.02)
        await super().drain(max(0.01, deadline - loop.time()))

    async def _read_forever(self) -> None:
        while True:
            try:
                pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
                await pubsub.subscribe(self.channel)
                self._ready.set()
                own = self.process_id.encode()
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        origin, _, raw = message["data"].partition(b"\n")
                        if origin == own:
                            continue  # dispatched when it was published
                        try:
                            for event in events_from_json(raw):
                                self._dispatch(event, scope="everywhere")
                        except (ValueError, KeyError, TypeError):
                            log.warning("ignoring malformed event on %s", self.channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("Redis event subscription lost; reconnecting")
                await asyncio.sleep(1.0)

    async def close(self) -> None:
        await self._stop_reader()
        await self._stop_acker()
        for task in (self._reader, self._consumer, self._acker, self._lag_task):
            if task is not None and not task.done():
                task.cancel()
                # Bounded: a cancellation swallowed inside redis-py must not hang shutdown.
                await asyncio.wait({task}, timeout=2)
        await super().close()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")


def _stream_key(sid: str) -> tuple[int, int]:
    ms, _, seq = sid.partition("-")
    return int(ms or 0), int(seq or 0)
