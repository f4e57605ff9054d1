"""The event bus: named events, their listeners, and the live fan-out after commit.

Two kinds of listener. Work listeners (bot, desk, automation, notifications, ...) are called by the
durable consumer of the event log (scrm/event_log.py): events are rows written in the transaction
that caused them, worked once cluster-wide, in order per conversation, with the listener's writes
and the consumer's progress in one transaction. `everywhere` listeners (WebSocket pushes, worker
wake-ups, index refreshes) run in every process as soon as an event is committed: in-process by
default, through a Redis pub/sub channel across processes. Redis only wakes consumers and fans out
live updates; losing it delays work (consumers also poll the log), never loses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from scrm import json_codec
from scrm.redis_client import bounded, unavailable

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from scrm.db.database import Database
    from scrm.settings import EventsSettings

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
    # 32 random hex digits, like uuid4().hex (nothing parses it as a UUID) at a fifth of its cost: a bot
    # answer creates about eight events and keys.
    id: str = field(default_factory=lambda: os.urandom(16).hex())
    at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    origin: str | None = None  # process id that published it

    def to_json(self) -> str:
        return json_codec.dumps(
            {"name": self.name, "data": self.data, "id": self.id, "at": self.at, "origin": self.origin},
            default=str,
        )

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "data": self.data, "id": self.id, "at": self.at, "origin": self.origin}

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> Event:
        return cls(name=obj["name"], data=obj["data"], id=obj["id"], at=obj["at"], origin=obj.get("origin"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> Event:
        return cls.from_dict(json_codec.loads(raw))


def events_to_json(events: list[Event]) -> str:
    """One commit's events as one JSON array (one Redis message and one work entry for all of them)."""
    return json_codec.dumps([e.to_dict() for e in events], default=str)


def events_header(events: Sequence[Event]) -> str:
    """What the listeners of other processes filter on, without the bodies: each distinct (event name,
    conversation id) of a commit's events, as `name,id` (id empty: about no conversation) joined by `;`.

    Sent before the JSON of a Redis event message, so a process parses the JSON only when one of its live
    listeners may want one of the events (see Subscription.may_want); most processes, most of the time,
    have no browser connected that could receive them.
    """
    seen: dict[str, None] = {}
    for e in events:
        cid = e.data.get("conversation_id")
        seen[f"{e.name},{cid if type(cid) is int else ''}"] = None
    return ";".join(seen)


def header_entries(header: str) -> list[tuple[str, int | None]]:
    """The (event name, conversation id) pairs of a header written by events_header."""
    out: list[tuple[str, int | None]] = []
    for entry in header.split(";"):
        name, _, cid = entry.rpartition(",")
        out.append((name, int(cid) if cid else None))
    return out


def events_from_json(raw: str | bytes) -> list[Event]:
    """An array written by events_to_json, or a single event object (written by an older version)."""
    obj = json_codec.loads(raw)
    return [Event.from_dict(o) for o in obj] if isinstance(obj, list) else [Event.from_dict(obj)]


Listener = Callable[[Event], Awaitable[None]]


class Consumer(Protocol):
    """A worker of the event log in this process (scrm.event_log.EventConsumer)."""

    def start(self) -> None: ...

    def wake(self) -> None: ...

    async def stop(self) -> None: ...


class DeliveryTaker(Protocol):
    """The outbox worker running in this process, which takes the deliveries its consumer's batches write
    straight from them (scrm/delivery/handoff.py)."""

    name: str
    lease_seconds: float

    def reserve(self) -> bool:
        """Whether it takes deliveries now; True holds its shutdown until `adopt` is called."""
        ...

    def room(self, inbox_id: int) -> int:
        """How many new deliveries of the inbox it would start at once."""
        ...

    def adopt(self, rows: Sequence[Any]) -> None:
        """Start the deliveries marked `sending` for it in a batch that committed (none: it rolled back)."""
        ...


@dataclass(frozen=True)
class EventLog:
    """The durable event log's functions, handed to the bus at start (scrm.bootstrap).

    The bus sits below the log: the log's consumer calls the listeners, which call the services,
    which write through unit_of_work (services/uow.py), which logs its events with `append`.
    """

    # In the caller's transaction, the events some consumer may act on (scrm/event_interest.py, given a
    # `listening` snapshot or None); returns how many it logged.
    append: Callable[[AsyncSession, list[Event], Any], Awaitable[int]]
    unworked: Callable[[Database], Awaitable[bool]]  # whether any logged event waits for a consumer
    consumer: Callable[[EventBus, Database, EventsSettings], Consumer]
    # (AppContext) -> event_interest.Listening: what the database says listens beyond the code (cached reads)
    listening: Callable[[Any], Awaitable[Any]]


@dataclass(eq=False)
class Subscription:
    listener: Listener
    name: str | None  # only events of this name; None: every event
    everywhere: bool
    wants: Callable[[Event], bool] | None
    after_commit: bool
    interested: Callable[[str, int | None], bool] | None = None

    def matches(self, event: Event) -> bool:
        return (self.name is None or self.name == event.name) and (self.wants is None or self.wants(event))

    def may_want(self, name: str, conversation_id: int | None) -> bool:
        """Whether an event of this name and conversation (read from another process's header) may match;
        False only when `matches` would certainly be False for it."""
        return (self.name is None or self.name == name) and (
            self.interested is None or self.interested(name, conversation_id))


class EventBus:
    """In-process bus: listeners of this process, live fan-out, and the event log's consumer."""

    def __init__(self, process_id: str | None = None) -> None:
        self.process_id = process_id or uuid.uuid4().hex[:12]
        self._listeners: list[Subscription] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.db: Database | None = None
        self.settings: EventsSettings | None = None
        self.log: EventLog | None = None
        self.consumer: Consumer | None = None
        self.deliveries: DeliveryTaker | None = None  # this process's running outbox worker, if any
        # Awaited by the consumer before it opens a batch's transaction: what listeners need that other
        # tasks build with writes of their own (the FAQ index), which must not wait for that transaction.
        self.before_work: list[Callable[[], Awaitable[object]]] = []

    def attach(self, db: Database, settings: EventsSettings, log: EventLog) -> None:
        """The database whose event log this bus's consumer works, and the log's functions (build_context)."""
        self.db, self.settings, self.log = db, settings, log

    def event_log(self) -> EventLog:
        """The attached event log (units of work append their events with it)."""
        assert self.log is not None, "attach() the event log first (scrm.bootstrap.build_context)"
        return self.log

    def subscribe(self, listener: Listener, name: str | None = None, *, everywhere: bool = False,
                  wants: Callable[[Event], bool] | None = None, after_commit: bool = False,
                  interested: Callable[[str, int | None], bool] | None = None) -> Callable[[], None]:
        """Call `listener` for every event (or only events called `name`); returns unsubscribe.

        By default a listener does work: the event log's consumer calls it once cluster-wide, in
        order per conversation, inside the consumer's transaction (its writes commit with the
        consumer's progress; it must not start tasks that write). `after_commit=True`: work that
        talks to the outside world (downloads, platform APIs) and must not hold a transaction open;
        the consumer starts it once its batch has committed (at most once: it keeps its own state).
        `everywhere=True` listeners run in every process right after the commit: WebSocket fan-out,
        worker wake-ups, in-memory index refreshes. `wants`, a cheap synchronous test, spares the
        call for events it would ignore. `interested(name, conversation_id)`, for `everywhere` listeners, is
        the same test on less (False only where `wants` would be False for every event of that name and
        conversation, e.g. "no socket is connected"): events from other processes that no listener here is
        interested in are not even parsed (RedisEventBus).
        """
        entry = Subscription(listener, name, everywhere, wants, after_commit, interested)
        self._listeners.append(entry)
        return lambda: self._listeners.remove(entry) if entry in self._listeners else None

    def work_listeners(self, event: Event) -> list[Subscription]:
        """The work listeners (in the transaction and after commit) `event` calls for, in subscription order."""
        return [sub for sub in list(self._listeners) if not sub.everywhere and sub.matches(event)]

    async def publish(self, events: Iterable[Event], *, wake: bool = True) -> None:
        """Fan events that were just committed (and logged) out to the live listeners; wake consumers.
        `wake=False`: none of them was logged (live-only pushes, e.g. a plain send's outcome), so no
        consumer has anything new to work: waking one would only run a claim that finds nothing."""
        for event in events:
            self._fan_out(event)
        if wake:
            self.wake()

    def wake(self) -> None:
        """New events are in the log: this process's consumer looks now rather than at its next poll."""
        if self.consumer is not None:
            self.consumer.wake()

    def _fan_out(self, event: Event) -> None:
        for sub in list(self._listeners):
            if sub.everywhere and sub.matches(event):
                self.spawn(sub.listener, event)

    def spawn(self, listener: Listener, event: Event) -> None:
        """Run a listener call as a task of its own (fan-out, after-commit work); its error is logged."""
        task = asyncio.create_task(self._run(listener, event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, listener: Listener, event: Event) -> None:
        try:
            await listener(event)
        except Exception:
            log.exception("listener %s failed on %s", getattr(listener, "__qualname__", listener), event.name)

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait until the event log has no unworked event (by any consumer) and listener tasks finished."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if self.db is not None and self.log is not None:
            while loop.time() < deadline:
                try:
                    if not await self.log.unworked(self.db):
                        break
                except Exception:  # noqa: BLE001 - the database is down: nothing to wait for now
                    break
                self.wake()
                await asyncio.sleep(0.01)
        while self._tasks and loop.time() < deadline:
            await asyncio.wait(set(self._tasks), timeout=max(0.01, deadline - loop.time()))

    async def start(self) -> None:
        """Start receiving (no-op in-process)."""

    def consume_work(self) -> Callable[[], asyncio.Task[None] | None]:
        """Work the event log in this process (`scrm worker`, or `scrm serve` with its worker).

        Returns a stopper: it returns a task that finishes the batch in hand.
        """
        if self.consumer is None:
            assert self.db is not None and self.settings is not None and self.log is not None, "attach() first"
            self.consumer = self.log.consumer(self, self.db, self.settings)
            self.consumer.start()
        consumer = self.consumer

        def stop() -> asyncio.Task[None] | None:
            return asyncio.create_task(consumer.stop())

        return stop

    async def close(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
        for task in list(self._tasks):
            task.cancel()


LIVE_ONLY = " live"  # after the origin of a Redis event message none of whose events was logged (not hex)


class RedisEventBus(EventBus):
    """Live updates cross processes through a Redis pub/sub channel, and wake their consumers.

    Nothing durable travels through Redis: work is in the event log. A lost message only means a
    consumer finds the events at its next poll, and a WebSocket tab misses a live update (it
    reloads what it shows when it reconnects).
    """

    CHANNEL = "scrm:events"

    def __init__(self, redis: Any, process_id: str | None = None) -> None:
        super().__init__(process_id)
        self.redis = redis
        # Pub/sub channels are server-wide, not per database: two installations sharing a Redis server
        # (each with its own db number) must not see each other's events.
        db = getattr(getattr(redis, "connection_pool", None), "connection_kwargs", {}).get("db", 0)
        self.channel = f"{self.CHANNEL}:{db}"
        self._reader: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def publish(self, events: Iterable[Event], *, wake: bool = True) -> None:
        stamped = [Event(e.name, e.data, e.id, e.at, self.process_id) for e in events]
        if not stamped:
            return
        await super().publish(stamped, wake=wake)  # this process's live listeners and consumer; its copy from Redis is skipped
        try:
            # Bounded: this runs before the webhook is answered, which must never wait on Redis.
            async with bounded(self.redis):
                # The origin goes first so every reader can skip its own events before parsing them, then the
                # header, so a reader parses the events only when a listener of its may want one of them.
                # A live-only message says so after the origin (LIVE_ONLY): readers fan it out but wake no consumer.
                origin = self.process_id if wake else f"{self.process_id}{LIVE_ONLY}"
                await self.redis.publish(
                    self.channel, f"{origin}\n{events_header(stamped)}\n{events_to_json(stamped)}")
        except Exception as exc:  # noqa: BLE001 - live updates are best effort; the work is in the log
            if unavailable(exc):  # the breaker logged it once; not a traceback per batch
                log.debug("Redis unavailable; %d events not fanned out", len(stamped))
            else:
                log.exception("could not publish %d events to Redis", len(stamped))

    async def start(self) -> None:
        self._reader = asyncio.create_task(self._read_forever())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), 5)

    async def _read_forever(self) -> None:
        while True:
            try:
                pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
                await pubsub.subscribe(self.channel)
                self._ready.set()
                own, live_mark = self.process_id.encode(), LIVE_ONLY.encode()
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        origin, _, raw = message["data"].partition(b"\n")
                        live_only = origin.endswith(live_mark)
                        if live_only:
                            origin = origin[:-len(live_mark)]
                        if origin == own:
                            continue  # fanned out when it was published
                        try:
                            if self._wanted_here(raw):
                                for event in events_from_json(raw.partition(b"\n")[2] if raw[:1] not in b"[{" else raw):
                                    self._fan_out(event)
                        except (ValueError, KeyError, TypeError):
                            log.warning("ignoring malformed event on %s", self.channel)
                        if not live_only:
                            self.wake()  # another process committed events: work them now
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("Redis event subscription lost; reconnecting")
                await asyncio.sleep(1.0)

    def _wanted_here(self, raw: bytes) -> bool:
        """Whether a live listener of this process may want an event of a Redis message (header, newline,
        JSON; a message of an older version has no header: its JSON starts at once and is parsed)."""
        subs = [sub for sub in self._listeners if sub.everywhere]
        if not subs:
            return False  # nothing here fans events out (e.g. the WeCom pull runner)
        if raw[:1] in b"[{":
            return True
        entries = header_entries(raw.partition(b"\n")[0].decode())
        return any(sub.may_want(name, cid) for sub in subs for name, cid in entries)

    async def close(self) -> None:
        await super().close()
        if self._reader is not None and not self._reader.done():
            self._reader.cancel()
            # Bounded: a cancellation swallowed inside redis-py must not hang shutdown.
            await asyncio.wait({self._reader}, timeout=2)
