"""SQL statements per inbound message of the follow-up work (bot answer, desk bookkeeping, automation,
notifications...), counted at the driver (SQLAlchemy `before_cursor_execute`: every statement sent,
BEGIN/COMMIT included where the dialect sends them as statements, as on SQLite).

    python bench/follow_up_statements.py [--quick] [--customers N] [--backend sqlite|postgresql]

The same customers (two FAQ questions each) are ingested twice into fresh databases: once with no
listeners (ingest alone) and once with the listeners installed and their work done; the difference,
divided by the messages, is what the follow-up costs. It runs against whatever code is on PYTHONPATH,
so the figure of another checkout (before a change) is measured the same way:
`PYTHONPATH=/path/to/other/checkout python bench/follow_up_statements.py --quick`.
PostgreSQL uses a scratch database (BENCH_PG_DB, default scrm_bench_statements) on 127.0.0.1:5432.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if not os.environ.get("PYTHONPATH"):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import event  # noqa: E402

QUESTIONS = ("运费怎么收？", "怎么退货")
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_DB = os.environ.get("BENCH_PG_DB", "scrm_bench_statements")


async def _fresh_pg() -> str:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)")
        await conn.execute(f"CREATE DATABASE {PG_DB}")
    finally:
        await conn.close()
    return f"postgresql+asyncpg://postgres@127.0.0.1:5432/{PG_DB}"


async def measure(url: str, storage: str, customers: int, listeners: bool,
                  batch: int | None = None) -> tuple[int, int, float]:
    """(statements, messages, seconds of follow-up work) for one fresh database."""
    from scrm.bootstrap import build_context
    from scrm.db.migrate import upgrade
    from scrm.db.models import Inbox
    from scrm.domain import InboundMessage
    from scrm.listeners import install_listeners
    from scrm.services.bot import faq as faq_svc
    from scrm.services.conversations.ingest import ingest
    from scrm.settings import load_settings

    await upgrade(url)
    from _common import BENCH_SECRET_KEY  # channel secrets are sealed with a key (PostgreSQL requires one)

    overrides: dict[str, Any] = {"database": {"url": url, "auto_migrate": False}, "storage": {"path": storage},
                                 "security": {"secret_key": BENCH_SECRET_KEY}}
    if batch:
        overrides["events"] = {"batch_size": batch}
    settings = load_settings(env={}, overrides=overrides)
    ctx = await build_context(settings)
    try:
        unsubscribe = install_listeners(ctx, run_work=False) if listeners else []
        if listeners:
            await faq_svc.get_index(ctx)  # the knowledge base seeded and indexed before counting
        async with ctx.db.transaction() as s:
            inbox = Inbox(name="bench", channel_type="api", settings={}, secrets={"secret": "x" * 32})
            s.add(inbox)
            await s.flush()
        count = [0]

        def on_execute(*_args: Any) -> None:
            count[0] += 1

        event.listen(ctx.db.engine.sync_engine, "before_cursor_execute", on_execute)
        messages = 0
        for n in range(len(QUESTIONS)):
            for c in range(customers):
                await ingest(ctx, inbox, [InboundMessage(f"c{c}-{n}", f"c{c}", QUESTIONS[n])])
                messages += 1
        started = time.perf_counter()
        if listeners:
            unsubscribe.append(ctx.bus.consume_work())  # a worker that finds the burst waiting (no-op where inline)
            await _drained(ctx, url)
        took = time.perf_counter() - started
        event.remove(ctx.db.engine.sync_engine, "before_cursor_execute", on_execute)
        for stop in unsubscribe:
            result = stop()
            if isinstance(result, asyncio.Future):
                await asyncio.wait({result}, timeout=10)
        return count[0], messages, took
    finally:
        await ctx.close()


async def _drained(ctx: Any, url: str) -> None:
    """Wait for the follow-up work without counting the waiting's own queries (another engine)."""
    from scrm.db.database import Database

    try:
        from scrm.event_log import unworked
    except ImportError:  # before the event log: listeners ran inline, their tasks are the work
        await ctx.bus.drain(600)
        return
    watcher = Database(url, pool_size=1)
    try:
        while await unworked(watcher):
            await asyncio.sleep(0.02)
        await ctx.bus.drain(60)  # after-commit tasks (none here); the log is empty, so no query
    finally:
        await watcher.dispose()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="100 customers (under a minute)")
    ap.add_argument("--customers", type=int)
    ap.add_argument("--backend", default="sqlite", choices=("sqlite", "postgresql"))
    ap.add_argument("--batch", type=int, help="events.batch_size (default: the configured one)")
    args = ap.parse_args()
    customers = args.customers or (100 if args.quick else 500)
    with tempfile.TemporaryDirectory() as tmp:
        results = []
        for listeners in (False, True):
            url = await _fresh_pg() if args.backend == "postgresql" else f"sqlite+aiosqlite:///{tmp}/{listeners}.db"
            results.append(await measure(url, f"{tmp}/files", customers, listeners, args.batch))
    (alone, messages, _), (total, _, took) = results
    per_message = (total - alone) / messages
    print(f"follow-up statements on {args.backend}: {customers} customers x {len(QUESTIONS)} questions = {messages} "
          f"messages; ingest alone {alone / messages:.1f} statements/message, with follow-up "
          f"{total / messages:.1f}; follow-up {per_message:.1f} statements/message ({took:.1f} s of follow-up work)")
    print(f"BENCH follow_up_statements statements_per_message={per_message:.1f} backend={args.backend} "
          f"ingest_statements_per_message={alone / messages:.1f} messages={messages}")


if __name__ == "__main__":
    asyncio.run(main())
