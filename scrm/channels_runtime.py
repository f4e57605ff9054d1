"""What the application lends channel adapters: the runtime, and a pool of adapter instances."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update

from channels.base import ChannelAdapter, InboxConfig
from channels.registry import get_adapter_class
from scrm.db.models import Delivery, Inbox, InboxState, Message, utcnow
from scrm.domain import IngestOutcome, OutboundMessage

if TYPE_CHECKING:
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

    async def push(self, topic: str, payload: str) -> None:
        """Live push to web chat visitors (scrm.services.webchat_push)."""
        from scrm.services.webchat_push import publish

        await publish(self.ctx, topic, payload)

    async def passive_reply(
        self, outcome: IngestOutcome, timeout: float, accept: Callable[[OutboundMessage], bool] | None = None
    ) -> OutboundMessage | None:
        """Claim the bot's first answer to `outcome` if it is queued within `timeout` seconds.

        Woken by `outbox.enqueued` for the conversation (no busy polling of the database while
        dozens of callbacks wait); a slow re-check covers a missed wake-up.
        """
        if outcome.message_id is None or outcome.conversation_id is None:
            return None
        marker = f"passive:{outcome.message_id}"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        waiters = _passive_waiters(self.ctx)
        if not outcome.duplicate and (
            sum(len(w) for w in waiters.values()) >= PASSIVE_MAX_WAITERS or self.ctx.bus.backlog > PASSIVE_MAX_BACKLOG
        ):
            # Overloaded (the bot is behind, so its answer would not be ready in time): answer the
            # platform now; the bot's reply goes out through the worker.
            return None
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
                    candidate = await s.scalar(
                        select(Delivery)
                        .join(Message, Message.id == Delivery.message_id)
                        .where(
                            Delivery.conversation_id == outcome.conversation_id,
                            Delivery.status == "queued",
                            Message.sender_kind == "bot",
                            Message.id > outcome.message_id,
                        )
                        .order_by(Delivery.id)
                        .limit(1)
                    )
                if candidate is not None:
                    if accept is not None and not accept(_outbound(candidate)):
                        return None  # the worker sends it through the customer-service API instead
                    if await self._claim_passive(candidate, marker):
                        return _outbound(candidate)
                remaining = deadline - loop.time()
                if remaining <= 0:
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
PASSIVE_MAX_WAITERS = 16  # callbacks held open at once per process waiting for the bot
PASSIVE_MAX_BACKLOG = 8  # listener calls already queued: a new message's bot answer would come late


def _passive_waiters(ctx: AppContext) -> dict[int, set[asyncio.Event]]:
    """Per-process waiters by conversation, woken by `outbox.enqueued` events."""
    waiters = ctx.extras.get(_WAITERS_KEY)
    if waiters is None:
        waiters = ctx.extras[_WAITERS_KEY] = {}

        async def wake(event: Any) -> None:
            for w in waiters.get(event.data.get("conversation_id"), ()):
                w.set()

        ctx.bus.subscribe(wake, "outbox.enqueued", everywhere=True)
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
            running.add_done_callback(lambda _t: self._loading.pop(inbox_id, None))
        return await asyncio.shield(running)

    async def _load_inbox(self, inbox_id: int) -> Inbox | None:
        async with self.ctx.db.session() as s:
            inbox = await s.get(Inbox, inbox_id)
        if len(self._inboxes) > 10_000:
            self._inboxes.clear()
        self._inboxes[inbox_id] = (asyncio.get_running_loop().time(), inbox)
        return inbox

    async def get(self, inbox_id: int) -> ChannelAdapter | None:
        """The adapter of an active inbox, or None when the inbox does not exist or is inactive."""
        inbox = await self.inbox(inbox_id)
        if inbox is None or not inbox.active:
            return None
        return self.for_inbox(inbox)

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
