"""Live pushes to web chat visitors: which process holds which visitor's sockets, and fan-out.

A push is only a nudge ("message 42 of conversation 7 is waiting"); each connection then reads
what it has not shown yet from the database. A lost push therefore loses nothing: the next push,
a reconnect or a long poll shows it. With Redis configured every push goes through one pub/sub
channel, so the worker that delivered a message (any process) reaches the visitor's socket (any
`scrm serve`); without Redis it is dispatched in this process. A stored reply's message.created
event (on the event bus, right after the commit that recorded the reply and its delivery) nudges the
visitor's connections too, so the answer is shown without waiting for the outbox worker's turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, Protocol

from scrm import events as ev

if TYPE_CHECKING:
    from scrm.context import AppContext

log = logging.getLogger("scrm.webchat")
CHANNEL = "scrm:webchat"


def channel_name(redis: Any) -> str:
    """Pub/sub channels are server-wide, not per database: installations sharing a Redis server
    (each with its own db number) must not push to each other's visitors."""
    db = getattr(getattr(redis, "connection_pool", None), "connection_kwargs", {}).get("db", 0)
    return f"{CHANNEL}:{db}"
HUB_KEY = "webchat_hub"
# A reply stored while none of its visitor's connections is here (the visitor's network blipped, every socket
# of a site reconnects) is remembered this long, so that the reconnect's first read goes with the new
# messages, ahead of the plain resyncs of the same storm; at most MISSED_MAX visitors and GONE_MAX
# conversations of lately closed connections are remembered (the oldest are forgotten: only an order of
# reads depends on it, never what is shown).
MISSED_TTL = 60.0
MISSED_MAX = 20_000
GONE_MAX = 20_000


class Listener(Protocol):
    """A visitor connection (WebSocket) as the hub sees it."""

    topic: str
    conversations: set[int]

    def notify(self, push: dict[str, Any]) -> None: ...


class VisitorHub:
    """The visitor connections and long polls of this process, by topic and by conversation."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.by_topic: dict[str, set[Listener]] = {}
        self.polls: dict[str, set[asyncio.Event]] = {}
        self.by_conversation: dict[int, set[Listener]] = {}
        # Conversations whose last connection here closed lately -> (its topic, until when) and the topics
        # a reply was pushed to meanwhile -> until when (insertion order is age order: pruned from the front).
        self.gone: dict[int, tuple[str, float]] = {}
        self.missed: dict[str, float] = {}
        self._reader: asyncio.Task[None] | None = None
        self._unsubscribe: list[Callable[[], None]] = []
        self.connections = 0
        self.ready = asyncio.Event()  # subscribed (always, without Redis)

    def add(self, conn: Listener) -> None:
        """Register a live connection (starts this process's subscription on first use)."""
        self.by_topic.setdefault(conn.topic, set()).add(conn)
        self.connections += 1
        self._start()

    def watch(self, conn: Listener, conversation_id: int) -> None:
        """`conn` shows this conversation: it gets the agents' typing and reading of it."""
        if conversation_id not in conn.conversations:
            conn.conversations.add(conversation_id)
            self.by_conversation.setdefault(conversation_id, set()).add(conn)

    def remove(self, conn: Listener) -> None:
        until = time.monotonic() + MISSED_TTL
        for cid in conn.conversations:
            watchers = self.by_conversation.get(cid)
            if watchers is not None:
                watchers.discard(conn)
                if not watchers:
                    del self.by_conversation[cid]
                    self.gone.pop(cid, None)  # re-inserted last: the dict stays in age order
                    self.gone[cid] = (conn.topic, until)
        _prune(self.gone, GONE_MAX, lambda entry: entry[1])
        group = self.by_topic.get(conn.topic)
        if group is not None and conn in group:
            group.discard(conn)
            self.connections -= 1
            if not group:
                del self.by_topic[conn.topic]

    @contextlib.asynccontextmanager
    async def listening(self, topic: str) -> AsyncIterator[asyncio.Event]:
        """A long poll's ear on `topic`: the event is set by the next push to it."""
        self._start()
        event = asyncio.Event()
        self.polls.setdefault(topic, set()).add(event)
        try:
            yield event
        finally:
            group = self.polls.get(topic)
            if group is not None:
                group.discard(event)
                if not group:
                    del self.polls[topic]

    @staticmethod
    async def wait_for(event: asyncio.Event, timeout: float) -> bool:
        """Wait until `event` (from listening()) is set (True) or `timeout` passes (False)."""
        try:
            async with asyncio.timeout(timeout):
                await event.wait()
            return True
        except TimeoutError:
            return False

    def note_missed(self, topic: str) -> None:
        """A reply for `topic` found no connection of it here: its next connection reads it first."""
        self.missed.pop(topic, None)
        self.missed[topic] = time.monotonic() + MISSED_TTL
        _prune(self.missed, MISSED_MAX, lambda until: until)

    def take_missed(self, topic: str) -> bool:
        """Was a reply for `topic` pushed lately while none of its connections was here? (Asked once, by the
        connection that opens: its first read then goes with the new messages, not the resyncs.)"""
        until = self.missed.pop(topic, None)
        return until is not None and until > time.monotonic()

    def dispatch(self, topic: str, push: dict[str, Any]) -> None:
        """Hand a push to this process's connections and long polls of `topic`."""
        if topic not in self.by_topic and topic not in self.polls:
            if push.get("t") == "m":
                self.note_missed(topic)
            return
        for conn in list(self.by_topic.get(topic, ())):
            conn.notify(push)
        for event in self.polls.get(topic, ()):
            event.set()

    def _local_conversation(self, cid: Any) -> list[Listener]:
        return list(self.by_conversation.get(cid, ())) if isinstance(cid, int) else []

    def _start(self) -> None:
        if self._unsubscribe or self._reader is not None:
            return
        bus = self.ctx.bus

        def wanted(event: ev.Event) -> bool:
            data = event.data
            if data.get("conversation_id") not in self.by_conversation:
                # A reply for a visitor whose connection closed lately: remembered for the reconnect.
                cid = data.get("conversation_id")
                gone = self.gone.get(cid) if isinstance(cid, int) else None
                if gone is not None and event.name == ev.MESSAGE_CREATED and data.get("direction") == "out":
                    self.note_missed(gone[0])
                return False
            if event.name == ev.TYPING and (data.get("private") or not data.get("agent_id")):
                return False  # notes and the visitor's own typing stay with the agents
            if event.name == ev.CONVERSATION_UPDATED and data.get("changed") == ["activity"]:
                return False  # a new message: its own push brings it (status and reading matter here)
            if event.name == ev.MESSAGE_CREATED:
                return data.get("direction") == "out" and isinstance(data.get("message_id"), int)
            return True

        async def on_event(event: ev.Event) -> None:
            cid = event.data.get("conversation_id")
            if event.name == ev.MESSAGE_CREATED:
                # A reply (bot or agent) is stored and its delivery recorded: the visitor's connections
                # read it now instead of at the worker's push, which then finds it shown.
                push = {"t": "m", "c": cid, "m": event.data["message_id"]}
            else:
                push = {"t": "typing" if event.name == ev.TYPING else "conversation", "c": cid,
                        "name": event.data.get("agent_name")}
            for conn in self._local_conversation(cid):
                conn.notify(push)

        # Agents' typing and reading are passing signals, and a stored reply a nudge to read it: the event
        # bus carries them to every process right after their commit.
        def interested(_name: str, conversation_id: int | None) -> bool:  # other processes' events parsed only then
            return conversation_id in self.by_conversation or conversation_id in self.gone

        self._unsubscribe = [
            bus.subscribe(on_event, name, everywhere=True, wants=wanted, interested=interested)
            for name in (ev.MESSAGE_CREATED, ev.TYPING, ev.CONVERSATION_UPDATED)]
        self.ctx.extras.setdefault("on_close", []).append(self.close)
        if self.ctx.redis is not None:
            self._reader = asyncio.get_running_loop().create_task(self._read_forever())
        else:
            self.ready.set()

    async def _read_forever(self) -> None:
        assert self.ctx.redis is not None  # started only with Redis
        backoff = 0.5
        while True:
            pubsub = self.ctx.redis.pubsub()
            try:
                await pubsub.subscribe(channel_name(self.ctx.redis))
                self._everyone_syncs()
                self.ready.set()
                backoff = 0.5
                async for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    raw = message["data"]
                    topic, _, body = (raw.decode() if isinstance(raw, bytes) else str(raw)).partition("\n")
                    if topic in self.by_topic or topic in self.polls:
                        try:
                            self.dispatch(topic, json.loads(body))
                        except ValueError:
                            log.warning("dropping a malformed web chat push")
                    elif body.startswith(MESSAGE_PUSH):  # a new message for a visitor not connected here now
                        self.note_missed(topic)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Redis restarted: resubscribe with backoff
                self.ready.clear()
                log.warning("web chat push subscription lost (%s); retrying in %.1fs", type(exc).__name__, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    def _everyone_syncs(self) -> None:
        """Pushes sent before the subscription was active were missed: everyone here catches up. (A function
        of its own: a connection left in the subscription's loop variables stayed alive after it closed.)"""
        for topic, group in list(self.by_topic.items()):
            for conn in list(group):
                conn.notify({"t": "sync"})
            for event in self.polls.get(topic, ()):
                event.set()

    async def close(self) -> None:
        """Stop the subscription (server shutdown)."""
        for stop in self._unsubscribe:
            stop()
        self._unsubscribe = []
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
            self._reader = None


MESSAGE_PUSH = '{"t": "m"'  # how json.dumps starts a new message's push (publish's callers write them so)


def _prune(entries: dict[Any, Any], limit: int, until: Callable[[Any], float]) -> None:
    """Drop the expired entries at the front of an age-ordered dict, and the oldest beyond `limit`."""
    now = time.monotonic()
    while entries:
        key = next(iter(entries))
        if len(entries) <= limit and until(entries[key]) > now:
            return
        del entries[key]


def hub_for(ctx: AppContext) -> VisitorHub:
    """This process's visitor hub."""
    hub: VisitorHub | None = ctx.extras.get(HUB_KEY)
    if hub is None:
        hub = ctx.extras[HUB_KEY] = VisitorHub(ctx)
    return hub


async def publish(ctx: AppContext, topic: str, payload: str) -> None:
    """Push to a visitor's connections wherever they are (Redis), or in this process. Raises when Redis
    refused it (this process's connections got it all the same). Its own round trip: the outbox worker's
    sends through the shared pipeline of publish_soon() lagged seconds behind (bench/web_chat.py)."""
    if ctx.redis is None:
        _dispatch_here(ctx, topic, payload)
        return
    try:
        await ctx.redis.publish(channel_name(ctx.redis), f"{topic}\n{payload}")
    except Exception:
        _dispatch_here(ctx, topic, payload)
        raise


def publish_soon(ctx: AppContext, topic: str, payload: str) -> None:
    """publish() without waiting for it (best effort: a failure is logged; this process's connections get
    the push all the same): the visitor's acknowledgement does not wait for the echo to their other tabs."""
    if ctx.redis is None:
        _dispatch_here(ctx, topic, payload)
        return
    _publisher(ctx).add(topic, payload)


def _dispatch_here(ctx: AppContext, topic: str, payload: str) -> None:
    hub: VisitorHub | None = ctx.extras.get(HUB_KEY)
    if hub is not None:
        hub.dispatch(topic, json.loads(payload))


PUBLISHER_KEY = "webchat_publisher"
PIPELINE_MAX = 500  # pushes per Redis round trip


class Publisher:
    """This process's publish_soon() pushes to Redis, those queued while one round trip is in flight sent
    together in the next (a pipeline): at 100 visitor messages a second each one's echo to the visitor's
    other tabs was a round trip (and a pooled connection) apiece. Nobody waits for them: a failure is
    logged, and this process's connections get the pushes all the same."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.queue: list[tuple[str, str]] = []
        self._task: asyncio.Task[None] | None = None

    def add(self, topic: str, payload: str) -> None:
        self.queue.append((topic, payload))
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            while self.queue:
                batch, self.queue = self.queue[:PIPELINE_MAX], self.queue[PIPELINE_MAX:]
                try:
                    await self._send(batch)
                except Exception as exc:  # noqa: BLE001 - best effort; this process's connections get them
                    for topic, payload in batch:
                        _dispatch_here(self.ctx, topic, payload)
                    log.warning("web chat push failed (%s)", type(exc).__name__)
        finally:
            self._task = None

    async def _send(self, batch: list[tuple[str, str]]) -> None:
        redis = self.ctx.redis
        assert redis is not None  # queued only with Redis
        channel = channel_name(redis)
        if len(batch) == 1:
            topic, payload = batch[0]
            await redis.publish(channel, f"{topic}\n{payload}")
            return
        pipe = redis.pipeline(transaction=False)
        for topic, payload in batch:
            pipe.publish(channel, f"{topic}\n{payload}")
        await pipe.execute()


def _publisher(ctx: AppContext) -> Publisher:
    found: Publisher | None = ctx.extras.get(PUBLISHER_KEY)
    if found is None:
        found = ctx.extras[PUBLISHER_KEY] = Publisher(ctx)
    return found
