"""Builds the application context: the one place that wires the layers together at start.

It may import anything in scrm/ (it sits on top); nothing below it imports it.
"""

from __future__ import annotations

from scrm import event_log, secret_box
from scrm.cache import MemoryCache, RedisCache
from scrm.channels_runtime import AdapterPool
from scrm.context import AppContext
from scrm.db.database import Database
from scrm.events import EventBus, EventLog, RedisEventBus
from scrm.ratelimit import MemoryRateLimiter, RedisRateLimiter, WindowCounter
from scrm.redis_client import connect
from scrm.settings import Settings
from scrm.storage import LocalFileStorage

# The event log's functions the bus uses: the bus sits below the log (whose consumer calls the listeners).
EVENT_LOG = EventLog(append=event_log.append, unworked=event_log.unworked, consumer=event_log.EventConsumer,
                     listening=event_log.listening)


async def build_context(settings: Settings) -> AppContext:
    """Create the context for `settings` (embedded default without Redis, or Redis-backed)."""
    # Before anything touches the database: without a usable key (PostgreSQL and none set) this stops.
    secret_box.install(secret_box.resolve_keys(settings))
    db = Database(settings.database.url, pool_size=settings.database.pool_size, echo=settings.database.echo)
    redis = None
    if settings.redis.url:
        # Short timeouts and a breaker: no request waits on a Redis that stopped answering.
        redis = connect(settings.redis.url)
        bus: EventBus = RedisEventBus(redis)
        cache: MemoryCache | RedisCache = RedisCache(redis)
        limiter: MemoryRateLimiter | RedisRateLimiter = RedisRateLimiter(redis)
    else:
        bus = EventBus()
        cache = MemoryCache()
        limiter = MemoryRateLimiter()
    bus.attach(db, settings.events, EVENT_LOG)
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
