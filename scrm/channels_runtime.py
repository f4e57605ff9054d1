"""What the application lends channel adapters: the runtime, and a pool of adapter instances."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update

from channels.base import Capabilities, ChannelAdapter, InboxConfig
from channels.registry import get_adapter_class
from scrm.db.models import Delivery, Inbox, InboxState, Message, utcnow
from scrm.domain import IngestOutcome, OutboundMessage

if TYPE_CHECKING:
    from datetime import datetime

    from scrm.context import AppContext

log = logging.getLogger("scrm.channels")


class InboxDurableState:
    """DurableState backed by the inbox_state table."""

    def __init__(self, ctx: AppContext, inbox_id: int) -> None:
        self.ctx = ctx
        self.inbox_id = inbox_id

    async def get(self, key: str) -> Any | None:
        async with self.ctx.db.session() as s:
            row = await s.get(InboxState, (self.inbox_id, key))
            return None if row is None else row.value.get("v")

    async def set(self, key: str, value: Any) -> None:
        async with self.ctx.db.transaction() as s:
            row = await s.get(InboxState, (self.inbox_id, key))
            if row is None:
                s.add(InboxState(inbox_id=self.inbox_id, key=key, value={"v": value}))
            else:
                row.value = {"v": value}


class AppChannelRuntime:
    """ChannelRuntime implementation for one inbox."""

    def __init__(self, ctx: AppContext, inbox_id: int) -> None:
        self.ctx = ctx
        self.inbox_id = inbox_id
        self.state = InboxDurableState(ctx, inbox_id)

    @property
    def http(self) -> Any:
        return self.ctx.http_session

    @property
    def storage(self) -> Any:
        return self.ctx.storage

    @property
    def cache(self) -> Any:
        return self.ctx.cache

    @property
    def public_url(self) -> str | None:
        return self.ctx.settings.server.public_url

    def expects_passive_reply(self) -> bool:
        """Whether a callback arriving now may wait for the bot (see passive_reply); True reserves one
        of this process's PASSIVE_MAX_WAITERS places until its passive_reply returns (or 5 s pass).

        No place when too many callbacks already wait here, or when the bot has answered too late
        lately: measured by the callbacks themselves (_PassiveRecord), wherever the bot runs (this
        process, or `scrm worker` processes behind Redis).
        """
        now = asyncio.get_running_loop().time()
        places = _passive_places(self.ctx)
        while places and places[0] <= now:
            places.popleft()  # a reservation whose callback never came to wait (its commit failed)
        if len(places) >= PASSIVE_MAX_WAITERS or _passive_record(self.ctx).bot_is_late(now):
            return False
        places.append(now + PASSIVE_RESERVATION_SECONDS)
        return True

    async def request_pull(self, data: Any) -> None:
        """Record the owed pull durably (committed before the webhook is answered) and start it."""
        if data.get("kind") == "external_contact":
            from scrm.services.wecom.contacts import on_change

            await on_change(self.ctx, self.inbox_id, data)
            return
        from scrm.services.wecom.kf_sync import request_pull

        await request_pull(self.ctx, self.inbox_id, dict(data))

    async def push(self, topic: str, payload: str) -> None:
        """Live push to web chat visitors (scrm.services.webchat.push)."""
        from scrm.services.webchat.push import publish

        await publish(self.ctx, topic, payload)

    async def passive_reply(
        self, outcome: IngestOutcome, timeout: float, accept: Callable[[OutboundMessage], bool] | None = None
    ) -> OutboundMessage | None:
        """Claim the bot's first answer to `outcome` if it is queued within `timeout` seconds.

        Woken by `outbox.enqueued` for the conversation (no busy polling of the database while
        dozens of callbacks wait); a slow re-check covers a missed wake-up. The answer's delivery
        is not due for the worker while the callback waits (its message carries the deadline, see
        outbox.passive_hold), so the worker does not take it first. If it does all the same (the
        answer came after the deadline the bot saw, or another path sent it), the callback answers
        at once instead of waiting out its timeout. On the way out, whatever is still held for
        this conversation is handed to the worker at once.
        """
        if outcome.message_id is None or outcome.conversation_id is None:
            return None
        marker = f"passive:{outcome.message_id}"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        waiters = _passive_waiters(self.ctx)
        wake = asyncio.Event()
        waiters.setdefault(outcome.conversation_id, set()).add(wake)
        try:
            while True:
                async with self.ctx.db.session() as s:
                    given = await s.scalar(
                        select(Delivery).where(Delivery.inbox_id == self.inbox_id, Delivery.external_id == marker))
                    if given is not None:
                        return _outbound(given)
                    if outcome.duplicate:
                        return None
                    answer = await s.scalar(
                        select(Delivery)
                        .join(Message, Message.id == Delivery.message_id)
                        .where(
                            Delivery.conversation_id == outcome.conversation_id,
                            Message.sender_kind == "bot",
                            Message.id > outcome.message_id,
                        )
                        .order_by(Delivery.id)
                        .limit(1)
                    )
                if answer is not None:
                    _passive_record(self.ctx).add(late=False)
                    if answer.status != "queued":
                        log.debug("passive reply %s: the worker has the answer already", marker)
                        return None  # nothing to wait for
                    if accept is not None and not accept(_outbound(answer)):
                        return None  # the worker sends it through the customer-service API instead
                    if await self._claim_passive(answer, marker):
                        return _outbound(answer)
                    log.debug("passive reply %s: the worker claimed the answer first", marker)
                    return None  # answer the platform now
                remaining = deadline - loop.time()
                if remaining <= 0:
                    log.debug("passive reply %s: no answer within %.1f s", marker, timeout)
                    _passive_record(self.ctx).add(late=True)
                    return None
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), min(remaining, 0.5))
        finally:
            group = waiters.get(outcome.conversation_id)
            if group is not None:
                group.discard(wake)
                if not group:
                    waiters.pop(outcome.conversation_id, None)
            places = _passive_places(self.ctx)
            if places:
                places.popleft()  # this callback's place (any one: only their number counts)
            if not outcome.duplicate:
                await self._release_held(outcome)

    async def _release_held(self, outcome: IngestOutcome) -> None:
        """Answers still held back for this callback become due now, and the worker is woken."""
        from scrm import events as ev
        from scrm.services.uow import unit_of_work

        now = utcnow()
        held = (
            Delivery.conversation_id == outcome.conversation_id,
            Delivery.status == "queued",
            Delivery.attempts == 0,
            Delivery.next_attempt_at > now,
            Delivery.message_id > outcome.message_id,
        )
        try:
            async with self.ctx.db.session() as s:  # a read first: most callbacks leave nothing held
                if await s.scalar(select(Delivery.id).where(*held).limit(1)) is None:
                    return
            async with unit_of_work(self.ctx) as tx:
                done = await tx.session.execute(update(Delivery).where(*held).values(next_attempt_at=now))
                if done.rowcount:  # type: ignore[attr-defined]
                    tx.emit(ev.OUTBOX_ENQUEUED, inbox_id=self.inbox_id, conversation_id=outcome.conversation_id)
        except Exception:  # the hold ends by itself at its deadline: a failure here only delays the answer
            log.exception("could not hand held deliveries of conversation %s to the worker", outcome.conversation_id)

    async def _claim_passive(self, candidate: Delivery, marker: str) -> bool:
        async with self.ctx.db.transaction() as s:
            done = await s.execute(
                update(Delivery)
                .where(Delivery.id == candidate.id, Delivery.status == "queued")
                .values(status="sent", external_id=marker, sent_at=utcnow(), claimed_by="passive-reply")
            )
            if done.rowcount != 1:  # type: ignore[attr-defined]
                return False  # the worker took it first
            await s.execute(update(Message).where(Message.id == candidate.message_id).values(delivery_status="sent"))
            return True


_WAITERS_KEY = "passive_reply_waiters"
_RECORD_KEY = "passive_reply_record"
_PLACES_KEY = "passive_reply_places"
PASSIVE_MAX_WAITERS = 16  # callbacks held open at once per process waiting for the bot
PASSIVE_RESERVATION_SECONDS = 5.0  # WeChat's own deadline: no callback waits longer
PASSIVE_SAMPLE = 12  # the last waits that tell whether the bot answers in time
PASSIVE_PROBE_SECONDS = 2.0  # while the bot is late, one callback in this interval waits to re-measure


class _PassiveRecord:
    """How this process's last passive waits ended: the bot's answer came in time, or it did not.

    When most of the last PASSIVE_SAMPLE waits ran out (the bot is behind: a burst, a slow FAQ
    index), new callbacks answer `success` at once and the answers go through the worker; one
    callback every PASSIVE_PROBE_SECONDS still waits, so the record notices when the bot is back.
    """

    def __init__(self) -> None:
        self.late: deque[bool] = deque(maxlen=PASSIVE_SAMPLE)
        self.probe_at = 0.0

    def add(self, *, late: bool) -> None:
        """Record one wait's outcome."""
        self.late.append(late)

    def bot_is_late(self, now: float) -> bool:
        """Whether a new callback should not wait (and, if not, whether it is this interval's probe)."""
        if len(self.late) < PASSIVE_SAMPLE // 2 or sum(self.late) * 4 < len(self.late) * 3:
            return False
        if now >= self.probe_at:
            self.probe_at = now + PASSIVE_PROBE_SECONDS
            return False
        return True


def _passive_places(ctx: AppContext) -> deque[float]:
    """Expiry times of the waiting places reserved in this process, oldest first."""
    places = ctx.extras.get(_PLACES_KEY)
    if places is None:
        places = ctx.extras[_PLACES_KEY] = deque()
    return places  # type: ignore[no-any-return]


def _passive_record(ctx: AppContext) -> _PassiveRecord:
    record = ctx.extras.get(_RECORD_KEY)
    if record is None:
        record = ctx.extras[_RECORD_KEY] = _PassiveRecord()
    return record  # type: ignore[no-any-return]


def _passive_waiters(ctx: AppContext) -> dict[int, set[asyncio.Event]]:
    """Per-process waiters by conversation, woken by `outbox.enqueued` events."""
    waiters = ctx.extras.get(_WAITERS_KEY)
    if waiters is None:
        waiters = ctx.extras[_WAITERS_KEY] = {}

        async def wake(event: Any) -> None:
            for w in waiters.get(event.data.get("conversation_id"), ()):
                w.set()

        ctx.bus.subscribe(wake, "outbox.enqueued", everywhere=True, interested=lambda _name, cid: cid in waiters)
    return waiters


def _outbound(d: Delivery) -> OutboundMessage:
    from scrm.services.outbox import outbound_from_delivery

    return outbound_from_delivery(d)


class AdapterPool:
    """One adapter instance per inbox, rebuilt when the inbox changes."""

    INBOX_TTL = 2.0  # seconds an inbox row is reused by webhooks (saves a query per request)

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self._adapters: dict[int, tuple[Any, ChannelAdapter]] = {}
        self._inboxes: dict[int, tuple[float, Inbox | None]] = {}
        self._loading: dict[int, asyncio.Task[Inbox | None]] = {}
        self._active: tuple[float, tuple[Inbox, ...]] | None = None
        self._loading_active: asyncio.Task[tuple[Inbox, ...]] | None = None
        self._changes = 0  # counts `forget` calls: a load begun before one must not cache what it read

    async def inbox(self, inbox_id: int) -> Inbox | None:
        """The inbox row, cached briefly: edits reach every process within INBOX_TTL seconds.

        One lookup per inbox at a time: when the entry expires under load, the requests arriving
        meanwhile share that query instead of each sending their own.
        """
        loop = asyncio.get_running_loop()
        cached = self._inboxes.get(inbox_id)
        if cached and loop.time() - cached[0] < self.INBOX_TTL:
            return cached[1]
        running = self._loading.get(inbox_id)
        if running is None:
            running = self._loading[inbox_id] = loop.create_task(self._load_inbox(inbox_id))
            running.add_done_callback(lambda task: self._loaded(inbox_id, task))
        return await asyncio.shield(running)

    def _loaded(self, inbox_id: int, task: asyncio.Task[Inbox | None]) -> None:
        if self._loading.get(inbox_id) is task:  # not a newer load started after `forget`
            del self._loading[inbox_id]

    async def _load_inbox(self, inbox_id: int) -> Inbox | None:
        changes = self._changes
        async with self.ctx.db.session() as s:
            inbox = await s.get(Inbox, inbox_id)
        if changes == self._changes:  # else an inbox changed meanwhile: what was read may be stale
            if len(self._inboxes) > 10_000:
                self._inboxes.clear()
            self._inboxes[inbox_id] = (asyncio.get_running_loop().time(), inbox)
        return inbox

    def forget(self, inbox_id: int) -> None:
        """An inbox was just changed by this process (committed): its next request reads the new row
        instead of the cached one (other processes see the change within INBOX_TTL). A load already
        running may have read the old row: it still answers its waiters, but caches nothing, and the
        next request starts a load of its own."""
        self._changes += 1
        self._inboxes.pop(inbox_id, None)
        self._loading.pop(inbox_id, None)
        self._active = None
        self._loading_active = None

    async def active(self, channel_type: str) -> list[Inbox]:
        """The active inboxes of a channel type, cached like `inbox` (INBOX_TTL): work that only some
        channels need (OA UnionID lookups, WeCom tag pushes) asks this before a query per contact."""
        loop = asyncio.get_running_loop()
        cached = self._active
        if cached is None or loop.time() - cached[0] >= self.INBOX_TTL:
            running = self._loading_active
            if running is None:
                running = self._loading_active = loop.create_task(self._load_active())
                running.add_done_callback(self._loaded_active)
            # The rows the load read (the cache may be dropped again before this task resumes).
            rows = await asyncio.shield(running)
        else:
            rows = cached[1]
        return [inbox for inbox in rows if inbox.channel_type == channel_type]

    def _loaded_active(self, task: asyncio.Task[tuple[Inbox, ...]]) -> None:
        if self._loading_active is task:
            self._loading_active = None

    async def _load_active(self) -> tuple[Inbox, ...]:
        changes = self._changes
        async with self.ctx.db.session() as s:
            rows = tuple((await s.scalars(select(Inbox).where(Inbox.active.is_(True)))).all())
        if changes == self._changes:
            self._active = (asyncio.get_running_loop().time(), rows)
        return rows

    async def get(self, inbox_id: int) -> ChannelAdapter | None:
        """The adapter of an active inbox, or None when the inbox does not exist or is inactive."""
        inbox = await self.inbox(inbox_id)
        if inbox is None or not inbox.active:
            return None
        return self.for_inbox(inbox)

    def capabilities(self, channel_type: str) -> Capabilities | None:
        """What a channel type can do, or None when its adapter is not available in this build."""
        try:
            return get_adapter_class(channel_type).capabilities
        except KeyError:
            return None

    def reply_blocked(self, channel_type: str, identity_attributes: Mapping[str, Any],
                      last_inbound_at: datetime | None = None) -> str | None:
        """Why the platform would refuse a reply to this identity now (its session rules), or None."""
        try:
            return get_adapter_class(channel_type).reply_blocked(identity_attributes, last_inbound_at)
        except KeyError:
            return None

    def for_inbox(self, inbox: Inbox) -> ChannelAdapter:
        version = (inbox.updated_at, inbox.channel_type)
        cached = self._adapters.get(inbox.id)
        if cached and cached[0] == version:
            return cached[1]
        cls = get_adapter_class(inbox.channel_type)
        config = InboxConfig(
            id=inbox.id, name=inbox.name, channel_type=inbox.channel_type, settings=inbox.settings, secrets=inbox.secrets
        )
        adapter = cls(config, AppChannelRuntime(self.ctx, inbox.id))
        if cached:
            asyncio.get_running_loop().create_task(cached[1].close())
        self._adapters[inbox.id] = (version, adapter)
        return adapter

    async def close(self) -> None:
        for _, adapter in self._adapters.values():
            try:
                await adapter.close()
            except Exception:  # noqa: BLE001
                log.exception("closing adapter failed")
        self._adapters.clear()
