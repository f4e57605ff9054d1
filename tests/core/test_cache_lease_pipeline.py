"""RedisCache.try_acquire (the callbacks' replay check, pollers' leases): calls made while others are on their
way to Redis share one pipeline (issue 17: 64 concurrent 微信客服 callbacks each paid a Redis round trip,
and a connection of its own, for the replay check in `scrm serve`'s event loop)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from scrm.cache import RedisCache
from tests.conftest import REDIS_URL
from tests.scratch import ScratchRedis

pytestmark = pytest.mark.skipif(not REDIS_URL and not ScratchRedis.available(), reason="needs Redis")


@pytest.fixture
async def redis() -> AsyncIterator[Any]:
    from scrm.redis_client import connect

    server = None
    if REDIS_URL:
        url = REDIS_URL
    else:
        server = ScratchRedis()
        server.start()
        url = server.url
    client = connect(url)
    await client.flushdb()
    try:
        yield client
    finally:
        await client.aclose()
        if server is not None:
            server.close()


async def test_concurrent_leases_share_round_trips_and_keep_their_answers(redis: Any) -> None:
    cache = RedisCache(redis)
    round_trips = 0
    real_eval, real_pipeline = redis.eval, redis.pipeline

    async def counted_eval(*args: Any) -> Any:
        nonlocal round_trips
        round_trips += 1
        return await real_eval(*args)

    def counted_pipeline(*args: Any, **kwargs: Any) -> Any:
        nonlocal round_trips
        round_trips += 1
        return real_pipeline(*args, **kwargs)

    redis.eval, redis.pipeline = counted_eval, counted_pipeline
    assert await cache.try_acquire("lease:a", "one", 30)  # alone: one plain call
    assert round_trips == 1
    answers = await asyncio.gather(*[cache.try_acquire(f"replay:{i % 32}", f"body{i // 32}", 30) for i in range(64)],
                                   cache.try_acquire("lease:a", "two", 30), cache.try_acquire("lease:a", "one", 30))
    assert round_trips <= 4  # was 67: one per call
    assert answers[:32] == [True] * 32  # first with its key
    assert answers[32:64] == [False] * 32  # the same key with another owner (a replayed pair, another body)
    assert answers[64:] == [False, True]  # someone else's lease; the holder renews it
    assert await redis.pttl("scrm:cache:replay:0") > 20_000


async def test_a_failed_round_trip_fails_every_call_of_it(redis: Any) -> None:
    cache = RedisCache(redis)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("redis gone")

    redis.pipeline = broken
    results = await asyncio.gather(*[cache.try_acquire(f"k{i}", "o", 30) for i in range(10)], return_exceptions=True)
    assert sum(isinstance(r, ConnectionError) for r in results) >= 8  # the first one or two went alone (eval)
    assert all(r is True or isinstance(r, ConnectionError) for r in results)
    assert not cache._acquires  # noqa: SLF001 - nothing left waiting
