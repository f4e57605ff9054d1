"""Table statistics PostgreSQL's autovacuum leaves stale: scrm analyzes the tables it changed itself.

PostgreSQL plans every statement from per-table statistics that autovacuum's analyze keeps fresh. Two
cases leave them stale, and the planner then guesses from what it knew (or from a table's size alone):

- **Autovacuum off** (the server setting, or a table's `autovacuum_enabled = false`): scrm's tables are
  never analyzed. Measured on such a server (bench/web_chat.py, bench/bot_reply.py): the web chat catch-up
  read scanned every message, and the consumer's conversation UPDATE, ingest's contacts UPDATE and the
  outbox's "sent" UPDATE over id arrays scanned their whole tables, so PostgreSQL's CPU grew with the data
  until it starved the processes beside it. Here this job does the analyze half of autovacuum, with
  autovacuum's own rule and settings: a table is analyzed once the rows changed since its last analyze
  exceed autovacuum_analyze_threshold + autovacuum_analyze_scale_factor x its rows (server values;
  per-table overrides are not read). It says once in the log that it does. It does not VACUUM: reclaiming
  space is the operator's choice once autovacuum is off (README, "PostgreSQL").
- **A young table, autovacuum on**: autovacuum looks at a database once per `autovacuum_naptime` (a
  minute by default). A new installation's tables grow from nothing faster than that under their first
  traffic, and the statements planned meanwhile keep plans made for an empty table (a prepared
  statement's generic plan is made again only once the table is analyzed). Measured with
  bench/bot_reply.py on PostgreSQL's default settings: the outbox's "sent" UPDATE looked for the next row
  of a contact by scanning every due queued row, so the first backlog made every send slower and the
  backlog longer: 240 msg/s after a burst of 320 kept a reply p99 of 1.25 s, and 0.26-0.33 s once the
  tables were analyzed between the two. Here a table is analyzed once the rows changed since its last
  analyze exceed YOUNG_MIN and its size then: at most once per doubling, so a grown table is left to
  autovacuum, whose 10 % rule comes long before.

Each ANALYZE waits at most LOCK_WAIT for its lock: autovacuum working the table holds it, and a longer
wait would make PostgreSQL cancel autovacuum's work (after deadlock_timeout) rather than this job's.
SQLite has no such statistics to keep: the job returns at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

if TYPE_CHECKING:
    from scrm.context import AppContext
    from scrm.db.database import Database

log = logging.getLogger("scrm.db.table_stats")

LOCK_NOT_AVAILABLE = "55P03"
CHECK_EVERY = 10.0  # seconds: a burst's new tables are analyzed while the burst is still on
YOUNG_MIN = 1000  # rows changed before a table autovacuum analyzes is analyzed here (with autovacuum on)
LOCK_WAIT = "200ms"  # below deadlock_timeout (1 s by default), after which autovacuum would be cancelled

# Tables of the application's schema due an analyze here, with whether autovacuum is off for them.
_DUE = text("""
SELECT t.relname, t.off
FROM (
    SELECT s.relname, s.n_mod_since_analyze AS changed, greatest(c.reltuples, 0) AS known_rows,
           current_setting('autovacuum') = 'off'
           OR coalesce(c.reloptions, '{}') @> ARRAY['autovacuum_enabled=false']
           OR coalesce(c.reloptions, '{}') @> ARRAY['autovacuum_enabled=off'] AS off
    FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
    WHERE s.schemaname = current_schema()
) t
WHERE CASE WHEN t.off
           THEN t.changed > current_setting('autovacuum_analyze_threshold')::float8
                            + current_setting('autovacuum_analyze_scale_factor')::float8 * t.known_rows
           ELSE t.changed > :young_min AND t.changed > t.known_rows
      END
ORDER BY t.changed DESC
""")


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def analyze_due(db: Database) -> list[str]:
    """ANALYZE the tables due (see the module docstring); returns the names of those analyzed."""
    return [table for table, _ in await _analyze_due(db)]


async def _analyze_due(db: Database) -> list[tuple[str, bool]]:
    if db.is_sqlite:
        return []
    due = [(row[0], bool(row[1])) for row in await db.one_statement(_DUE, {"young_min": YOUNG_MIN})]
    analyzed: list[tuple[str, bool]] = []
    if due:
        async with db.engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(f"SET lock_timeout = '{LOCK_WAIT}'"))
            try:
                for table, off in due:
                    # One statement each, outside a transaction: the lock it takes (SHARE UPDATE EXCLUSIVE)
                    # blocks no reads or writes, and is held for this table's sample only.
                    try:
                        await conn.execute(text(f"ANALYZE {_quoted(table)}"))
                    except DBAPIError as exc:
                        if getattr(exc.orig, "sqlstate", None) != LOCK_NOT_AVAILABLE:
                            raise
                        log.debug("%s: autovacuum holds it; analyzed at the next check", table)
                        continue
                    analyzed.append((table, off))
            finally:
                await conn.execute(text("RESET lock_timeout"))
    return analyzed


async def run_analyzer(ctx: AppContext, stop: asyncio.Event) -> None:
    """Periodic job (scrm.periodic: one process at a time): analyze_due every CHECK_EVERY seconds."""
    if ctx.db.is_sqlite:
        return
    said = False
    while not stop.is_set():
        analyzed = await _analyze_due(ctx.db)
        off = [table for table, autovacuum_off in analyzed if autovacuum_off]
        if off and not said:
            log.warning("PostgreSQL's autovacuum is off for scrm's tables: scrm analyzes the ones it changed "
                        "itself (first: %s); vacuuming them is left to the operator", ", ".join(off))
            said = True
        elif analyzed:
            log.debug("analyzed %s", ", ".join(table for table, _ in analyzed))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), CHECK_EVERY)
