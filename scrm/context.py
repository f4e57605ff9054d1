"""The application context: the resources every service, listener and worker shares in a process."""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from scrm.cache import MemoryCache, RedisCache
from scrm.db.database import Database
from scrm.events import EventBus, RedisEventBus
from scrm.ratelimit import MemoryRateLimiter, RedisRateLimiter, WindowCounter
from scrm.settings import Settings
from scrm.storage import LocalFileStorage

log = logging.getLogger("scrm")


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
    # Set by scrm.channels_runtime.AdapterPool at start (avoids an import cycle).
    adapters: Any = None
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
        if self.adapters is not None:
            await self.adapters.close()
        await self.bus.close()
        if self.http is not None and not self.http.closed:
            await self.http.close()
        if self.redis is not None:
            await self.redis.aclose()
        await self.db.dispose()


async def build_context(settings: Settings) -> AppContext:
    """Create the context for `settings` (embedded default without Redis, or Redis-backed)."""
    from scrm import secret_box
    from scrm.channels_runtime import AdapterPool

    # Before anything touches the database: without a usable key (PostgreSQL and none set) this stops.
    secret_box.install(secret_box.resolve_keys(settings))
    db = Database(settings.database.url, pool_size=settings.database.pool_size, echo=settings.database.echo)
    redis = None
    if settings.redis.url:
        from scrm.redis_client import connect

        # Short timeouts and a breaker: no request waits on a Redis that stopped answering.
        redis = connect(settings.redis.url)
        bus: EventBus = RedisEventBus(redis)
        cache: MemoryCache | RedisCache = RedisCache(redis)
        limiter: MemoryRateLimiter | RedisRateLimiter = RedisRateLimiter(redis)
    else:
        bus = EventBus()
        cache = MemoryCache()
        limiter = MemoryRateLimiter()
    bus.attach(db, settings.events)
    ctx = AppContext(
        settings=settings,
        db=db,
        bus=bus,
        cache=cache,
        limiter=limiter,
        counter=WindowCounter(redis),
        storage=LocalFileStorage(settings.storage.path),
        redis=redis,
    )
    ctx.adapters = AdapterPool(ctx)
    await bus.start()
    return ctx
