"""Telegram delivery benchmark: outbound messages to private chats through TWO `scrm worker`
processes (PostgreSQL + the Redis-backed shared rate limiter) against a fake Bot API run here.

    python bench/telegram_delivery.py [--quick] [--messages N] [--chats N] [--db NAME] [--redis URL]

Prints the overall send rate and the highest per-chat rate in any 1-second window next to
Telegram's limits (30 msg/s per bot, 1 msg/s per private chat), and checks that every delivery
reached the Bot API exactly once. The fake answers 429 like Telegram when a limit is exceeded.
Uses a scratch database (`--db`, default `scrm_bench_tgdelivery`; created and dropped) and a Redis db
(`--redis`, default redis://127.0.0.1:6379/15).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import BENCH_OUTBOUND_ALLOW, BENCH_SECRET_KEY, BENCH_SERVER_ENV  # noqa: E402

from tests.channels.telegram.fake_bot_api import FakeBotApi  # noqa: E402

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_DB = "scrm_bench_tgdelivery"
DB_URL = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{PG_DB}"
REDIS_URL = "redis://127.0.0.1:6379/15"


def configure(db: str | None, redis_url: str | None) -> None:
    """Use another scratch database / Redis db (several people benchmarking on one machine)."""
    global PG_DB, DB_URL, REDIS_URL
    if db:
        PG_DB, DB_URL = db, f"postgresql+asyncpg://postgres@127.0.0.1:5432/{db}"
    if redis_url:
        REDIS_URL = redis_url
LIMIT_OVERALL = 30.0
LIMIT_CHAT = 1.0


class RecordingBotApi(FakeBotApi):
    """Records each ACCEPTED sendMessage (flood-control rejections are answered 429 before this)."""

    def __init__(self, token: str) -> None:
        super().__init__(token, flood_control=True)
        self.accepted: list[tuple[float, str, str]] = []  # (monotonic time, chat id, text)

    async def _m_sendMessage(self, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        self.accepted.append((time.monotonic(), str(params.get("chat_id")), str(params.get("text"))))
        return await super()._m_sendMessage(params, files)


async def create_db() -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN, timeout=5)
    await conn.execute(f"DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)")
    await conn.execute(f"CREATE DATABASE {PG_DB}")
    await conn.close()


async def drop_db() -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN, timeout=5)
    await conn.execute(f"DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)")
    await conn.close()


async def seed(api: FakeBotApi, chats: int, total: int, files: Path) -> list[str]:
    """Inbox + one customer message per chat (ingest), then `total` agent replies round-robin."""
    from scrm.bootstrap import build_context
    from scrm.db.migrate import upgrade
    from scrm.db.models import ContactIdentity, Conversation, Inbox
    from scrm.domain import InboundMessage
    from scrm.services.conversations.ingest import ingest
    from scrm.services.outbox import enqueue_message
    from scrm.services.uow import unit_of_work
    from scrm.settings import load_settings

    await upgrade(DB_URL)
    settings = load_settings(env={}, overrides={"security": {"secret_key": BENCH_SECRET_KEY, "outbound_allow": BENCH_OUTBOUND_ALLOW}, "database": {"url": DB_URL, "auto_migrate": False},
                                                "storage": {"path": str(files)}})
    ctx = await build_context(settings)
    texts: list[str] = []
    try:
        async with ctx.db.transaction() as s:
            inbox = Inbox(name="bench telegram", channel_type="telegram", settings={"api_base_url": api.base_url},
                          secrets={"bot_token": api.token, "webhook_secret": "bench"})
            s.add(inbox)
            await s.flush()
        chat_ids = [str(700000000 + i) for i in range(chats)]
        await ingest(ctx, inbox, [InboundMessage(external_id=f"{c}:1", sender_id=c, text="你好", payload={"chat_id": c})
                                  for c in chat_ids])
        async with unit_of_work(ctx) as tx:
            box = await tx.session.get(Inbox, inbox.id)
            convs = {}
            for c in chat_ids:
                ident = (await tx.session.execute(
                    ContactIdentity.__table__.select().where(ContactIdentity.external_id == c))).first()
                identity = await tx.session.get(ContactIdentity, ident.id)
                conv = (await tx.session.execute(
                    Conversation.__table__.select().where(Conversation.identity_id == ident.id))).first()
                convs[c] = (identity, await tx.session.get(Conversation, conv.id))
            for n in range(total):
                chat = chat_ids[n % chats]  # round robin, like replies to many customers at once
                identity, conv = convs[chat]
                text = f"bench #{n} 您好，您的订单已发货"
                texts.append(text)
                await enqueue_message(tx, inbox=box, conversation=conv, identity=identity, sender_kind="agent",
                                      text=text)
    finally:
        await ctx.close()
    return texts


def max_window(times: list[float], width: float = 1.0) -> int:
    """Most events in any half-open window [t, t + width)."""
    times = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while times[lo] <= t - width:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


async def db_counts() -> dict[str, int]:
    import asyncpg

    conn = await asyncpg.connect(DB_URL.replace("+asyncpg", ""))
    rows = await conn.fetch("SELECT status, count(*) FROM deliveries WHERE payload->>'text' LIKE 'bench #%' "
                            "GROUP BY status")
    others = await conn.fetch("SELECT payload->>'text' AS text, status FROM deliveries "
                              "WHERE payload->>'text' NOT LIKE 'bench #%' LIMIT 3")
    await conn.close()
    if others:
        print("  other deliveries:", [dict(r) for r in others])
    return {r["status"]: r["count"] for r in rows}


def spawn_worker(name: str, tmp: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCRM_")}
    env |= {**BENCH_SERVER_ENV, "SCRM_DATABASE_URL": DB_URL, "SCRM_REDIS_URL": REDIS_URL, "SCRM_DATABASE_AUTO_MIGRATE": "false",
            "SCRM_STORAGE_PATH": str(tmp / "files"), "SCRM_LOGGING_LEVEL": "WARNING", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "scrm.cli", "worker", "--name", name], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=open(tmp / f"{name}.log", "wb"))  # noqa: SIM115


async def run(total: int, chats: int, timeout: float) -> int:
    token = f"{secrets.randbelow(10**9) + 10**9}:AAbench{secrets.token_hex(12)}"  # fresh rate-limit keys
    api = RecordingBotApi(token)
    await api.start()
    await create_db()
    workers: list[subprocess.Popen[bytes]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp_name:
            tmp = Path(tmp_name)
            texts = await seed(api, chats, total, tmp / "files")
            started = time.monotonic()
            workers = [spawn_worker(f"bench-w{i}", tmp) for i in range(2)]
            deadline = started + timeout
            while time.monotonic() < deadline:
                counts = await db_counts()
                if counts.get("sent", 0) + counts.get("failed", 0) >= total:
                    break
                await asyncio.sleep(0.5)
            await asyncio.sleep(0.5)  # let in-flight answers land
            counts = await db_counts()
            for w in workers:
                w.send_signal(signal.SIGTERM)
            for w in workers:
                try:
                    w.wait(20)
                except subprocess.TimeoutExpired:
                    w.kill()
            errors = "".join((tmp / f"bench-w{i}.log").read_text(errors="replace")[-1500:] for i in range(2))
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
        await api.stop()
        await drop_db()

    accepted = [a for a in api.accepted if a[2].startswith("bench #")]
    rejected = len([c for c in api.calls_of("sendMessage")]) - len(api.accepted)
    per_text = Counter(text for _, _, text in accepted)
    lost = sum(1 for t in texts if per_text[t] == 0)
    duplicates = sum(n - 1 for n in per_text.values() if n > 1)
    times = [t for t, _, _ in accepted]
    span = max(times) - min(times) if len(times) > 1 else float("nan")
    overall = (len(times) - 1) / span if len(times) > 1 else 0.0
    by_chat: dict[str, list[float]] = defaultdict(list)
    for t, chat, _ in accepted:
        by_chat[chat].append(t)
    max_chat = max(max_window(v) for v in by_chat.values()) if by_chat else 0
    min_gap = min((b - a for v in by_chat.values() for a, b in zip(sorted(v), sorted(v)[1:], strict=False)),
                  default=float("nan"))
    max_overall_1s = max_window(times)
    if os.environ.get("BENCH_DEBUG") and times:
        t0 = min(times)
        per_second = Counter(int(t - t0) for t in times)
        print("  accepted per second:", [per_second[i] for i in range(int(span) + 1)])

    print(f"telegram delivery: {total} messages to {chats} private chats, 2 worker processes (PostgreSQL + Redis)")
    print(f"  overall rate          {overall:6.2f} msg/s   (limit {LIMIT_OVERALL:.0f}/s per bot; "
          f"{overall / LIMIT_OVERALL:.0%} of it)   busiest 1-s window {max_overall_1s}")
    print(f"  max per-chat rate     {max_chat:6d} msg/1s window (limit {LIMIT_CHAT:.0f}/s per chat)   "
          f"closest two sends to one chat {min_gap * 1000:.0f} ms apart")
    print(f"  429 answers (limits exceeded at the fake) {rejected}   deliveries in DB {counts}")
    print(f"  lost {lost}   duplicates {duplicates}   wall time {span:.1f} s")
    if lost or counts.get("failed"):
        print("  worker logs (tail):\n" + errors)
    print(f"BENCH telegram_delivery overall_ratio={overall / LIMIT_OVERALL:.3f} overall_rate={overall:.2f} "
          f"busiest_1s={max_overall_1s} max_chat_rate_1s={max_chat} rejected_429={rejected} lost={lost} "
          f"duplicates={duplicates}")
    return 0 if not lost and not duplicates else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="300 messages (under a minute)")
    ap.add_argument("--messages", type=int)
    ap.add_argument("--chats", type=int, default=100)
    ap.add_argument("--db", help="scratch database name (created and dropped)")
    ap.add_argument("--redis", help="Redis URL of a db the benchmark may use")
    args = ap.parse_args()
    configure(args.db, args.redis)
    total = args.messages or (300 if args.quick else 1000)
    return asyncio.run(run(total, args.chats, timeout=30 + total / 10))


if __name__ == "__main__":
    sys.exit(main())
