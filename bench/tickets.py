"""Ticket list before / after issue 21's follow-up (migration 0020, ticket_queries), measured in the same run.

    python bench/tickets.py [--quick] [--backend postgresql|sqlite] [--before-ref REF]

Two scratch databases get the same tickets (bench/inbox.py's seed without its messages: one ticket per
conversation, a quarter unassigned, 3/8 active, SLA clocks on a fifth, one in twenty of those breached): "before" stops at
the migration `--before-ref` has as its head, "after" runs them all. The list function of `--before-ref`
(loaded from git) reads the first, this tree's reads the second, the two alternating request by request so
the machine's load falls on both alike. Timed in process (the database and the list's own Python work,
without HTTP); bench/inbox.py gives the same lists' p95 over HTTP.

PostgreSQL: scratch databases `<db>_before` / `<db>_after` (default scrm_bench_tickets, `--db`) on
127.0.0.1:5432, dropped afterwards unless `--keep`. SQLite: two files in a temporary folder.
Target (issue 21): ticket list p95 < 50 ms at 100k tickets on PostgreSQL.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import importlib.util
import random
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from sqlalchemy import insert, text  # noqa: E402

from scrm.db.database import Database  # noqa: E402
from scrm.db.migrate import upgrade  # noqa: E402
from scrm.db.models import Agent, Contact, ContactIdentity, Conversation, Inbox, Ticket  # noqa: E402
from scrm.db.models_desk import ConversationStats  # noqa: E402
from scrm.services.tickets import queries as ticket_queries  # noqa: E402

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
MODULE = "scrm/services/tickets/queries.py"
AGENTS = 10
# name -> filter. Agent 1 ("me") has no active ticket in this distribution: the page stays empty, which is
# where a walk in id order costs the most.
QUERIES: dict[str, dict[str, str]] = {
    "active": {"status": "active"}, "mine": {"assignee": "me", "status": "active"},
    "agent2": {"assignee": "2", "status": "active"}, "urgent": {"status": "active", "priority": "urgent,high"},
    "all": {}, "breached": {"sla": "breached"}, "pending": {"status": "pending"},
    "search": {"q": "订单 12345"}, "search_number": {"q": "#5003"}, "search_cjk2": {"q": "发票"},
    "search_common": {"q": "物流"}, "search_ascii": {"q": "order 4321"},
}


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(p / 100 * len(ordered))) - 1))] * 1000


def load_before(ref: str) -> ModuleType:
    """ticket_queries as it is at `ref` (imports resolve against this tree, whose models it shares)."""
    source = subprocess.run(["git", "show", f"{ref}:{MODULE}"], cwd=ROOT, check=True, capture_output=True,
                            text=True).stdout
    spec = importlib.util.spec_from_loader("ticket_queries_before", loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    exec(compile(source, f"{ref}:{MODULE}", "exec"), module.__dict__)  # noqa: S102 - our own file at a git ref
    return module


def head_of(ref: str) -> str:
    """The newest migration revision at `ref` (the one no other file there revises)."""
    files = subprocess.run(["git", "ls-tree", "--name-only", f"{ref}:scrm/db/migrations/versions"], cwd=ROOT,
                           check=True, capture_output=True, text=True).stdout.split()
    revs: dict[str, str | None] = {}
    for name in files:
        src = subprocess.run(["git", "show", f"{ref}:scrm/db/migrations/versions/{name}"], cwd=ROOT, check=True,
                             capture_output=True, text=True).stdout
        scope = {node.targets[0].id: ast.literal_eval(node.value) for node in ast.parse(src).body
                 if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
                 and node.targets[0].id in ("revision", "down_revision")}
        revs[scope["revision"]] = scope.get("down_revision")
    revised = {d for down in revs.values() for d in ((down,) if isinstance(down, str) else (down or ()))}
    heads = [r for r in revs if r not in revised]
    assert len(heads) == 1, heads
    return heads[0]


def rows(n: int) -> dict[Any, list[dict[str, Any]]]:
    """The scratch data, the same for both databases."""
    rng = random.Random(21)
    now = datetime.now(UTC)
    statuses = ("closed", "closed", "solved", "open", "new", "pending", "closed", "solved")
    priorities = ("normal", "normal", "low", "high", "urgent")
    out: dict[Any, list[dict[str, Any]]] = {Contact: [], ContactIdentity: [], Conversation: [], Ticket: [],
                                            ConversationStats: []}
    for g in range(1, n + 1):
        out[Contact].append({"id": g, "name": f"Customer {g}", "email": f"c{g}@example.com"})
        out[ContactIdentity].append({"id": g, "inbox_id": 1, "external_id": f"ext-{g}", "contact_id": g})
        out[Conversation].append({"id": g, "inbox_id": 1, "contact_id": g, "identity_id": g, "status": "resolved",
                                  "last_activity_at": now, "bot_state": {}, "meta": {}})
        out[Ticket].append({"id": g, "number": 1000 + g, "subject": f"订单 {g} 物流问题 order {g}",
                            "status": statuses[g % 8], "priority": priorities[g % 5], "conversation_id": g,
                            "contact_id": g, "assignee_id": None if g % 4 == 0 else 1 + g % AGENTS, "fields": {},
                            "created_at": now - timedelta(days=90 * rng.random()), "updated_at": now})
        if g % 5 == 0:
            out[ConversationStats].append({
                "conversation_id": g, "inbox_id": 1, "priority": "normal", "created_at": now, "human_involved": True,
                "handoffs": 0, "policy_id": None, "sla_started_at": now - timedelta(hours=2),
                "first_response_due": now - timedelta(hours=1), "warned": [],
                "breached": ["first_response"] if g % 20 == 0 else []})
    return out


async def seed_pg(url: str, n: int) -> None:
    """bench/inbox.py's seed statements without the messages (set-based: seconds for 100k)."""
    import asyncpg
    from inbox import SEED_SQL

    db = Database(url)
    try:
        async with db.transaction() as s:
            for i in range(1, AGENTS + 1):
                s.add(Agent(id=i, login=f"agent{i}", password_hash="x", role="agent", display_name=f"Agent {i}"))
            s.add_all(Inbox(id=i, name=f"bench {i}", channel_type="api", settings={}, secrets={}) for i in range(1, 5))
    finally:
        await db.dispose()
    conn = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        for sql in SEED_SQL:
            if "INTO messages" not in sql:
                await conn.execute(sql, 1, n)
        for table in ("contacts", "contact_identities", "conversations", "tickets", "agents", "inboxes"):
            await conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
        # The steady state autovacuum reaches after a bulk load: statistics, and the visibility map that lets
        # a query of ids alone be answered from an index.
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()


async def seed_sqlite(url: str, data: dict[Any, list[dict[str, Any]]]) -> None:
    db = Database(url)
    try:
        async with db.transaction() as s:
            for i in range(1, AGENTS + 1):
                s.add(Agent(id=i, login=f"agent{i}", password_hash="x", role="agent", display_name=f"Agent {i}"))
            s.add(Inbox(id=1, name="bench", channel_type="api", settings={}, secrets={}))
        for model, items in data.items():
            for start in range(0, len(items), 5000):
                async with db.transaction() as s:
                    await s.execute(insert(model), items[start:start + 5000])
        async with db.transaction() as s:
            await s.execute(text("ANALYZE"))
    finally:
        await db.dispose()


async def analyze(url: str) -> None:
    """Statistics for the indexes the newer migrations added (expression indexes have their own)."""
    db = Database(url)
    try:
        async with db.transaction() as s:
            await s.execute(text("ANALYZE"))
    finally:
        await db.dispose()


async def pg_admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def timed(db: Database, module: ModuleType, name: str) -> tuple[float, int]:
    f = module.TicketFilter(**QUERIES[name])
    started = time.perf_counter()
    async with db.session() as s:
        items, _ = await module.list_tickets(s, f, 1, limit=25)
    return time.perf_counter() - started, len(items)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="20k tickets, 30 samples")
    parser.add_argument("--backend", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--before-ref", help="git ref of the 'before' code and schema (default: where this branch "
                                             "left main)")
    parser.add_argument("--db", default="scrm_bench_tickets", help="scratch PostgreSQL database name prefix")
    parser.add_argument("--keep", action="store_true", help="keep the databases (for EXPLAIN ANALYZE)")
    args = parser.parse_args()
    n, samples = (20_000, 30) if args.quick else (100_000, 100)
    if args.before_ref is None:  # main moves on (other work merged); compare with what this branch started from
        args.before_ref = subprocess.run(["git", "merge-base", "HEAD", "main"], cwd=ROOT, check=True,
                                         capture_output=True, text=True).stdout.strip()
    before_mod = load_before(args.before_ref)
    tmp = Path(tempfile.mkdtemp(prefix="scrm-bench-tickets-"))
    if args.backend == "postgresql":
        urls = {side: f"postgresql+asyncpg://postgres@127.0.0.1:5432/{args.db}_{side}" for side in ("before", "after")}
        for url in urls.values():
            await pg_admin(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")
        await pg_admin(f"CREATE DATABASE {args.db}_before")
    else:
        urls = {side: f"sqlite+aiosqlite:///{tmp / side}.db" for side in ("before", "after")}
    try:
        # Seed "before" at the old schema, copy it, and bring the copy to this tree's head: the same rows in both.
        started = time.perf_counter()
        await upgrade(urls["before"], head_of(args.before_ref))
        if args.backend == "postgresql":
            await seed_pg(urls["before"], n)
            await pg_admin(f"CREATE DATABASE {args.db}_after TEMPLATE {args.db}_before")
        else:
            await seed_sqlite(urls["before"], rows(n))
            shutil.copyfile(tmp / "before.db", tmp / "after.db")
        await upgrade(urls["after"])
        await analyze(urls["after"])
        print(f"{args.backend}: {n:,} tickets seeded in {time.perf_counter() - started:.1f}s", flush=True)
        dbs = {side: Database(url) for side, url in urls.items()}
        modules = {"before": before_mod, "after": ticket_queries}
        times: dict[tuple[str, str], list[float]] = {}
        try:
            for name in QUERIES:
                counts = {}
                for side in ("before", "after"):  # warm-up: pools, statement caches, the first plans
                    for _ in range(6):
                        _, counts[side] = await timed(dbs[side], modules[side], name)
                if counts["before"] != counts["after"]:
                    raise RuntimeError(f"{name}: {counts['before']} tickets before, {counts['after']} after")
                for i in range(samples):  # alternate, so both see the same moments of the machine's load
                    order = ("before", "after") if i % 2 == 0 else ("after", "before")
                    for side in order:
                        dt, _ = await timed(dbs[side], modules[side], name)
                        times.setdefault((name, side), []).append(dt)
        finally:
            for db in dbs.values():
                await db.dispose()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if args.backend == "postgresql" and not args.keep:
            for url in urls.values():
                await pg_admin(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")

    print(f"\n{'query':<16}{'p50 before':>12}{'p95 before':>12}{'p50 after':>12}{'p95 after':>12}{'p95 ratio':>11}")
    for name in QUERIES:
        b, a = times[(name, "before")], times[(name, "after")]
        print(f"{name:<16}{pct(b, 50):>10.1f}ms{pct(b, 95):>10.1f}ms{pct(a, 50):>10.1f}ms{pct(a, 95):>10.1f}ms"
              f"{pct(b, 95) / pct(a, 95):>10.1f}x")

    def worst(side: str, search: bool) -> float:
        return max(pct(times[(q, side)], 95) for q in QUERIES if q.startswith("search") == search)

    lb, la, sb, sa = worst("before", False), worst("after", False), worst("before", True), worst("after", True)
    print(f"BENCH tickets list_p95_ratio={lb / la:.1f} search_p95_ratio={sb / sa:.1f} backend={args.backend} "
          f"tickets={n} list_p95_ms_before={lb:.1f} list_p95_ms_after={la:.1f} search_p95_ms_before={sb:.1f} "
          f"search_p95_ms_after={sa:.1f}")


if __name__ == "__main__":
    asyncio.run(main())
