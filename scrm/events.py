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
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

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

    @classmethod
    def from_json(cls, raw: str | bytes) -> Event:
        obj = json.loads(raw)
        return cls(name=obj["name"], data=obj["data"], id=obj["id"], at=obj["at"], origin=obj.get("origin"))


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


class EventBus:
    """In-process bus. Listeners run as tasks so a slow listener never blocks the publisher."""

    def __init__(self, process_id: str | None = None) -> None:
        self.process_id = process_id or uuid.uuid4().hex[:12]
        self._listeners: list[tuple[str | None, Listener, bool]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        # Listener work (bot turns, SLA, media) queues behind this many slots so it never takes
        # every database connection from the requests that acknowledge webhooks.
        self._slots = _Slots(LISTENER_SLOTS)
        self._queued = 0  # work-listener calls waiting for a slot

    def subscribe(self, listener: Listener, name: str | None = None, *, everywhere: bool = False) -> Callable[[], None]:
        """Call `listener` for every event (or only events called `name`); returns unsubscribe.

        By default a listener runs once per event, in the process that committed it (the bot must
        answer once, not once per server). `everywhere=True` listeners run in every process:
        WebSocket fan-out, worker wake-ups, in-memory index refreshes.
        """
        entry = (name, listener, everywhere)
        self._listeners.append(entry)
        return lambda: self._listeners.remove(entry) if entry in self._listeners else None

    async def publish(self, events: Iterable[Event]) -> None:
        """Publish events that were just committed."""
        for event in events:
            self._dispatch(event)

    def _dispatch(self, event: Event, *, scope: str = "all") -> None:
        """scope: "all" (in-process bus), "origin" (work listeners), "everywhere" (fan-out listeners)."""
        for name, listener, everywhere in list(self._listeners):
            if scope == "origin" and everywhere or scope == "everywhere" and not everywhere:
                continue
            if name is None or name == event.name:
                task = asyncio.create_task(self._run(listener, event, throttled=not everywhere))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _run(self, listener: Listener, event: Event, *, throttled: bool = True) -> None:
        try:
            if throttled:  # work listeners queue for a slot; fan-out (WebSocket push) never waits
                self._queued += 1
                try:
                    await self._slots.acquire()
                finally:
                    self._queued -= 1
                try:
                    await listener(event)
                finally:
                    self._slots.release()
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

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()


class RedisEventBus(EventBus):
    """Events cross processes through one Redis pub/sub channel."""

    CHANNEL = "scrm:events"

    def __init__(self, redis: Any, process_id: str | None = None) -> None:
        super().__init__(process_id)
        self.redis = redis
        self._reader: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def publish(self, events: Iterable[Event]) -> None:
        stamped = [Event(e.name, e.data, e.id, e.at, self.process_id) for e in events]
        if not stamped:
            return
        for event in stamped:
            self._dispatch(event, scope="origin")
        try:
            async with self.redis.pipeline(transaction=False) as pipe:  # one round trip for all
                for event in stamped:
                    pipe.publish(self.CHANNEL, event.to_json())
                await pipe.execute()
        except Exception:
            # The database stays the source of truth: losing Redis loses a live update, not data.
            log.exception("could not publish %d events to Redis; dispatching locally", len(stamped))
            for event in stamped:
                self._dispatch(event, scope="everywhere")

    async def start(self) -> None:
        self._reader = asyncio.create_task(self._read_forever())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), 5)

    async def _read_forever(self) -> None:
        while True:
            try:
                pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
                await pubsub.subscribe(self.CHANNEL)
                self._ready.set()
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        try:
                            self._dispatch(Event.from_json(message["data"]), scope="everywhere")
                        except (ValueError, KeyError):
                            log.warning("ignoring malformed event on %s", self.CHANNEL)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("Redis event subscription lost; reconnecting")
                await asyncio.sleep(1.0)

    async def close(self) -> None:
        if self._reader:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        await super().close()
