"""A burst of Redis calls larger than the connection pool waits for a connection instead of failing."""

from __future__ import annotations

import asyncio

import pytest

from scrm.redis_client import MAX_CONNECTIONS, connect
from tests.scratch import ScratchRedis

pytestmark = pytest.mark.skipif(not ScratchRedis.available(), reason="needs redis-server")


async def test_calls_beyond_the_pool_wait_for_a_connection_and_all_succeed():
    # Every web chat socket reconnecting at once asks Redis for a rate-limit count and a push each; with
    # redis-py's plain pool the 101st concurrent call failed at once (a push lost, a visitor's own message
    # never shown). Each BLPOP below holds its connection for a while, so the calls really overlap.
    server = ScratchRedis()
    server.start()
    client = connect(server.url)
    try:
        calls = MAX_CONNECTIONS + 100
        results = await asyncio.gather(*[client.blpop([f"empty:{n}"], timeout=0.3) for n in range(calls)],
                                       return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        assert failures == []
        assert len(results) == calls
        assert not client.breaker.is_open
        assert await client.ping()
    finally:
        await client.aclose()
        server.close()
