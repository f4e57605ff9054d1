"""Shared cache with locks: Redis across processes, or memory in the embedded default."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from scrm.redis_client import unavailable

log = logging.getLogger("scrm.cache")


class MemoryCache:
    """Process-local cache (embedded default: one process)."""

    def __init__(self) -> None:
        self._data: dict[str, tuple[str, float | None]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def get(self, key: str) -> str | None:
        item = self._data.get(key)
        if item is None:
            return None
        value, expires = item
        if expires is not None and expires <= time.monotonic():
            self._data.pop(key, None)
            return None
        return value

    async def set(self, key: str, value: str, ttl: float | None = None) -> None:
        self._data[key] = (value, time.monotonic() + ttl if ttl else None)

    async def delete(self, key: str) -> None:
        self._data.pop(key, None)

    @contextlib.asynccontextmanager
    async def lock(self, key: str, timeout: float = 30.0) -> AsyncIterator[None]:
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with asyncio.timeout(timeout):
            await lock.acquire()
        try:
            yield
        finally:
            lock.release()

    async def try_acquire(self, key: str, owner: str, ttl: float) -> bool:
        """Take or renew a leadership lease (pollers); True while `owner` holds it."""
        current = await self.get(key)
        if current is None or current == owner:
            await self.set(key, owner, ttl)
            return True
        return False


class RedisCache:
    """Cache and locks in Redis, shared by every process.

    While Redis cannot be reached (scrm/redis_client.py: short timeouts, then failing at once) the
    cache degrades to a cache that keeps nothing: `get` misses and `set`/`delete` do nothing, so its
    users fetch what they need themselves. Locks and leases raise: their callers must not assume a
    mutual exclusion nobody can grant (the periodic jobs and pollers retry with backoff).
    """

    PREFIX = "scrm:cache:"

    ACQUIRES_IN_FLIGHT = 2  # round trips of lease calls at once; calls arriving meanwhile share the next
    ACQUIRE_BATCH = 500

    def __init__(self, redis: Any) -> None:
        self.redis = redis
        self._acquires: list[tuple[str, str, float, asyncio.Future[Any]]] = []
        self._acquiring: set[asyncio.Task[None]] = set()

    async def get(self, key: str) -> str | None:
        try:
            value = await self.redis.get(self.PREFIX + key)
        except Exception as exc:
            if not unavailable(exc):
                raise
            log.debug("cache get %s: Redis unavailable, a miss", key)
            return None
        return value.decode() if isinstance(value, bytes) else value

    async def set(self, key: str, value: str, ttl: float | None = None) -> None:
        try:
            await self.redis.set(self.PREFIX + key, value, px=int(ttl * 1000) if ttl else None)
        except Exception as exc:
            if not unavailable(exc):
                raise
            log.debug("cache set %s: Redis unavailable, not kept", key)

    async def delete(self, key: str) -> None:
        try:
            await self.redis.delete(self.PREFIX + key)
        except Exception as exc:
            if not unavailable(exc):
                raise
            log.debug("cache delete %s: Redis unavailable", key)

    @contextlib.asynccontextmanager
    async def lock(self, key: str, timeout: float = 30.0) -> AsyncIterator[None]:
        lock = self.redis.lock(self.PREFIX + "lock:" + key, timeout=timeout, blocking_timeout=timeout)
        if not await lock.acquire():
            raise TimeoutError(f"could not lock {key}")
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                await lock.release()

    _RENEW = """
    local cur = redis.call('GET', KEYS[1])
    if not cur or cur == ARGV[1] then
      redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
      return 1
    end
    return 0
    """

    async def try_acquire(self, key: str, owner: str, ttl: float) -> bool:
        """Take or renew a leadership lease (one poller per inbox across processes; the callbacks' replay
        check, channels/replay.py, where dozens arrive at once). Calls made while earlier ones are on their
        way to Redis go together in one pipeline: a burst of callbacks costs a few round trips, not one each."""
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._acquires.append((key, owner, ttl, done))
        if len(self._acquiring) < self.ACQUIRES_IN_FLIGHT:
            task = asyncio.get_running_loop().create_task(self._send_acquires())
            self._acquiring.add(task)
            task.add_done_callback(self._acquiring.discard)
        return bool(await done)

    async def _send_acquires(self) -> None:
        while self._acquires:
            batch = self._acquires[: self.ACQUIRE_BATCH]
            del self._acquires[: self.ACQUIRE_BATCH]
            results: list[Any]
            try:
                if len(batch) == 1:
                    key, owner, ttl, _ = batch[0]
                    results = [await self.redis.eval(self._RENEW, 1, self.PREFIX + key, owner, int(ttl * 1000))]
                else:
                    pipe = self.redis.pipeline(transaction=False)
                    for key, owner, ttl, _ in batch:
                        pipe.eval(self._RENEW, 1, self.PREFIX + key, owner, int(ttl * 1000))
                    results = await pipe.execute(raise_on_error=False)
            except BaseException as exc:  # every caller of the batch gets the error (theirs to handle)
                for *_, done in batch:
                    if not done.done():
                        done.set_exception(exc if isinstance(exc, Exception) else RuntimeError("cancelled"))
                if not isinstance(exc, Exception):
                    raise
                continue
            for (*_, done), result in zip(batch, results, strict=True):
                if done.done():
                    continue  # its caller gave up (cancelled)
                if isinstance(result, Exception):
                    done.set_exception(result)
                else:
                    done.set_result(result)
