"""The application context: the resources every service, listener and worker shares in a process.

The type only: it sits below the services that take it. scrm.bootstrap builds one (and wires in what
lives above the services: the channel adapters' runtime and the event log's consumer).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import aiohttp

from scrm.cache import MemoryCache, RedisCache
from scrm.db.database import Database
from scrm.events import EventBus
from scrm.ratelimit import MemoryRateLimiter, RedisRateLimiter, WindowCounter
from scrm.settings import Settings
from scrm.storage import LocalFileStorage

if TYPE_CHECKING:
    from datetime import datetime

    from channels.base import Capabilities, ChannelAdapter
    from scrm.db.models import Inbox

log = logging.getLogger("scrm")


class ChannelRules(Protocol):
    """What services need to know of a channel type, handed in as data (services never import the adapters)."""

    def capabilities(self, channel_type: str) -> Capabilities | None:
        """What a channel type can do (None: not available in this build)."""
        ...

    def reply_blocked(self, channel_type: str, identity_attributes: Mapping[str, Any],
                      last_inbound_at: datetime | None = None) -> str | None:
        """Why the platform would refuse a reply to this identity now (its session rules), or None."""
        ...


class Adapters(ChannelRules, Protocol):
    """The channel adapters of the inboxes (scrm.channels_runtime.AdapterPool, installed by scrm.bootstrap)."""

    async def inbox(self, inbox_id: int) -> Inbox | None: ...

    async def get(self, inbox_id: int) -> ChannelAdapter | None: ...

    async def active(self, channel_type: str) -> list[Inbox]: ...

    def for_inbox(self, inbox: Inbox) -> ChannelAdapter: ...

    def forget(self, inbox_id: int) -> None: ...

    async def close(self) -> None: ...


@dataclass
class AppContext:
    settings: Settings
    db: Database
    bus: EventBus
    cache: MemoryCache | RedisCache
    limiter: MemoryRateLimiter | RedisRateLimiter
    counter: WindowCounter
    storage: LocalFileStorage
    redis: Any | None = None
    http: aiohttp.ClientSession | None = None
    process_id: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    # Set by scrm.bootstrap.build_context right after (the pool holds the context it lends its adapters).
    adapters: Adapters = field(init=False)
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def http_session(self) -> aiohttp.ClientSession:
        """The one session for server-side requests, guarded by the outbound policy (scrm/outbound.py)."""
        if self.http is None or self.http.closed:
            from scrm.outbound import OutboundPolicy, guarded_session

            policy = OutboundPolicy(self.settings.security.outbound_allow)
            self.http = guarded_session(policy, timeout=30, resolver=self.extras.get("outbound_resolver"))
        return self.http

    async def close(self) -> None:
        """Release every resource (idempotent)."""
        batcher = self.extras.get("group_commit")
        if batcher is not None:
            await batcher.close()  # messages already queued are committed (and answered) first
        for closer in self.extras.pop("on_close", []):  # feature resources (web chat's push subscription)
            await closer()
        adapters = getattr(self, "adapters", None)
        if adapters is not None:
            await adapters.close()
        await self.bus.close()
        if self.http is not None and not self.http.closed:
            await self.http.close()
        if self.redis is not None:
            await self.redis.aclose()
        await self.db.dispose()
