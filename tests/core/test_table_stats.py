"""Where PostgreSQL's autovacuum is off, and for young tables where it is on, scrm keeps its tables'
statistics itself (scrm/db/table_stats.py): without them the planner scans whole tables for the id-array
reads and writes of the hot paths, and plans the outbox's statements for an empty table."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest
from sqlalchemy import text

from scrm.bootstrap import build_context
from scrm.db import table_stats
from scrm.db.database import Database
from scrm.periodic import JOBS
from tests.scratch import ScratchPostgres


async def _analyzed(ctx, table: str) -> bool:  # type: ignore[no-untyped-def]
    """Analyzed by scrm (last_analyze), not by autovacuum (last_autoanalyze)."""
    async with ctx.db.session() as s:
        return bool(await s.scalar(text(
            "SELECT last_analyze IS NOT NULL FROM pg_stat_user_tables WHERE relname = :t "
            "AND schemaname = current_schema()"), {"t": table}))


async def _due_soon(ctx, table: str, seconds: float = 10.0) -> list[str]:  # type: ignore[no-untyped-def]
    """analyze_due until it takes `table` (a backend reports its row counts up to a second after its commit)."""
    deadline = time.monotonic() + seconds
    analyzed: list[str] = []
    while time.monotonic() < deadline:
        analyzed = await table_stats.analyze_due(ctx.db)
        if table in analyzed:
            return analyzed
        await asyncio.sleep(0.2)
    return analyzed


async def test_tables_changed_past_autovacuums_threshold_are_analyzed_when_autovacuum_is_off(settings, backend) -> None:
    if backend != "postgresql":
        pytest.skip("PostgreSQL only: SQLite has no autovacuum and the job returns at once")
    ctx = await build_context(settings)
    try:
        async with ctx.db.transaction() as s:
            # Off for this table whatever the server says (CI's server has it off everywhere; another may not).
            await s.execute(text("DROP TABLE IF EXISTS table_stats_probe"))
            await s.execute(text("CREATE TABLE table_stats_probe (id int) WITH (autovacuum_enabled = false)"))
        async with ctx.db.transaction() as s:
            await s.execute(text("INSERT INTO table_stats_probe SELECT g FROM generate_series(1, 300) g"))
        assert not await _analyzed(ctx, "table_stats_probe")
        assert "table_stats_probe" in await _due_soon(ctx, "table_stats_probe")
        assert await _analyzed(ctx, "table_stats_probe")
        # Analyzed now: not again until enough rows change again (50 + 10% of 300 by default).
        assert "table_stats_probe" not in await table_stats.analyze_due(ctx.db)
        async with ctx.db.session() as s:  # the planner now knows the table's size
            assert await s.scalar(text("SELECT reltuples FROM pg_class WHERE relname = 'table_stats_probe'")) == 300
    finally:
        async with ctx.db.transaction() as s:
            await s.execute(text("DROP TABLE IF EXISTS table_stats_probe"))
        await ctx.close()


async def test_the_analyzer_runs_as_a_periodic_job_and_does_nothing_on_sqlite(settings, backend) -> None:
    assert ("scrm.db.table_stats.run_analyzer", table_stats.run_analyzer) in JOBS
    if backend != "sqlite":
        return
    ctx = await build_context(settings)
    try:
        assert await table_stats.analyze_due(ctx.db) == []
        await asyncio.wait_for(table_stats.run_analyzer(ctx, asyncio.Event()), 1)  # returns at once
    finally:
        await ctx.close()


@pytest.mark.slow
@pytest.mark.skipif(not ScratchPostgres.available(), reason="needs initdb/pg_ctl and root or the postgres user")
async def test_with_autovacuum_on_a_young_table_is_analyzed_once_it_outgrows_its_statistics() -> None:
    """A new installation's first burst: autovacuum (on) looks once per naptime, here an hour, so the table
    is left with no statistics at all while it grows from nothing."""
    pg = ScratchPostgres()
    pg.init(production=True)  # autovacuum on, as PostgreSQL ships
    with open(pg.data / "postgresql.conf", "a") as conf:
        conf.write("autovacuum_naptime = '1h'\n")  # its analyze must not come first
    pg.start()
    db = Database(pg.url, pool_size=2)
    ctx = SimpleNamespace(db=db)
    try:
        async with db.transaction() as s:
            assert await s.scalar(text("SHOW autovacuum")) == "on"
            await s.execute(text("CREATE TABLE young_probe (id int)"))
        async with db.transaction() as s:  # fewer changes than YOUNG_MIN: left to autovacuum
            await s.execute(text("INSERT INTO young_probe SELECT g FROM generate_series(1, 500) g"))
        await asyncio.sleep(1.5)  # the backend reports its counts within a second of the commit
        assert "young_probe" not in await table_stats.analyze_due(db)
        async with db.transaction() as s:
            await s.execute(text("INSERT INTO young_probe SELECT g FROM generate_series(501, 2000) g"))
        assert "young_probe" in await _due_soon(ctx, "young_probe")
        assert await _analyzed(ctx, "young_probe")
        async with db.session() as s:  # the planner now knows its size
            assert await s.scalar(text("SELECT reltuples FROM pg_class WHERE relname = 'young_probe'")) == 2000
        # Grown by less than its size since: left to autovacuum (whose 10 % rule comes first on a live server).
        async with db.transaction() as s:
            await s.execute(text("UPDATE young_probe SET id = id + 1 WHERE id <= 1500"))
        await asyncio.sleep(1.5)
        assert "young_probe" not in await table_stats.analyze_due(db)
        async with db.transaction() as s:  # doubled again: analyzed again
            await s.execute(text("INSERT INTO young_probe SELECT g FROM generate_series(1, 1000) g"))
        assert "young_probe" in await _due_soon(ctx, "young_probe")
    finally:
        await db.dispose()
        pg.close()
