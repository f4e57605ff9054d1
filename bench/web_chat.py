"""Web chat benchmark: 2,000 visitor WebSockets on one `scrm serve`, 100 of them asking the FAQ bot a
question every second, next to the API channel's ingest rate measured in the same run.

    python bench/web_chat.py [--quick] [--sockets N] [--rate R] [--seconds S]

One `scrm serve` on PostgreSQL + Redis holds the sockets, stores the messages and (its embedded worker)
runs the bot and delivers its answers, which reach the sockets through Redis pub/sub. BENCH_SPLIT=1
runs `scrm serve --no-worker` plus one `scrm worker` instead; BENCH_SQLITE=1 the embedded SQLite
default. Each visitor has at most one question open; 100 different visitors ask each second, spread
evenly over the second.
Printed: visitor message -> bot answer latency (p50/p99) as the visitor's socket sees it; the serve
process's memory per idle connection (RSS growth over the connections); the API channel's ingest rate
(signed posts, 32 senders, acknowledged per second: the issue's baseline) with every socket still connected,
started on a quiet server (the chat load's follow-up work done first), and beside it the same posts stored *and*
answered by the bot per second, with serve's CPU per message (the acknowledgement rate moves with how much
of the embedded worker's answering falls inside the posting; the answered rate does not); and, after every
socket is closed at once in
the middle of the load and reconnected with its last seen message id, how many messages a visitor
never got (lost) or got twice (duplicates), checked against the database's history. Also printed, to
tell where the time goes: the serve process's CPU per answered question over the load (the reconnect
included; on a shared machine the latency follows the CPU it gets) and that of the PostgreSQL backends of the
bench's database (diagnostics: the database's share; a plan that scans a growing table shows there), and from the server's timestamps
(PostgreSQL) the question's row -> its event worked with the bot's reply committed -> the outbox worker's send.
BENCH_PG_SETTINGS="name=value;..." sets PostgreSQL settings on the scratch database (diagnostics, e.g.
auto_explain's). BENCH_PROFILE=FILE records the serve process over the load with py-spy (raw collapsed stacks, for
flamegraph.pl or a script summing shares). BENCH_DEBUG=1 also prints (stderr) each message a visitor was never shown, each socket the server closed,
and the server's log.
Uses a scratch database `scrm_i22_bench` (created and dropped) and Redis db 8 (emptied).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from _common import BENCH_SERVER_ENV, free_port, fresh_redis, stop, wait_up  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from channels.signing import signed_headers  # noqa: E402

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_DB = os.environ.get("BENCH_DB", "scrm_i22_bench")
DB_URL = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{PG_DB}"
REDIS_URL = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/8")
API_SECRET = "bench-secret-0123456789abcdef-xyz"
ONE_PROCESS = os.environ.get("BENCH_SPLIT", "") == ""
SQLITE = bool(os.environ.get("BENCH_SQLITE"))
if SQLITE:
    DB_URL = f"sqlite+aiosqlite:///{tempfile.gettempdir()}/scrm_i22_bench_{os.getpid()}.db"
QUESTIONS = ["下单后多久发货？", "支持7天无理由退货吗？", "发票怎么开？", "可以开增值税专用发票吗？", "怎么修改收货地址？",
             "运费怎么算？", "有没有优惠券？", "How long does shipping take?", "Can I return an item?", "怎么联系人工客服"]
SERVE_PID: list[int] = []  # the serve process (BENCH_PROFILE_RECONNECT)
HUMAN = QUESTIONS[-1]  # hands the conversation to the agents' queue: the bot answers nothing after it


class Visitor:
    """One visitor: a session token, a socket, what it was shown, and its open question."""

    __slots__ = ("n", "token", "ws", "seen", "last_id", "asked_at", "latencies", "sent", "reader", "connected",
                 "human", "closing", "timeline", "asked_cid", "greeted_at", "reopened", "acked_at", "split",
                 "kept")

    def __init__(self, n: int) -> None:
        self.n = n
        self.token = ""
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.seen: dict[int, int] = {}
        self.last_id = 0
        self.asked_at: float | None = None
        self.latencies: list[float] = []
        self.timeline: list[tuple[float, float, str]] = []  # (asked at, latency, client id) for BENCH_TIMELINE
        self.asked_cid = ""
        self.sent: dict[str, int | None] = {}  # client id -> stored message id (acknowledged)
        self.reader: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        self.human = False  # asked for an agent: a later question waits for no bot answer
        self.closing = False  # the bench closes this visitor's socket (the forced reconnect, the end)
        self.greeted_at = 0.0  # when the server last said hello on this visitor's socket
        # Questions whose socket was closed and opened again before their answer was shown:
        # (asked -> greeted again, greeted again -> answer shown, asked at), seconds.
        self.reopened: list[tuple[float, float, float]] = []
        self.kept: list[float] = []  # the latencies of the other questions (their socket up throughout)
        self.acked_at = 0.0  # when the open question was acknowledged (stored)
        self.split: list[tuple[float, float]] = []  # (asked -> acked, acked -> answer shown), seconds


async def create_db() -> None:
    if SQLITE:
        return
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN, timeout=5)
    await conn.execute(f"DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)")
    await conn.execute(f"CREATE DATABASE {PG_DB}")
    # Diagnostics: BENCH_PG_SETTINGS="name=value;..." set on the scratch database (e.g. auto_explain's).
    for setting in filter(None, os.environ.get("BENCH_PG_SETTINGS", "").split(";")):
        name, _, value = setting.partition("=")
        await conn.execute(f"ALTER DATABASE {PG_DB} SET {name.strip()} = '{value.strip()}'")
    await conn.close()


async def drop_db() -> None:
    if SQLITE:
        return
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN, timeout=5)
    await conn.execute(f"DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)")
    await conn.close()


async def seed() -> tuple[int, int]:
    from channels.web.adapter import WebChatAdapter
    from scrm.db.database import Database
    from scrm.db.migrate import upgrade
    from scrm.db.models import Inbox
    from scrm.services.desk import settings as desk_settings

    await upgrade(DB_URL)
    db = Database(DB_URL)
    async with db.transaction() as s:
        api = Inbox(name="bench api", channel_type="api", settings={}, secrets={"secret": API_SECRET})
        # One address opens every socket here: the per-address limits are lifted for the bench.
        web = Inbox(name="bench web", channel_type="web", secrets=WebChatAdapter.init_secrets({}), settings={
            "sessions_per_minute_per_ip": 1_000_000, "messages_per_minute_per_ip": 1_000_000})
        s.add_all([api, web])
        await desk_settings.set_section(s, "business_hours", {"weekly": {d: "00:00-24:00" for d in (
            "mon", "tue", "wed", "thu", "fri", "sat", "sun")}})
        await s.flush()
        ids = (api.id, web.id)
    await db.dispose()
    return ids


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def pg_cpu() -> dict[int, float]:
    """CPU seconds used so far by each PostgreSQL backend of the scratch database (diagnostics: the database's
    share of the cost per question; the same machine)."""
    if SQLITE:
        return {}
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN, timeout=5)
    try:
        pids = [r["pid"] for r in await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", PG_DB)]
    finally:
        await conn.close()
    found = {}
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            found[pid] = cpu_seconds(pid)
    return found


async def answered_out(inbox: int) -> int:
    """Outgoing messages stored in `inbox` so far (the bot's answers)."""
    if SQLITE:
        return 0
    import asyncpg

    conn = await asyncpg.connect(DB_URL.replace("+asyncpg", ""), timeout=5)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM messages WHERE inbox_id = $1 AND direction = 'out'", inbox))
    finally:
        await conn.close()


def listen_overflows() -> int:
    """The kernel's count of connections dropped because a listen queue was full (machine-wide: diagnostics)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        lines = Path("/proc/net/netstat").read_text().splitlines()
        for names, values in zip(lines[::2], lines[1::2], strict=False):
            if names.startswith("TcpExt:"):
                return int(dict(zip(names.split(), values.split(), strict=True))["ListenOverflows"])
    return 0


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def open_session(http: aiohttp.ClientSession, base: str, inbox: int, v: Visitor) -> None:
    async with http.post(f"{base}/chat/{inbox}/session", json={"token": v.token or None, "mode": "widget"}) as r:
        data = await r.json()
        if r.status != 200:
            raise RuntimeError(f"session refused: {data}")
    v.token = data["token"]


async def connect(http: aiohttp.ClientSession, base: str, inbox: int, v: Visitor) -> None:
    ws_url = base.replace("http://", "ws://") + f"/chat/{inbox}/ws"
    for attempt in range(20):
        try:
            ws = await http.ws_connect(ws_url, heartbeat=None, autoping=True)
            break
        except (aiohttp.ClientError, OSError):
            await asyncio.sleep(0.2 * (attempt + 1))
    else:
        raise RuntimeError("could not connect")
    # As the widget does: the newest id it has, and the ids of its newest messages.
    await ws.send_str(json.dumps({"type": "auth", "token": v.token, "after": v.last_id, "shown": sorted(v.seen)[-200:]}))
    v.ws = ws
    v.reader = asyncio.create_task(read(v, ws))


async def read(v: Visitor, ws: aiohttp.ClientWebSocketResponse) -> None:
    async for msg in ws:
        if msg.type != aiohttp.WSMsgType.TEXT:
            continue
        frame = json.loads(msg.data)
        kind = frame.get("type")
        if kind == "hello":
            v.greeted_at = time.perf_counter()
            v.connected.set()
            for cid, mid in list(v.sent.items()):  # not acknowledged before the socket went: send again
                if mid is None:
                    await ws.send_str(json.dumps({"type": "message", "client_id": cid, "text": "resent"}))
        elif kind == "ack":
            v.sent[frame["client_id"]] = frame["id"]
            if frame["client_id"] == v.asked_cid and v.asked_at is not None:
                v.acked_at = time.perf_counter()
        elif kind == "messages":
            for item in frame["items"]:
                v.seen[item["id"]] = v.seen.get(item["id"], 0) + 1
                v.last_id = max(v.last_id, item["id"])
                if item["from"] == "bot" and v.asked_at is not None:
                    v.latencies.append(time.perf_counter() - v.asked_at)
                    if v.greeted_at <= v.asked_at:
                        v.kept.append(v.latencies[-1])
                    else:
                        v.reopened.append((v.greeted_at - v.asked_at, time.perf_counter() - v.greeted_at, v.asked_at))
                    v.timeline.append((v.asked_at, v.latencies[-1], v.asked_cid))
                    if v.acked_at > v.asked_at:
                        v.split.append((v.acked_at - v.asked_at, time.perf_counter() - v.acked_at))
                    v.asked_at = None
    if os.environ.get("BENCH_DEBUG") and not v.closing:
        print(f"# visitor {v.n} socket closed by the server: code {ws.close_code} {ws.exception()!r}", file=sys.stderr)
    v.connected.clear()


async def ask(v: Visitor) -> None:
    if v.ws is None or v.ws.closed or v.asked_at is not None:
        return
    cid = uuid.uuid4().hex
    v.sent[cid] = None
    v.asked_at = time.perf_counter()
    v.asked_cid = cid
    text = random.choice(QUESTIONS)
    v.human |= text == HUMAN
    try:
        await v.ws.send_str(json.dumps({"type": "message", "client_id": cid, "text": text}))
    except (ConnectionError, RuntimeError):
        v.asked_at = None


async def api_rate(base: str, inbox: int, n: int) -> float:
    """Signed API-channel posts from 32 senders: messages stored per second."""
    run = os.urandom(3).hex()
    bodies = [json.dumps({"id": f"{run}-{i}", "sender": {"id": f"c{run}{i % 500}"}, "text": f"订单 {i} 什么时候发货？"},
                         ensure_ascii=False).encode() for i in range(n)]
    queue = iter(bodies)
    errors = 0

    async def sender(http: aiohttp.ClientSession) -> None:
        nonlocal errors
        for body in queue:
            headers = {"Content-Type": "application/json", **signed_headers(API_SECRET, body)}
            async with http.post(f"{base}/webhooks/api/{inbox}", data=body, headers=headers) as r:
                await r.read()
                errors += r.status != 200
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=32)) as http:
        started = time.perf_counter()
        await asyncio.gather(*[sender(http) for _ in range(32)])
        elapsed = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{errors} API posts failed")
    return n / elapsed


async def quiet(api_inbox: int, timeout: float = 120) -> tuple[float, int]:
    """Wait until the server has no follow-up work left (every logged event worked, no delivery queued or in
    flight) and (PostgreSQL) return how long that took and how many outgoing messages `api_inbox` has."""
    if SQLITE:  # not watched: the rate is the acknowledgement's
        return 0.0, 0
    import asyncpg

    started = time.perf_counter()
    conn = await asyncpg.connect(DB_URL.replace("+asyncpg", ""), timeout=5)
    try:
        while True:
            busy = await conn.fetchval(
                "SELECT (SELECT count(*) FROM events WHERE worked_at IS NULL)"
                " + (SELECT count(*) FROM deliveries WHERE status IN ('queued', 'claimed', 'sending'))")
            if not busy or time.perf_counter() - started > timeout:
                break
            await asyncio.sleep(0.05)
        out = await conn.fetchval("SELECT count(*) FROM messages WHERE inbox_id = $1 AND direction = 'out'", api_inbox)
    finally:
        await conn.close()
    return time.perf_counter() - started, int(out)


async def api_phase(base: str, pid: int, api_id: int, n: int) -> dict[str, Any]:
    """The API channel's ingest rate beside the open sockets. Its posts are FAQ questions: the embedded
    worker answers them in the same process while they are posted, so the time to acknowledge the posts
    alone moves with how much of that answering falls inside the posting (a worker that keeps up takes the
    CPU the ingest had while it lagged). Measured on a quiet server (the load's events and deliveries done
    first), the rate is messages stored *and answered*, until the follow-up work is done, with the CPU
    per message it took; the acknowledgement rate is printed beside it."""
    quiet_s, out_before = await quiet(api_id)
    spy = None
    if os.environ.get("BENCH_PROFILE_API"):  # py-spy over the API phase (raw collapsed stacks)
        spy = subprocess.Popen(["py-spy", "record", "--pid", str(pid), "--rate", "200", "--format", "raw",
                                "--output", os.environ["BENCH_PROFILE_API"]],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        await asyncio.sleep(1)
    cpu, pg = cpu_seconds(pid), await pg_cpu()
    started = time.perf_counter()
    accept_rate = await api_rate(base, api_id, n)
    accept_cpu = cpu_seconds(pid) - cpu
    answered_at_ack = (await answered_out(api_id)) - out_before
    _, out_after = await quiet(api_id)
    elapsed = time.perf_counter() - started
    cpu = cpu_seconds(pid) - cpu
    pg_used = sum(c - pg.get(backend, 0.0) for backend, c in (await pg_cpu()).items())
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        await asyncio.to_thread(spy.wait, 30)
    return {"n": n, "rate": n / elapsed, "accept_rate": accept_rate, "accept_cpu_ms": accept_cpu * 1000 / n, "answered_at_ack": answered_at_ack,
            "answered": out_after - out_before, "quiet_s": quiet_s, "cpu_ms": cpu * 1000 / n, "pg_ms": pg_used * 1000 / n}


async def history(http: aiohttp.ClientSession, base: str, inbox: int, v: Visitor) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    after = 0
    while True:
        async with http.get(f"{base}/chat/{inbox}/messages?after={after}", headers={"X-Scrm-Visitor": v.token}) as r:
            page = (await r.json())["messages"]
        items += page
        if len(page) < 50:
            return items
        after = page[-1]["id"]


async def check(http: aiohttp.ClientSession, base: str, web_id: int, visitors: list[Visitor]) -> tuple[int, int, int]:
    """(lost, duplicates, unanswered) against each visitor's history in the database."""
    lost = duplicates = unanswered = 0
    for i in range(0, len(visitors), 100):
        batch = visitors[i:i + 100]
        for v, items in zip(batch, await asyncio.gather(*[history(http, base, web_id, v) for v in batch]), strict=True):
            missing = {m["id"] for m in items} - set(v.seen)
            lost += len(missing)
            if missing and os.environ.get("BENCH_DEBUG"):
                print(f"# visitor {v.n} last_id {v.last_id} never shown: "
                      f"{[(m['id'], m['from'], m['at']) for m in items if m['id'] in missing]}", file=sys.stderr)
            duplicates += sum(1 for n in v.seen.values() if n > 1)
            mine = [m for m in items if m["from"] == "visitor"]
            duplicates += len(mine) - len({m.get("client_id") for m in mine})  # a resend stored twice
            unanswered += v.asked_at is not None and not v.human
    return lost, duplicates, unanswered


async def stages(web_id: int) -> tuple[dict[str, tuple[float, float]], dict[int, float]]:
    """Where the time went, from the server's own timestamps (PostgreSQL), for each visitor question: its
    row stored (ingest) -> its event worked by the consumer (the bot's reply is committed with that mark)
    -> the outbox worker's send of the reply."""
    import asyncpg

    conn = await asyncpg.connect(DB_URL.replace("+asyncpg", ""), timeout=5)
    try:
        rows = await conn.fetch("""
            WITH worked AS (SELECT (payload->>'message_id')::bigint AS message_id, worked_at FROM events
                            WHERE name = 'message.created' AND payload->>'direction' = 'in')
            SELECT q.id, EXTRACT(EPOCH FROM q.created_at) AS at, EXTRACT(EPOCH FROM w.worked_at - q.created_at) * 1000 AS worked,
                   EXTRACT(EPOCH FROM d.sent_at - w.worked_at) * 1000 AS sent
            FROM messages q
            JOIN worked w ON w.message_id = q.id
            JOIN LATERAL (SELECT id FROM messages r WHERE r.conversation_id = q.conversation_id
                          AND r.direction = 'out' AND r.id > q.id ORDER BY r.id LIMIT 1) r ON true
            LEFT JOIN deliveries d ON d.message_id = r.id
            WHERE q.inbox_id = $1 AND q.direction = 'in'""", web_id)
    finally:
        await conn.close()

    def p50_p99(xs: list[float]) -> tuple[float, float]:
        xs = sorted(xs)
        return (statistics.median(xs), xs[max(0, int(len(xs) * 0.99) - 1)]) if xs else (0.0, 0.0)
    if os.environ.get("BENCH_TIMELINE") and rows:  # per second (of the server's clock) of the questions
        first = min(float(r["at"]) for r in rows)
        by_sec: dict[int, list[Any]] = {}
        for r in rows:
            by_sec.setdefault(int(float(r["at"]) - first), []).append(r)
        print("# server timeline: second n  stored->committed p50 p99  committed->sent p50 p99", file=sys.stderr)
        for sec in sorted(by_sec):
            w = p50_p99([float(r["worked"]) for r in by_sec[sec]])
            d = p50_p99([float(r["sent"]) for r in by_sec[sec] if r["sent"] is not None])
            print(f"# s={sec:3d} n={len(by_sec[sec]):4d} worked {w[0]:7.0f} {w[1]:7.0f}  sent {d[0]:7.0f} {d[1]:7.0f}",
                  file=sys.stderr)
    return ({"question stored -> bot reply committed": p50_p99([float(r["worked"]) for r in rows]),
             "bot reply committed -> worker sent": p50_p99([float(r["sent"]) for r in rows if r["sent"] is not None])},
            {int(r["id"]): float(r["worked"]) for r in rows})


async def run(sockets: int, rate: int, seconds: float) -> dict[str, Any]:
    await create_db()
    if not SQLITE:
        await fresh_redis(REDIS_URL)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        api_id, web_id = await seed()
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        with tempfile.TemporaryDirectory() as tmp:
            env = {k: v for k, v in os.environ.items() if not k.startswith("SCRM_")}
            env |= {**BENCH_SERVER_ENV, "SCRM_DATABASE_URL": DB_URL, "SCRM_DATABASE_AUTO_MIGRATE": "false",
                    **({} if SQLITE else {"SCRM_REDIS_URL": REDIS_URL}),
                    "SCRM_STORAGE_PATH": f"{tmp}/files", "SCRM_LOGGING_LEVEL": "ERROR",
                    # Diagnostics: BENCH_PYTHONPATH adds paths for the servers (e.g. a sitecustomize.py that traces them).
                    "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("BENCH_PYTHONPATH")])])}
            logs = [Path(tmp) / "serve.log", Path(tmp) / "worker.log"]
            roles = [["serve", "--port", str(port)]] if ONE_PROCESS else [["serve", "--port", str(port), "--no-worker"],
                                                                          ["worker"]]
            for args, log in zip(roles, logs, strict=False):
                procs.append(subprocess.Popen([sys.executable, "-m", "scrm.cli", *args], env=env, cwd=ROOT,
                                              stdout=subprocess.DEVNULL, stderr=log.open("wb")))
            await wait_up(f"{base}/readyz")
            try:
                result = await drive(base, procs[0].pid, api_id, web_id, sockets, rate, seconds)
                result["stages"], worked = ({}, {}) if SQLITE else await stages(web_id)
                if worked and os.environ.get("BENCH_TIMELINE"):
                    rest(result, worked)
                if os.environ.get("BENCH_DEBUG"):
                    for log in (x for x in logs if x.exists()):
                        print(f"--- {log.name} ---\n{log.read_text(errors='replace')[-3000:]}", file=sys.stderr)
                return result
            except Exception:
                for log in (x for x in logs if x.exists()):
                    print(f"--- {log.name} ---\n{log.read_text(errors='replace')[-3000:]}", file=sys.stderr)
                raise
    finally:
        for proc in procs:
            stop(proc)
        if not os.environ.get("BENCH_KEEP"):
            await drop_db()


async def reconnect_all(http: aiohttp.ClientSession, base: str, web_id: int, visitors: list[Visitor]) -> float:
    """Every socket closed at once, then reconnected (200 at a time) with the last message id it was shown;
    returns when every socket was greeted again."""
    started = time.perf_counter()
    cpu = time.process_time()
    serve_cpu = cpu_seconds(SERVE_PID[0]) if SERVE_PID else 0.0
    overflows = listen_overflows()
    spy = None
    if os.environ.get("BENCH_PROFILE_RECONNECT") and SERVE_PID:  # py-spy over the storm: closed until all greeted
        spy = subprocess.Popen(["py-spy", "record", "--pid", str(SERVE_PID[0]), "--rate", "200", "--format", "raw",
                                "--output", os.environ["BENCH_PROFILE_RECONNECT"]],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for v in visitors:
        v.closing = True
    await asyncio.gather(*[v.ws.close() for v in visitors if v.ws is not None])
    closed = time.perf_counter()
    for v in visitors:
        v.connected.clear()
        v.closing = False
    for i in range(0, len(visitors), 200):
        await asyncio.gather(*[connect(http, base, web_id, v) for v in visitors[i:i + 200]])
    opened = time.perf_counter()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*[v.connected.wait() for v in visitors]), 60)
    serve_cpu = (cpu_seconds(SERVE_PID[0]) if SERVE_PID else 0.0) - serve_cpu
    if spy is not None:
        await asyncio.sleep(1)  # and the second after it
        spy.send_signal(signal.SIGINT)
        await asyncio.to_thread(spy.wait, 30)
    if os.environ.get("BENCH_TIMELINE"):
        print(f"# reconnect: closed in {closed - started:.1f} s, reopened in {opened - closed:.1f} s, "
              f"all greeted {time.perf_counter() - started:.1f} s after the start; the bench's own process used "
              f"{time.process_time() - cpu:.1f} s of CPU meanwhile, serve {serve_cpu:.1f} s (the questions' load included); "
              f"{listen_overflows() - overflows} connections dropped by a full listen queue (machine-wide)",
              file=sys.stderr)
    return time.perf_counter()


async def drive(base: str, pid: int, api_id: int, web_id: int, sockets: int, rate: int, seconds: float) -> dict[str, Any]:
    visitors = [Visitor(n) for n in range(sockets)]
    SERVE_PID[:] = [pid]
    conn = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=None, sock_connect=30)) as http:
        for i in range(0, sockets, 50):  # sessions first (one request each), then the sockets
            await asyncio.gather(*[open_session(http, base, web_id, v) for v in visitors[i:i + 50]])
        # Warm the server's code paths with one socket and one answer before measuring memory.
        await connect(http, base, web_id, visitors[0])
        await visitors[0].connected.wait()
        await ask(visitors[0])
        for _ in range(100):
            if visitors[0].asked_at is None:
                break
            await asyncio.sleep(0.1)
        visitors[0].latencies.clear()
        visitors[0].kept.clear()
        await asyncio.sleep(1)
        before = rss_kb(pid)
        opening, opening_cpu, serve_cpu = time.perf_counter(), time.process_time(), cpu_seconds(pid)
        overflows = listen_overflows()
        for i in range(1, sockets, 200):
            await asyncio.gather(*[connect(http, base, web_id, v) for v in visitors[i:i + 200]])
        await asyncio.wait_for(asyncio.gather(*[v.connected.wait() for v in visitors]), 120)
        if os.environ.get("BENCH_TIMELINE"):
            print(f"# first connect (idle server): all greeted in {time.perf_counter() - opening:.1f} s, the bench's own "
                  f"process used {time.process_time() - opening_cpu:.1f} s of CPU meanwhile, serve "
                  f"{(cpu_seconds(pid) - serve_cpu) * 1000 / max(1, sockets - 1):.2f} ms per socket; "
                  f"{listen_overflows() - overflows} connections dropped by a full listen queue (machine-wide)", file=sys.stderr)
        await asyncio.sleep(3)  # idle
        # The bench's own collector must not add to the latencies it measures: with the default thresholds its
        # full passes over 2,000 client sockets held this process's loop ~150 ms, several times a run (gc
        # callbacks), each answer read meanwhile counted that late. As serve does (scrm/cli.py _tune_gc).
        gc.collect()
        gc.freeze()
        gc.set_threshold(10_000, 10, 100)
        after = rss_kb(pid)
        kb_per_conn = (after - before) / max(1, sockets - 1)

        # The load: `rate` different visitors ask a question every second; halfway, every socket is
        # closed at once and reconnects with the last message id it was shown.
        print("# load starts", flush=True, file=sys.stderr)
        order = list(visitors)
        random.shuffle(order)
        spy = None
        if os.environ.get("BENCH_PROFILE"):  # a py-spy sampling profile of the serve process over the load
            spy = subprocess.Popen(["py-spy", "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "200",
                                    "--format", "raw", "--output", os.environ["BENCH_PROFILE"]],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        spare = itertools.cycle(order)

        def up(v: Visitor) -> Visitor:
            """`v`, or while its socket is down (the forced reconnect) the next visitor whose socket is up and
            who has no question open: the questions keep coming at `rate` a second through the reconnect."""
            if v.ws is not None and not v.ws.closed:
                return v
            for _ in range(sockets):
                w = next(spare)
                if w.ws is not None and not w.ws.closed and not w.closing and w.asked_at is None:
                    return w
            return v
        cpu_before, pg_before = cpu_seconds(pid), await pg_cpu()
        started = time.perf_counter()
        if os.environ.get("BENCH_TIMELINE"):  # to line the timeline up with the server's own logs
            print(f"# load started at {time.time():.3f} (wall clock)", file=sys.stderr)
        tick = 0
        reconnecting: asyncio.Future[float] | None = None
        reconnect_started = started
        while time.perf_counter() - started < seconds:
            for k, v in enumerate(order[(tick * rate) % sockets:][:rate]):  # spread evenly over the second
                asyncio.get_running_loop().call_later(k / rate, lambda v=v: asyncio.ensure_future(ask(up(v))))
            tick += 1
            if reconnecting is None and time.perf_counter() - started >= seconds / 2:
                reconnect_started = time.perf_counter()
                # Beside the questions, which go on at `rate` a second meanwhile (a visitor whose socket is
                # down gives its turn to one whose socket is up, up()): held up behind the reconnect, they
                # used to go out in one burst after it.
                reconnecting = asyncio.ensure_future(reconnect_all(http, base, web_id, visitors))
            await asyncio.sleep(max(0.0, started + tick - time.perf_counter()))
        reconnect_end = started
        if reconnecting is not None:
            await reconnecting
            reconnect_end = reconnecting.result()
        print("# load ends", flush=True, file=sys.stderr)
        reconnect_at = reconnect_started - started
        cpu_load = cpu_seconds(pid) - cpu_before
        pg_load = sum(cpu - pg_before.get(backend, 0.0) for backend, cpu in (await pg_cpu()).items())
        if spy is not None:
            spy.wait(30)
        wall_load = time.perf_counter() - started
        # A message counts as lost only if it never arrives: wait (up to a minute) for the last answers.
        deadline = time.perf_counter() + 60
        while True:
            lost, duplicates, unanswered = await check(http, base, web_id, visitors)
            if not lost and not unanswered or time.perf_counter() > deadline:
                break
            await asyncio.sleep(2)
        # Measured last: the bot's answers to these posts would hold up the web chat's answers.
        api = await api_phase(base, pid, api_id, 3000 if sockets >= 1000 else 1000)
        for v in visitors:
            v.closing = True
            if v.ws is not None:
                await v.ws.close()
            if v.reader is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(v.reader, 2)
    if os.environ.get("BENCH_TIMELINE"):  # per second of the load (by the question's time): n, p50, p99, max
        by_sec: dict[int, list[float]] = {}
        for v in visitors:
            for at, x, _cid in v.timeline:
                by_sec.setdefault(int(at - started), []).append(x * 1000)
        print(f"# timeline (reconnect at {reconnect_at:.1f} s): second n p50 p99 max", file=sys.stderr)
        for sec in sorted(by_sec):
            xs = sorted(by_sec[sec])
            print(f"# t={sec:3d} n={len(xs):4d} p50={statistics.median(xs):7.0f} p99={xs[max(0, int(len(xs) * .99) - 1)]:7.0f}"
                  f" max={xs[-1]:7.0f}", file=sys.stderr)
    reopened = [x for v in visitors for x in v.reopened]
    if os.environ.get("BENCH_TIMELINE") and reopened:  # when the questions whose socket closed under them were asked
        print("# answered after their socket reopened, asked at (s from the reconnect's start): " + " ".join(
            f"{x[2] - reconnect_started:+.2f}" for x in sorted(reopened, key=lambda x: x[2])), file=sys.stderr)
    if os.environ.get("BENCH_TIMELINE"):  # the visitor's wait split at the acknowledgement (the question stored)
        split = [x for v in visitors for x in v.split]
        for i, name in enumerate(("asked -> acknowledged", "acknowledged -> answer shown")):
            xs = sorted(x[i] * 1000 for x in split)
            if xs:
                print(f"# {name}: n={len(xs)} p50 {statistics.median(xs):.1f} p90 {xs[int(len(xs) * .9)]:.1f} "
                      f"p99 {xs[max(0, int(len(xs) * .99) - 1)]:.1f} ms", file=sys.stderr)
    lat = sorted(x for v in visitors for x in v.latencies)
    asked = [(at - started, x * 1000, v.sent.get(cid)) for v in visitors for at, x, cid in v.timeline]
    if not lat:
        raise RuntimeError("no bot answer reached a visitor")
    return {"p50_ms": statistics.median(lat) * 1000, "p99_ms": lat[max(0, int(len(lat) * 0.99) - 1)] * 1000,
            "answers": len(lat), "asked": sum(len(v.sent) for v in visitors), "kb_per_conn": kb_per_conn, "api": api, "lost": lost,
            "duplicates": duplicates, "unanswered": unanswered, "rss_mb": after / 1024,
            "cpu_ms_per_question": cpu_load * 1000 / max(1, len(lat)), "cpu_share": cpu_load / wall_load,
            "pg_ms_per_question": pg_load * 1000 / max(1, len(lat)),
            "load": os.getloadavg()[0], "asked_rows": asked, "reconnect_s": (reconnect_at, reconnect_end - started), "reopened": reopened,
            "kept": [x for v in visitors for x in v.kept]}


def rest(result: dict[str, Any], worked: dict[int, float]) -> None:
    """Per question, the visitor's latency less the server's stored -> claimed (events.worked_at is set when the
    consumer claims the event): what is left is the bot's round and its commit, and the socket side (the
    question's ingest, the nudge, the catch-up read, the write, the client), for the questions whose answer came during the reconnect (asked before every socket was greeted
    again, answered after it started) and for the others."""
    start, end = result["reconnect_s"]
    inside: list[float] = []
    outside: list[float] = []
    for at, latency, qid in result["asked_rows"]:
        if qid in worked:
            (inside if at <= end and at + latency / 1000 >= start else outside).append(latency - worked[qid])

    def p(xs: list[float]) -> str:
        xs = sorted(xs)
        return f"n={len(xs)} p50 {statistics.median(xs):7.1f} p99 {xs[max(0, int(len(xs) * .99) - 1)]:7.1f}" if xs else "n=0"
    print(f"# latency less stored->claimed: answered outside the reconnect {p(outside)} | during it "
          f"({start:.0f}-{end:.0f} s) {p(inside)}", file=sys.stderr)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="500 sockets, 25 questions/s for 20 s (under a minute)")
    ap.add_argument("--sockets", type=int)
    ap.add_argument("--rate", type=int, help="questions per second")
    ap.add_argument("--seconds", type=float)
    args = ap.parse_args()
    sockets = args.sockets or (500 if args.quick else 2000)
    rate = args.rate or (25 if args.quick else 100)
    seconds = args.seconds or (20 if args.quick else 60)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    where = ("one scrm serve (its embedded worker runs the bot)" if ONE_PROCESS else
             "one scrm serve --no-worker + one scrm worker for the bot")
    print(f"web chat: {sockets} visitor sockets on {where}, {rate} questions/s for {seconds:.0f} s, "
          f"{'SQLite' if SQLITE else 'PostgreSQL + Redis'}; all sockets reconnect halfway")
    r = asyncio.run(run(sockets, rate, seconds))
    print(f"  visitor -> bot answer   p50 {r['p50_ms']:7.1f} ms   p99 {r['p99_ms']:7.1f} ms   (target p99 < 300 ms; "
          f"{r['asked']} questions, {r['answers']} answers, {r['unanswered']} unanswered at the end)")
    print(f"  serve CPU               {r['cpu_ms_per_question']:7.1f} ms per answered question over the load "
          f"({r['cpu_share'] * 100:.0f}% of one core; machine load average {r['load']:.1f} on {os.cpu_count()} cores)")
    if not SQLITE:
        print(f"  PostgreSQL CPU          {r['pg_ms_per_question']:7.1f} ms per answered question over the load (its backends "
              "of the bench's database, diagnostics)")
    print(f"  serve memory            {r['kb_per_conn']:7.1f} KB per idle connection (target < 50 KB; RSS {r['rss_mb']:.0f} MB)")
    a = r["api"]
    print(f"  API channel ingest      {a['accept_rate']:7.0f} messages/s acknowledged in the same run ({a['n']} posts from 32 "
          f"senders with every socket connected, started on a quiet server: waited {a['quiet_s']:.1f} s for the load's "
          f"events and deliveries; serve CPU {a['accept_cpu_ms']:.2f} ms per message meanwhile; the bot had sent "
          f"{a['answered_at_ack']} of its {a['answered']} answers by then: with the embedded worker this rate moves with "
          "how much of the answering falls inside the posting)")
    print(f"    stored and answered   {a['rate']:7.0f} messages/s until the bot's last answer (serve CPU {a['cpu_ms']:.2f} ms, "
          f"PostgreSQL CPU {a['pg_ms']:.2f} ms per message)")
    for name, (p50, p99) in r["stages"].items():
        print(f"  server: {name:38s} p50 {p50:7.1f} ms   p99 {p99:7.1f} ms")
    print(f"  forced reconnect        lost {r['lost']}   duplicates {r['duplicates']}   (target 0 / 0)")
    if r["reopened"]:  # the answer came after the question's own socket was closed and greeted again
        down = sorted(x[0] * 1000 for x in r["reopened"])
        shown = sorted(x[1] * 1000 for x in r["reopened"])

        def q(xs: list[float], f: float) -> float:
            return xs[min(len(xs) - 1, int(len(xs) * f))]
        print(f"    {len(down)} questions were answered after their own socket reopened: asked -> socket greeted again "
              f"p50 {statistics.median(down):.0f} p99 {q(down, .99):.0f} ms (the socket was down), greeted -> answer "
              f"shown p50 {statistics.median(shown):.0f} p99 {q(shown, .99):.0f} ms (the server's catch-up)")
    kept = sorted(r["kept"])
    if kept:  # where the tail comes from: the p99 above counts the reopened questions too
        print(f"    the {len(kept)} others (their socket up from question to answer): p50 {statistics.median(kept) * 1000:.1f} "
              f"p99 {kept[max(0, int(len(kept) * 0.99) - 1)] * 1000:.1f} ms; answers over 300 ms: {sum(x > 0.3 for x in kept)} "
              f"of these, {sum(x[0] + x[1] > 0.3 for x in r['reopened'])} reopened")
    print(f"BENCH web_chat p99_ms={r['p99_ms']:.1f} p50_ms={r['p50_ms']:.1f} kb_per_conn={r['kb_per_conn']:.1f} "
          f"api_rate={r['api']['accept_rate']:.0f} api_answered_rate={r['api']['rate']:.0f} lost={r['lost']} duplicates={r['duplicates']} "
          f"cpu_ms_per_q={r['cpu_ms_per_question']:.1f}")
    return 0 if not (r["lost"] or r["duplicates"]) else 1


if __name__ == "__main__":
    sys.exit(main())
