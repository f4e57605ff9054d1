"""The Redis client every process uses: short timeouts, and a breaker so no caller waits on a Redis
that stopped answering.

redis-py's defaults wait 5 s per socket operation and retry ten times with backoff, so a Redis that
hangs (SIGSTOP, a stalled host, a full network buffer) held requests for many seconds. Here:

- connecting and each socket operation time out after CONNECT_TIMEOUT / SOCKET_TIMEOUT seconds
  (longer than the event bus's 0.5 s blocking stream reads), with one immediate retry, which
  replaces a pooled connection that a Redis restart closed;
- a call that times out, or two failures in a row, open the breaker: from then on every call fails
  at once with a ConnectionError (callers fall back: events are dispatched in-process, a send's
  rate-limit go-ahead is asked for again later, a lease is renewed later) while one background
  probe pings Redis every PROBE_INTERVAL seconds; its first answer closes the breaker;
- calls beyond MAX_CONNECTIONS at once wait for a free connection (up to SOCKET_TIMEOUT) instead of
  failing, so a burst delays a push or a rate-limit count rather than dropping it;
- `bounded()` puts a deadline on a call that must not wait at all (the acknowledgement path) and
  opens the breaker when it passes.

Pub/sub blocking reads are not subject to the socket timeout (redis-py >= 8.2), so an idle
subscription does not time out.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger("scrm.redis")

CONNECT_TIMEOUT = 2.0
SOCKET_TIMEOUT = 3.0
ACK_PATH_TIMEOUT = 0.25  # Redis answers in well under a millisecond; a quarter second is a hang
PROBE_INTERVAL = 0.5
FAILURES_TO_OPEN = 2
MAX_CONNECTIONS = 500  # per process; Redis takes 10,000 clients by default
T = TypeVar("T")


class RedisBreaker:
    """Open while Redis does not answer: calls fail at once, one background probe looks for its return."""

    def __init__(self, probe: Callable[[], Awaitable[Any]]) -> None:
        self._probe_call = probe
        self._failures = 0
        self.opened_at: float | None = None
        self._probe: asyncio.Task[None] | None = None
        self._closed = False

    def __deepcopy__(self, memo: dict[int, Any]) -> RedisBreaker:
        return self  # redis-py deep-copies the retry policy per connection; they all share this breaker

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None

    def check(self) -> None:
        """Raise ConnectionError while the breaker is open."""
        if self.opened_at is not None:
            raise RedisConnectionError("Redis is not answering; waiting for it to come back")

    def succeeded(self) -> None:
        self._failures = 0

    def failed(self, exc: BaseException) -> None:
        """A call failed: a timeout opens the breaker at once, other errors when they repeat."""
        self._failures += 1
        if isinstance(exc, RedisTimeoutError | TimeoutError) or self._failures >= FAILURES_TO_OPEN:
            self.trip(f"{type(exc).__name__}: {exc}")

    def trip(self, reason: str) -> None:
        """Open the breaker (idempotent) and start probing for Redis' return."""
        if self.opened_at is None and not self._closed:
            self.opened_at = time.monotonic()
            log.error("Redis unavailable (%s): live updates and wake-ups stay in this process until it answers", reason)
        if self._probe is None or self._probe.done():
            with contextlib.suppress(RuntimeError):  # no running loop: the next call from one starts it
                self._probe = asyncio.get_running_loop().create_task(self._probe_until_back())

    async def _probe_until_back(self) -> None:
        while self.opened_at is not None and not self._closed:
            try:
                async with asyncio.timeout(SOCKET_TIMEOUT):
                    await self._probe_call()
            except Exception:  # noqa: BLE001 - still down
                await asyncio.sleep(PROBE_INTERVAL)
                continue
            down = time.monotonic() - self.opened_at
            self.opened_at, self._failures = None, 0
            log.warning("Redis answers again after %.1f s", down)

    async def aclose(self) -> None:
        self._closed = True
        if self._probe is not None and not self._probe.done():
            self._probe.cancel()
            await asyncio.wait({self._probe}, timeout=2)


class _GuardedRetry(Retry):
    """redis-py's retry policy (one immediate retry) that fails fast while the breaker is open."""

    def __init__(self, breaker: RedisBreaker, retries: int = 1) -> None:
        super().__init__(NoBackoff(), retries)
        self.breaker = breaker

    def __deepcopy__(self, memo: dict[int, Any]) -> _GuardedRetry:
        clone = copy.copy(self)  # the copy shares the breaker; its supported errors are its own
        clone._supported_errors = tuple(self._supported_errors)
        return clone

    async def call_with_retry(self, do: Callable[[], Awaitable[T]], fail: Any, *args: Any, **kwargs: Any) -> T:
        breaker = self.breaker

        async def attempt() -> T:
            breaker.check()
            try:
                result = await do()
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                breaker.failed(exc)
                raise
            breaker.succeeded()
            return result

        return await super().call_with_retry(attempt, fail, *args, **kwargs)


class ScrmRedis(aioredis.Redis):
    """A redis.asyncio client whose connections share one breaker (`.breaker`)."""

    breaker: RedisBreaker
    _probe_client: aioredis.Redis

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await self.breaker.aclose()
        await self._probe_client.aclose()
        await super().aclose(close_connection_pool)


def connect(url: str) -> ScrmRedis:
    """The client for `url`, with the timeouts and breaker described above."""
    timeouts: dict[str, Any] = {"socket_connect_timeout": CONNECT_TIMEOUT, "socket_timeout": SOCKET_TIMEOUT}
    probe_client = aioredis.Redis.from_url(url, retry=Retry(NoBackoff(), 0), **timeouts)
    breaker = RedisBreaker(probe_client.ping)
    # from_url builds `cls(...)`; redis-py annotates it as returning the base Redis.
    # A burst (all web chat sockets reconnecting at once) asks for more connections than redis-py's
    # default pool of 100 holds, and its plain pool refuses the call past that at once (MaxConnectionsError:
    # a lost push, a rate limit counted in memory). A blocking pool of MAX_CONNECTIONS queues the call for a
    # connection instead, up to the socket timeout.
    pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=MAX_CONNECTIONS, timeout=SOCKET_TIMEOUT,
                                                    retry=_GuardedRetry(breaker), health_check_interval=30,
                                                    **timeouts)
    client = ScrmRedis(connection_pool=pool)
    client.auto_close_connection_pool = True  # as from_url does: closing the client closes its pool
    client.breaker = breaker
    client._probe_client = probe_client
    return client


def unavailable(exc: BaseException) -> bool:
    """Whether `exc` means Redis could not be reached in time (not a bug in the call)."""
    return isinstance(exc, RedisConnectionError | RedisTimeoutError | TimeoutError | OSError)


@contextlib.asynccontextmanager
async def bounded(redis: Any, seconds: float = ACK_PATH_TIMEOUT) -> AsyncIterator[None]:
    """A deadline for Redis calls on a path that must not wait (acknowledgements); passing it opens the
    breaker, so the calls after it fail at once instead of each waiting out the deadline."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError:
        breaker = getattr(redis, "breaker", None)
        if isinstance(breaker, RedisBreaker):
            breaker.trip(f"no answer within {seconds} s")
        raise
