"""Table statistics where PostgreSQL's autovacuum is off: scrm analyzes the tables it changed itself.

PostgreSQL plans every statement from per-table statistics that autovacuum's analyze keeps fresh. With
autovacuum off (the server setting, or a table's `autovacuum_enabled = false`) scrm's tables are never
analyzed and the planner guesses from their size alone. Measured on such a server (bench/web_chat.py,
bench/bot_reply.py): the web chat catch-up read scanned every message, and the consumer's conversation
UPDATE, ingest's contacts UPDATE and the outbox's "sent" UPDATE over id arrays scanned their whole tables,
so PostgreSQL's CPU grew with the data until it starved the processes beside it.

So where autovacuum is off this periodic job does the analyze half of autovacuum, with autovacuum's own
rule and settings: a table of the application's schema is analyzed once the rows changed since its last
analyze exceed autovacuum_analyze_threshold + autovacuum_analyze_scale_factor x its rows (server values;
per-table overrides are not read). It says once in the log that it does. It does not VACUUM: reclaiming
space is the operator's choice once autovacuum is off (README, "PostgreSQL"). With autovacuum on it only
looks, once per check, and does nothing. SQLite has no such setting: the job returns at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from sqlalchemy import text

if TYPE_CHECKING:
    from scrm.context import AppContext
    from scrm.db.database import Database

log = logging.getLogger("scrm.db.table_stats")

CHECK_EVERY = 10.0  # seconds: a burst's new tables are analyzed while the burst is still on

# Tables of the application's schema that autovacuum would analyze now but will not (it is off for them).
_DUE = text("""
SELECT s.relname
FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
WHERE s.schemaname = current_schema()
  AND (current_setting('autovacuum') = 'off'
       OR coalesce(c.reloptions, '{}') @> ARRAY['autovacuum_enabled=false']
       OR coalesce(c.reloptions, '{}') @> ARRAY['autovacuum_enabled=off'])
  AND s.n_mod_since_analyze > current_setting('autovacuum_analyze_threshold')::float8
      + current_setting('autovacuum_analyze_scale_factor')::float8 * greatest(c.reltuples, 0)
ORDER BY s.n_mod_since_analyze DESC
""")


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def analyze_due(db: Database) -> list[str]:
    """ANALYZE the tables autovacuum would analyze now but will not; returns their names."""
    if db.is_sqlite:
        return []
    due = [row[0] for row in await db.one_statement(_DUE)]
    if due:
        async with db.engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            for table in due:
                # One statement each, outside a transaction: the lock it takes (SHARE UPDATE EXCLUSIVE)
                # blocks no reads or writes, and is held for this table's sample only.
                await conn.execute(text(f"ANALYZE {_quoted(table)}"))
    return due


async def run_analyzer(ctx: AppContext, stop: asyncio.Event) -> None:
    """Periodic job (scrm.periodic: one process at a time): analyze_due every CHECK_EVERY seconds."""
    if ctx.db.is_sqlite:
        return
    said = False
    while not stop.is_set():
        analyzed = await analyze_due(ctx.db)
        if analyzed and not said:
            log.warning("PostgreSQL's autovacuum is off for scrm's tables: scrm analyzes the ones it changed "
                        "itself (first: %s); vacuuming them is left to the operator", ", ".join(analyzed))
            said = True
        elif analyzed:
            log.debug("analyzed %s", ", ".join(analyzed))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), CHECK_EVERY)
