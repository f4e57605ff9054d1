"""Send-rate limiting with GCRA (a leaky bucket without a background drip).

Several limits are checked together (Telegram: 30/s per bot AND 1/s per chat) and consumed only
when all allow, so a delivery that must wait never uses up another limit's budget. The Redis
version runs the same algorithm in one Lua script on Redis' clock, shared by every worker.
`tolerance` is GCRA's burst tolerance: a send may come that many seconds ahead of the smooth
schedule, so a sender that woke up late catches up instead of losing its slot for good.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from channels.base import RateLimit
from scrm.redis_client import unavailable


class MemoryRateLimiter:
    """Process-local limiter (embedded default)."""

    def __init__(self) -> None:
        self._tat: dict[str, float] = {}

    async def acquire(self, limits: Sequence[RateLimit], tolerance: float = 0.0) -> float:
        """Consume one send from every limit and return 0, or return seconds to wait (nothing consumed)."""
        if not limits:
            return 0.0
        now = time.monotonic()
        wait = 0.0
        for limit in limits:
            tat = self._tat.get(limit.key, now)
            wait = max(wait, tat - tolerance - now)
        if wait > 0:
            return wait
        for limit in limits:
            interval = limit.per / limit.rate
            self._tat[limit.key] = max(self._tat.get(limit.key, now), now) + interval
        return 0.0


class RedisRateLimiter:
    """GCRA over Redis, atomic across limits and processes."""

    PREFIX = "scrm:rate:"
    _SCRIPT = """
    local t = redis.call('TIME')
    local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
    local wait = 0
    local tolerance = tonumber(ARGV[#KEYS + 1])
    for i, key in ipairs(KEYS) do
      local tat = tonumber(redis.call('GET', key) or now)
      if tat - tolerance - now > wait then wait = tat - tolerance - now end
    end
    if wait > 0 then return tostring(wait) end
    for i, key in ipairs(KEYS) do
      local interval = tonumber(ARGV[i])
      local tat = tonumber(redis.call('GET', key) or now)
      if tat < now then tat = now end
      redis.call('SET', key, tostring(tat + interval), 'PX', math.ceil(interval * 1000) + 1000)
    end
    return '0'
    """

    def __init__(self, redis: Any) -> None:
        self.redis = redis
        self._script = redis.register_script(self._SCRIPT)

    async def acquire(self, limits: Sequence[RateLimit], tolerance: float = 0.0) -> float:
        if not limits:
            return 0.0
        keys = [self.PREFIX + lim.key for lim in limits]
        args = [repr(lim.per / lim.rate) for lim in limits] + [repr(tolerance)]
        result = await self._script(keys=keys, args=args)
        return float(result.decode() if isinstance(result, bytes) else result)


class WindowCounter:
    """Fixed-window failure counter (login attempts); memory or Redis.

    While Redis cannot be reached it counts in this process's memory: login attempts stay limited
    per process instead of failing every login.
    """

    # SET NX EX then INCR, key by key, as one atomic script: one command to send and parse (a MULTI
    # pipeline is six, and redis-py's pipeline machinery cost the web chat more than its round trip).
    _SCRIPT = """
    local counts = {}
    for i, key in ipairs(KEYS) do
      redis.call('SET', key, 0, 'EX', ARGV[1], 'NX')
      counts[i] = redis.call('INCR', key)
    end
    return counts
    """

    def __init__(self, redis: Any | None = None) -> None:
        self.redis = redis
        self._mem: dict[str, tuple[int, float]] = {}
        self._script = redis.register_script(self._SCRIPT) if redis is not None else None

    async def count(self, key: str, window: float) -> int:
        if self.redis is not None:
            try:
                value = await self.redis.get("scrm:win:" + key)
                return max(int(value or 0), self._count_mem(key))
            except Exception as exc:
                if not unavailable(exc):
                    raise
        return self._count_mem(key)

    def _count_mem(self, key: str) -> int:
        n, expires = self._mem.get(key, (0, 0.0))
        return n if expires > time.monotonic() else 0

    async def hit(self, key: str, window: float) -> int:
        """Count one attempt and return the count in this window, this attempt included.

        One atomic step (SET NX EX, then INCR, in a script): of many parallel attempts each sees its own
        number, so a caller that counts *before* doing the work lets exactly `limit` of them through,
        in every process sharing the Redis. The window starts with the first attempt and the expiry is
        set together with the key, so a process dying in between cannot leave a key that never expires.
        """
        return (await self.hit_many([key], window))[0]

    async def hit_many(self, keys: Sequence[str], window: float) -> list[int]:
        """hit() for several keys (one attempt counted against each) in one step: one round trip and
        one pooled connection for a request checked against several limits (a chat message: per
        visitor and per address)."""
        if self._script is not None:
            try:
                counts = await self._script(keys=["scrm:win:" + key for key in keys], args=[max(1, int(window))])
                return [int(n) for n in counts]
            except Exception as exc:
                if not unavailable(exc):
                    raise
        # No await between reading and writing: atomic within the event loop.
        counts = []
        for key in keys:
            n = self._count_mem(key)
            expires = self._mem.get(key, (0, 0.0))[1] if n else time.monotonic() + window
            self._mem[key] = (n + 1, expires)
            counts.append(n + 1)
        return counts

    async def reset(self, key: str) -> None:
        self._mem.pop(key, None)
        if self.redis is not None:
            try:
                await self.redis.delete("scrm:win:" + key)
            except Exception as exc:
                if not unavailable(exc):
                    raise
