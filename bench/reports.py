"""Reports benchmark: every desk report on 10k and then 100k conversations (10 messages each: 100k and
1M messages) in PostgreSQL, for a 30-day and a 1-year range, measured in the same run so the ratio
shows how cost grows with the data.

    python bench/reports.py [--quick]

Uses a scratch database `scrm_bench_reports` on 127.0.0.1:5432 (created and dropped). Data is spread
over ~400 days and bulk-filled with INSERT ... SELECT generate_series.
Target (issue 9): every report < 1 s at 1M messages. Last line:
    BENCH reports worst_ms=<slowest report at the large size> growth_ratio=<large/small, slowest report>
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import text  # noqa: E402
from sqlalchemy.ext.asyncio import create_async_engine  # noqa: E402

from scrm.db.database import Database  # noqa: E402
from scrm.db.migrate import upgrade  # noqa: E402
from scrm.services.desk import reports  # noqa: E402

PG_ADMIN = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
PG_DB = "scrm_bench_reports"
DB_URL = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{PG_DB}"
PER_CONV = 10
DAYS = 400
NOW = datetime(2026, 1, 1, tzinfo=UTC)

SEED = """
INSERT INTO inboxes (id, name, channel_type, settings, secrets, reopen_policy, active, created_at, updated_at)
SELECT i, 'inbox ' || i, (ARRAY['api','wechat_oa','telegram','email'])[i], '{}', '{}', 'reopen', true, now(), now()
FROM generate_series(1, 4) i;
INSERT INTO agents (id, login, password_hash, role, display_name, active, availability, created_at)
SELECT i, 'agent' || i, 'x', 'agent', 'Agent ' || i, true, 'online', now() FROM generate_series(1, 10) i;
INSERT INTO desk_teams (id, name, auto_assign, max_open_per_agent, reassign_on_offline, created_at)
VALUES (1, 'L1', true, 10, false, now()), (2, 'L2', true, 10, false, now());
"""

# :lo/:hi are conversation ids; contact/identity ids equal the conversation id.
FILL = [
    """INSERT INTO contacts (id, name, attributes, opt_outs, first_seen_at, last_seen_at, created_at, updated_at)
       SELECT g, 'c' || g, '{}', '{}', now(), now(), now(), now() FROM generate_series(:lo, :hi) g""",
    """INSERT INTO contact_identities (id, inbox_id, external_id, contact_id, reachable, subscribed, attributes, created_at)
       SELECT g, 1 + g % 4, 'u' || g, g, true, true, '{}', now() FROM generate_series(:lo, :hi) g""",
    """INSERT INTO conversations (id, inbox_id, contact_id, identity_id, status, handler, assignee_id, priority,
         last_activity_at, unread_count, created_at, resolved_at, bot_state, meta)
       SELECT g, 1 + g % 4, g, g, CASE WHEN g % 10 < 8 THEN 'resolved' ELSE 'open' END,
         CASE WHEN g % 3 = 0 THEN 'bot' ELSE 'human' END, CASE WHEN g % 3 = 0 THEN NULL ELSE 1 + g % 10 END,
         'normal', t, 0, t, CASE WHEN g % 10 < 8 THEN t + ((g % 47) || ' hours')::interval END, '{}', '{}'
       FROM (SELECT g, :now - ((g * 7919 % (:days * 1440)) || ' minutes')::interval AS t
             FROM generate_series(:lo, :hi) g) s""",
    """INSERT INTO messages (conversation_id, inbox_id, direction, sender_kind, sender_agent_id, content_type, text,
         attachments, private, payload, edit_history, created_at)
       SELECT c.id, c.inbox_id, CASE WHEN k % 2 = 0 THEN 'in' ELSE 'out' END,
         CASE WHEN k % 2 = 0 THEN 'contact' WHEN c.assignee_id IS NULL THEN 'bot' ELSE 'agent' END,
         CASE WHEN k % 2 = 1 THEN c.assignee_id END, 'text', 'message ' || k, '[]', false, '{}', '[]',
         c.created_at + (k * 3 || ' minutes')::interval
       FROM conversations c CROSS JOIN generate_series(0, :per - 1) k WHERE c.id BETWEEN :lo AND :hi""",
    """INSERT INTO desk_conversation_stats (conversation_id, inbox_id, team_id, agent_id, priority, created_at,
         human_involved, handoffs, policy_id, sla_started_at, first_response_at, first_response_secs, resolved_at,
         resolution_secs, warned, breached, sla_met)
       SELECT c.id, c.inbox_id, CASE WHEN c.assignee_id IS NULL THEN NULL ELSE 1 + c.assignee_id % 2 END,
         c.assignee_id, 'normal', c.created_at, c.assignee_id IS NOT NULL, CASE WHEN c.handler = 'human' THEN 1 ELSE 0 END,
         1, c.created_at, CASE WHEN c.assignee_id IS NOT NULL THEN c.created_at + interval '3 minutes' END,
         CASE WHEN c.assignee_id IS NOT NULL THEN (c.id * 37 % 7200) END, c.resolved_at,
         CASE WHEN c.resolved_at IS NOT NULL THEN (c.id * 53 % 170000) END, '[]', '[]',
         CASE WHEN c.resolved_at IS NOT NULL THEN c.id % 5 <> 0 END
       FROM conversations c WHERE c.id BETWEEN :lo AND :hi""",
    """INSERT INTO desk_csat (conversation_id, inbox_id, contact_id, agent_id, team_id, status, rating, asked_at, answered_at)
       SELECT c.id, c.inbox_id, c.contact_id, c.assignee_id, NULL, 'answered', 1 + c.id % 5, c.resolved_at,
         c.resolved_at + interval '20 minutes'
       FROM conversations c WHERE c.id BETWEEN :lo AND :hi AND c.resolved_at IS NOT NULL AND c.id % 3 = 0""",
    # Two FAQ outcomes per bot-handled conversation (answer, clarify, picked, reject over 200 entries).
    """INSERT INTO desk_faq_outcomes (conversation_id, inbox_id, message_id, outcome, entry_key, confidence, created_at)
       SELECT c.id, c.inbox_id, NULL, (ARRAY['answer','answer','clarify','picked','reject'])[1 + (c.id + k) % 5],
         'faq-' || ((c.id * 31 + k) % 200), 0.5 + ((c.id + k) % 50) / 100.0, c.created_at + (k || ' minutes')::interval
       FROM conversations c CROSS JOIN generate_series(0, 1) k WHERE c.id BETWEEN :lo AND :hi AND c.id % 3 = 0""",
]


async def _admin(sql: str) -> None:
    engine = create_async_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    async with engine.connect() as conn:
        await conn.execute(text(sql))
    await engine.dispose()


async def fill(db: Database, lo: int, hi: int) -> float:
    t0 = time.perf_counter()
    ints = {":lo": lo, ":hi": hi, ":days": DAYS, ":per": PER_CONV}  # our own integers, inlined for the planner
    async with db.engine.begin() as conn:
        for sql in FILL:
            for name, value in ints.items():
                sql = sql.replace(name, str(int(value)))
            sql = sql.replace(":now", "CAST(:now AS timestamptz)")
            await conn.execute(text(sql), {"now": NOW} if ":now" in sql else {})
    async with db.engine.connect() as conn:  # VACUUM sets the visibility map, as autovacuum does on a live table
        await (await conn.execution_options(isolation_level="AUTOCOMMIT")).execute(text("VACUUM ANALYZE"))
    return time.perf_counter() - t0


async def time_reports(db: Database, group: str, repeat: int) -> dict[tuple[str, str], float]:
    """Median milliseconds of each report for the 30-day and 1-year ranges."""
    out: dict[tuple[str, str], float] = {}
    for label, days in (("30d", 30), ("1y", 365)):
        start, end = NOW - timedelta(days=days), NOW
        jobs = {name: (lambda s, fn=fn, a=start, b=end: fn(s, a, b, group)) for name, fn in reports.SECTIONS.items()}
        jobs["timeseries"] = lambda s, a=start, b=end: reports.timeseries(s, a, b)
        jobs["faq_top"] = lambda s, a=start, b=end: reports.faq_top(s, a, b)
        for name, job in jobs.items():
            samples = []
            for _ in range(repeat):
                async with db.session() as s:
                    t0 = time.perf_counter()
                    await job(s)
                    samples.append((time.perf_counter() - t0) * 1000)
            out[(name, label)] = statistics.median(samples)
    return out


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="1k / 10k conversations instead of 10k / 100k")
    ap.add_argument("--group-by", default="agent", choices=reports.GROUPS)
    ap.add_argument("--keep", action="store_true", help="do not drop the database at the end")
    args = ap.parse_args()
    small, large = (1_000, 10_000) if args.quick else (10_000, 100_000)
    await _admin(f"DROP DATABASE IF EXISTS {PG_DB}")
    await _admin(f"CREATE DATABASE {PG_DB}")
    db = Database(DB_URL, pool_size=2)
    try:
        await upgrade(DB_URL)
        async with db.engine.begin() as conn:
            for stmt in SEED.strip().split(";\n"):
                if stmt.strip():
                    await conn.execute(text(stmt))
        fill_small = await fill(db, 1, small)
        t_small = await time_reports(db, args.group_by, 3)
        fill_large = await fill(db, small + 1, large)
        t_large = await time_reports(db, args.group_by, 3)
        print(f"# data: {small:,} then {large:,} conversations x {PER_CONV} messages over {DAYS} days "
              f"(fill {fill_small:.1f} s + {fill_large:.1f} s); group_by={args.group_by}; median of 3 runs")
        print(f"{'report':<16}{'range':>6}{'small ms':>11}{'large ms':>11}{'ratio':>8}")
        for key in t_large:
            ratio = t_large[key] / max(t_small[key], 0.01)
            print(f"{key[0]:<16}{key[1]:>6}{t_small[key]:>11.1f}{t_large[key]:>11.1f}{ratio:>8.2f}")
        worst = max(t_large, key=lambda k: t_large[k])
        growth = t_large[worst] / max(t_small[worst], 0.01)
        print(f"# data grew {large / small:.0f}x; worst report: {worst[0]} {worst[1]}; target < 1000 ms")
        print(f"BENCH reports worst_ms={t_large[worst]:.1f} growth_ratio={growth:.2f}")
    finally:
        await db.dispose()
        if not args.keep:
            await _admin(f"DROP DATABASE IF EXISTS {PG_DB}")


if __name__ == "__main__":
    asyncio.run(main())
