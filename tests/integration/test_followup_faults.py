"""Follow-up work under real faults (issue 23): `scrm serve` SIGKILLed mid-burst, `scrm worker` SIGKILLed
mid-batch, PostgreSQL restarted, Redis killed and restarted empty. After each, every acknowledged
customer message has exactly one bot answer (in order), its desk record, and no reply was sent twice."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from scrm import secret_box
from scrm.db.database import Database
from scrm.db.migrate import upgrade
from scrm.db.models import Inbox
from scrm.db.models_events import EventRecord
from tests.conftest import PG_URL, TEST_SECRET_KEY
from tests.integration.followup_harness import (
    SECRET,
    Platform,
    Processes,
    bot_texts,
    check_followups,
    env_for,
    settled,
)
from tests.scratch import ScratchPostgres, ScratchRedis

pytestmark = pytest.mark.slow
CUSTOMERS = 50


async def _inbox(db: Database, callback_url: str) -> int:
    async with db.transaction() as s:
        inbox = Inbox(name="API", channel_type="api", settings={"callback_url": callback_url},
                      secrets={"secret": SECRET})
        s.add(inbox)
        await s.flush()
        return inbox.id


async def _when(check: Callable[[], bool], timeout: float = 60) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def _run(db_url: str, redis_url: str | None, tmp_path: Path, callback: Any,
               fault: Callable[[Processes, Platform, Database], Awaitable[None]]) -> Platform:
    """Start the processes, learn the bot's answers from one customer, then a burst with `fault` in it."""
    secret_box.install(TEST_SECRET_KEY)  # this process writes the inbox; its secrets are sealed like the servers'
    db = Database(db_url, pool_size=2)
    procs = Processes(env_for(db_url, redis_url, str(tmp_path / "files")), tmp_path)
    try:
        inbox_id = await _inbox(db, callback.url)
        procs.start_serve()
        procs.start_worker()
        await procs.wait_ready()
        reference = Platform(procs.port, inbox_id)
        await reference.burst(["reference"], parallel=1)
        await settled(db)
        ref_conv = reference.acked["reference-0"]
        expected = (await bot_texts(db, {ref_conv}))[ref_conv]
        assert expected, "the bot did not answer the reference customer"
        platform = Platform(procs.port, inbox_id)
        burst = asyncio.create_task(platform.burst([f"c{i}" for i in range(CUSTOMERS)]))
        try:
            await fault(procs, platform, db)
            await burst
        finally:
            burst.cancel()
        await settled(db)
        await check_followups(db, platform, expected, callback)
        return platform
    finally:
        procs.close()
        await db.dispose()


async def test_serve_sigkilled_mid_burst_loses_no_follow_up(settings, callback_server, tmp_path):
    async def fault(procs: Processes, platform: Platform, db: Database) -> None:
        for at in (20, 55):  # twice, with messages in flight (acknowledged ones and not yet answered ones)
            await _when(lambda at=at: len(platform.acked) >= at)
            procs.kill(procs.serve)
            procs.start_serve()
        await procs.wait_ready()

    platform = await _run(settings.database.url, settings.redis.url, tmp_path, callback_server, fault)
    assert platform.failures  # the kills did cut requests off; the platform retried them


async def test_worker_sigkilled_mid_batch_loses_and_repeats_nothing(settings, callback_server, tmp_path):
    async def unworked(db: Database) -> int:
        async with db.session() as s:
            return int(await s.scalar(select(func.count()).select_from(EventRecord)
                                      .where(EventRecord.worked_at.is_(None))) or 0)

    killed_with: list[int] = []

    async def fault(procs: Processes, platform: Platform, db: Database) -> None:
        for at in (20, 55):
            await _when(lambda at=at: len(platform.acked) >= at)
            backlog = await unworked(db)
            procs.kill(procs.worker)  # mid-batch: the burst keeps the worker busy
            killed_with.append(backlog)
            await asyncio.sleep(0.5)
            procs.start_worker()

    await _run(settings.database.url, settings.redis.url, tmp_path, callback_server, fault)
    print(f"unworked events when the worker was killed: {killed_with}")


@pytest.mark.skipif(not PG_URL, reason="the PostgreSQL run (a scratch cluster of the test's own)")
@pytest.mark.skipif(not ScratchPostgres.available(), reason="needs initdb/pg_ctl and root or the postgres user")
async def test_postgresql_restart_mid_burst_loses_no_follow_up(callback_server, tmp_path):
    pg = ScratchPostgres()
    pg.init()
    pg.start()
    try:
        await upgrade(pg.url)

        async def fault(procs: Processes, platform: Platform, db: Database) -> None:
            await _when(lambda: len(platform.acked) >= 25)
            await asyncio.to_thread(pg.stop, "fast")
            await asyncio.sleep(2)  # webhooks answer 503 meanwhile; the platform retries
            await asyncio.to_thread(pg.start)

        await _run(pg.url, None, tmp_path, callback_server, fault)
    finally:
        pg.close()


@pytest.mark.skipif(not ScratchRedis.available(), reason="needs redis-server")
async def test_redis_killed_and_restarted_empty_loses_no_follow_up(settings, callback_server, tmp_path):
    redis = ScratchRedis()
    redis.start()
    try:
        async def fault(procs: Processes, platform: Platform, db: Database) -> None:
            await _when(lambda: len(platform.acked) >= 25)
            await asyncio.to_thread(redis.kill)
            await asyncio.sleep(3)  # acknowledgements go on; consumers find the work by polling the log
            await asyncio.to_thread(redis.start)  # empty: nothing of the work was in it

        await _run(settings.database.url, redis.url, tmp_path, callback_server, fault)
    finally:
        redis.close()
