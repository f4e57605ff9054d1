"""微信客服 benchmark: 64 concurrent encrypted kf callbacks against `scrm serve`, each announcing 1-50 new
customer messages that the server pulls from a fake WeCom API (kf/sync_msg pages of 1-50 messages),
next to signed HTTP API channel posts of the same message counts to the same server in the same run
(the baseline). The fake WeCom API runs in a process of its own (bench/_fake_wecom_process.py): serving
pages in the senders' event loop added its stalls to the acknowledgement times the senders measure.

    python bench/wecom_kf.py [--quick] [--callbacks N] [--accounts K]

Deployed as the README says: `scrm serve --no-worker` answers callbacks and pulls, one `scrm worker`
runs the bot (its kf/send_msg calls go to the fake). Measured: stored messages per second (from the
first callback to the last message committed), the p99 from a callback to each of its messages being
stored, the callback acknowledgement p99, and lost / duplicated messages (every announced msgid must
be stored exactly once). Uses a scratch PostgreSQL database (BENCH_PG_DB, created and dropped) and a
Redis db (BENCH_REDIS_URL, emptied).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from _common import BENCH_SERVER_ENV, free_port, fresh_redis, stop, wait_up  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from channels.signing import signed_headers  # noqa: E402
from tests.channels.wecom.wecom_samples import (  # noqa: E402
    AES_KEY,
    CORP_ID,
    SECRET,
    TOKEN,
    envelope,
    kf_event_xml,
    text_item,
)

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_DB = os.environ.get("BENCH_PG_DB", "scrm_bench_wecomkf")
DB_URL = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{PG_DB}"
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
API_SECRET = "bench-secret-0123456789abcdef-xyz"
SENDERS = 64
CUSTOMERS = 500


def trace(what: str) -> None:
    """Phase marks on stderr (BENCH_TRACE=1), to line up with a CPU sampler's output."""
    if os.environ.get("BENCH_TRACE"):
        print(f"{time.time() % 1000:8.2f} {what}", file=sys.stderr, flush=True)


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used: steadier than wall time on a shared machine."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime (fields 14, 15)


async def pg_backends() -> list[int]:
    """PostgreSQL backends connected to the bench database (the servers' pools and the bench's own counts)."""
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN, timeout=5)
    try:
        return [r["pid"] for r in await conn.fetch("SELECT pid FROM pg_stat_activity WHERE datname = $1", PG_DB)]
    finally:
        await conn.close()


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


async def cpu_sample(procs: list[subprocess.Popen[bytes]], fake: FakeProcess) -> dict[str, dict[int, float]]:
    """CPU seconds so far of serve, the worker, the bench database's PostgreSQL backends and this process
    (the senders) and the fake WeCom API's process."""
    def safe(pid: int) -> float:
        try:
            return cpu_seconds(pid)
        except OSError:
            return 0.0

    pg = await pg_backends()
    # The worker's children: its 微信客服 pull runner process, where the worker hosts one.
    return {"serve": {procs[0].pid: safe(procs[0].pid)}, "worker": {procs[1].pid: safe(procs[1].pid)},
            "runner": {pid: safe(pid) for pid in children(procs[1].pid)},
            "pg": {pid: safe(pid) for pid in pg}, "bench": {0: sum(os.times()[:2])},
            "fake": {fake.proc.pid: safe(fake.proc.pid)}}


def queue_wait_seconds(pid: int) -> float:
    """Time a process's main thread waited on a run queue, ready but not running (/proc/<pid>/schedstat):
    the CPU starvation behind an event loop's lag."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def cpu_delta(before: dict[str, dict[int, float]], after: dict[str, dict[int, float]]) -> dict[str, float]:
    """CPU seconds per group between two samples (a backend that appeared counts from 0)."""
    return {g: sum(t - before[g].get(pid, 0.0) for pid, t in after[g].items()) for g in after}


async def db_counts() -> dict[str, int]:
    """Diagnostics (BENCH_EVENTS=1): events logged by name, deliveries by kind, messages by direction and
    the bench database's transaction and row counters, to compare what a kf message costs with an API one."""
    import asyncpg

    conn = await asyncpg.connect(DB_URL.replace("+asyncpg", ""), timeout=5)
    try:
        out = {f"event {r[0]}": int(r[1]) for r in await conn.fetch("SELECT name, count(*) FROM events GROUP BY 1")}
        out |= {f"delivery {r[0]}/{r[1]}": int(r[2]) for r in await conn.fetch(
            "SELECT kind, status, count(*) FROM deliveries GROUP BY 1, 2")}
        out |= {f"message {r[0]}/{r[1]}": int(r[2]) for r in await conn.fetch(
            "SELECT direction, sender_kind, count(*) FROM messages GROUP BY 1, 2")}
        row = await conn.fetchrow("SELECT xact_commit, tup_returned, tup_fetched, tup_inserted, tup_updated, "
                                  "tup_deleted FROM pg_stat_database WHERE datname = $1", PG_DB)
        out |= {f"pg {k}": int(v) for k, v in dict(row).items()}
        for r in await conn.fetch("SELECT relname, seq_scan, seq_tup_read, idx_scan, idx_tup_fetch FROM pg_stat_user_tables"):
            out |= {f"table {r[0]} {k}": int(r[k] or 0) for k in ("seq_scan", "seq_tup_read", "idx_scan", "idx_tup_fetch")}
        for r in await conn.fetch("SELECT indexrelname, idx_scan, idx_tup_read FROM pg_stat_user_indexes"):
            out |= {f"index {r[0]} {k}": int(r[k] or 0) for k in ("idx_scan", "idx_tup_read")}
    finally:
        await conn.close()
    return out


def print_counts(label: str, before: dict[str, int], after: dict[str, int], msgs: int) -> None:
    print(f"  diag {label}: per message ({msgs})", file=sys.stderr)
    for key in sorted(after):
        d = after[key] - before.get(key, 0)
        if d:
            print(f"    {key:50s} {d:8d} {d / msgs:8.3f}", file=sys.stderr)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[max(0, int(len(values) * q) - 1)] if values else 0.0


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


async def seed(fake_url: str, accounts: int) -> tuple[int, list[tuple[int, str]]]:
    from scrm.db.database import Database
    from scrm.db.migrate import upgrade
    from scrm.db.models import Inbox

    await upgrade(DB_URL)
    db = Database(DB_URL)
    kf: list[tuple[int, str]] = []
    async with db.transaction() as s:
        api = Inbox(name="bench api", channel_type="api", settings={}, secrets={"secret": API_SECRET})
        s.add(api)
        for n in range(accounts):
            kfid = f"wkBench{n:025d}"
            box = Inbox(name=f"bench 微信客服 {n}", channel_type="wecom_kf",
                        settings={"corp_id": CORP_ID, "open_kfid": kfid, "api_base_url": fake_url},
                        secrets={"secret": SECRET, "token": TOKEN, "encoding_aes_key": AES_KEY})
            s.add(box)
            await s.flush()
            kf.append((box.id, kfid))
        await s.flush()
        api_id = api.id
    await db.dispose()
    return api_id, kf


async def stored_times(prefix: str) -> dict[str, float]:
    """external_id -> commit-side created_at (epoch seconds) of the run's stored messages."""
    import asyncpg

    conn = await asyncpg.connect(DB_URL.replace("+asyncpg", ""), timeout=5)
    try:
        rows = await conn.fetch("SELECT external_id, extract(epoch from created_at) AS at FROM messages "
                                "WHERE external_id LIKE $1 AND direction = 'in'", prefix + "%")
    finally:
        await conn.close()
    return {r["external_id"]: float(r["at"]) for r in rows}


async def stored_count(prefix: str) -> int:
    """How many of the run's messages are stored (a count, so waiting adds little load to the measured server)."""
    import asyncpg

    conn = await asyncpg.connect(DB_URL.replace("+asyncpg", ""), timeout=5)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM messages WHERE external_id LIKE $1 AND direction = 'in'",
                                       prefix + "%"))
    finally:
        await conn.close()


async def count_duplicates(prefix: str) -> int:
    import asyncpg

    conn = await asyncpg.connect(DB_URL.replace("+asyncpg", ""), timeout=5)
    try:
        return int(await conn.fetchval("SELECT count(*) - count(DISTINCT (inbox_id, external_id)) FROM messages "
                                       "WHERE external_id LIKE $1", prefix + "%"))
    finally:
        await conn.close()


async def settle(max_wait: float = 180.0) -> None:
    """Wait until the worker has caught up (every logged event worked, no new bot answers for 2 s): each
    phase starts on a quiet server. Bot answers alone were not enough: the worker was still working the
    previous phase's events (40-70% of a core) when the next phase started, which the next phase paid for."""
    import asyncpg

    conn = await asyncpg.connect(DB_URL.replace("+asyncpg", ""), timeout=5)
    try:
        last, still_since = -1, time.monotonic()
        deadline = time.monotonic() + max_wait
        while time.monotonic() < deadline:
            n = int(await conn.fetchval("SELECT count(*) FROM messages WHERE direction = 'out'"))
            n += int(await conn.fetchval("SELECT count(*) FROM events WHERE worked_at IS NULL")) * 1_000_000
            if n != last:
                last, still_since = n, time.monotonic()
            elif time.monotonic() - still_since > 2.0:
                return
            await asyncio.sleep(0.25)
    finally:
        await conn.close()


class FakeProcess:
    """The fake WeCom API in its own process (bench/_fake_wecom_process.py), driven over HTTP."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "_fake_wecom_process.py")],
                                     stdout=subprocess.PIPE, cwd=ROOT)
        assert self.proc.stdout is not None
        self.base_url = f"http://127.0.0.1:{int(self.proc.stdout.readline())}"

    async def add(self, http: aiohttp.ClientSession, items: list[dict[str, Any]], open_kfid: str) -> str:
        """Make the messages readable in WeCom; returns the token of the callback that announces them."""
        async with http.post(f"{self.base_url}/_bench/add", json={"items": items, "open_kfid": open_kfid}) as r:
            return str((await r.json())["token"])

    async def setup(self, **fields: Any) -> None:
        async with aiohttp.ClientSession() as http, http.post(f"{self.base_url}/_bench/setup", json=fields) as r:
            r.raise_for_status()

    async def sync_calls(self) -> int:
        async with aiohttp.ClientSession() as http, http.get(f"{self.base_url}/_bench/stats") as r:
            return int((await r.json())["sync_calls"])

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


def query_kind(query: str) -> str:
    """A short name for a statement seen in pg_stat_activity (its verb and first table)."""
    words = query.split()
    verb = words[0].upper() if words else "?"
    for i, w in enumerate(words):
        if w.upper() in ("INTO", "FROM", "UPDATE") and i + 1 < len(words):
            return f"{verb} {words[i + 1].strip('(').lower()}"
    return verb


def sample_waits(out: str) -> None:
    """Diagnostics (BENCH_WAITS=1), in a process of its own (the senders' loop starved it): every 10 ms, what
    the bench database's active backends wait on (pg_stat_activity wait events by statement), to tell row
    locks from WAL flushes and CPU. Lines of `epoch<TAB>statement<TAB>wait` in `out`, until killed."""
    import asyncpg

    async def loop() -> None:
        conn = await asyncpg.connect(PG_ADMIN, timeout=5)
        with open(out, "a", buffering=1) as f:
            while True:
                rows = await conn.fetch("SELECT wait_event_type, wait_event, query FROM pg_stat_activity WHERE "
                                        "datname = $1 AND state = 'active' AND pid <> pg_backend_pid()", PG_DB)
                now = time.time()
                for r in rows:
                    wait = f"{r['wait_event_type']}:{r['wait_event']}" if r["wait_event_type"] else "CPU"
                    f.write(f"{now:.4f}\t{query_kind(r['query'] or '')}\t{wait}\n")
                await asyncio.sleep(0.01)

    asyncio.run(loop())


def read_waits(path: str) -> list[tuple[float, str, str]]:
    samples = []
    with open(path) as f:
        for line in f:
            at, kind, wait = line.rstrip("\n").split("\t")
            samples.append((float(at), kind, wait))
    return samples


def print_waits(samples: list[tuple[float, str, str]], slow: list[tuple[float, float]]) -> None:
    """The sampled wait events, overall and during the slow acknowledgements (their [start, end] windows)."""
    def summary(picked: list[tuple[float, str, str]]) -> str:
        counts: dict[tuple[str, str], int] = {}
        for _, kind, wait in picked:
            counts[(kind, wait)] = counts.get((kind, wait), 0) + 1
        top = sorted(counts.items(), key=lambda kv: -kv[1])[:12]
        return ", ".join(f"{k} [{w}] {n}" for (k, w), n in top)

    slow.sort()
    during = [s for s in samples if any(a <= s[0] <= b for a, b in slow)]
    print(f"  pg waits (kf phase, {len(samples)} active-backend samples): {summary(samples)}")
    print(f"  pg waits during the {len(slow)} acks over 100 ms ({len(during)} samples): {summary(during)}")


def trace_configs() -> list[aiohttp.TraceConfig]:
    """Diagnostics (BENCH_ACKS): when each callback's connection, headers, body and answer happened, to tell
    the senders' own delays from the server's."""
    if not os.environ.get("BENCH_ACKS"):
        return []
    config = aiohttp.TraceConfig()

    def mark(name: str) -> Any:
        async def on(session: Any, ctx: Any, params: Any) -> None:
            if isinstance(ctx.trace_request_ctx, dict):
                ctx.trace_request_ctx.setdefault(name, time.time())
        return on

    for name in ("connection_queued_end", "connection_create_end", "connection_reuseconn", "request_headers_sent",
                 "request_chunk_sent", "request_end"):
        getattr(config, f"on_{name}").append(mark(name))
    return [config]


async def open_connections(http: aiohttp.ClientSession, urls: list[str]) -> None:
    """Open the senders' keep-alive connections before the clock runs (BENCH_COLD=1: do not). The 64 senders
    share one event loop: in the first burst their 128 connections were set up in it while the first
    callbacks were being timed, 35-75 ms of the slowest acknowledgements spent before the request reached
    the wire (BENCH_ACKS stages), none of it in the server. WeCom's own connection setup is not the
    answer time the 5 s timeout or the target is about."""
    if os.environ.get("BENCH_COLD"):
        return

    async def get(url: str) -> None:
        async with http.get(url) as r:
            await r.read()

    await asyncio.gather(*[get(url) for url in urls for _ in range(SENDERS)])


async def kf_run(base: str, fake: FakeProcess, kf: list[tuple[int, str]], batches: list[int], run: str,
                 timeout: float) -> dict[str, Any]:
    """Each callback first makes 1-50 messages readable in WeCom, then announces them, as WeCom does."""
    sent_at: dict[str, float] = {}
    acks: list[float] = []
    ack_log: list[tuple[str, float, float, dict[str, float]]] = []  # nonce, start, seconds, client stages
    errors = 0
    todo = iter(enumerate(batches))
    total = sum(batches)

    async def sender(http: aiohttp.ClientSession) -> None:
        nonlocal errors
        for n, size in todo:
            box, kfid = kf[n % len(kf)]
            items = [text_item(f"{run}-{n}-{i}", f"wm{run}{(n * 7 + i) % CUSTOMERS:06d}", f"你好，订单 {n}-{i} 什么时候发货？",
                               open_kfid=kfid) for i in range(size)]
            started = time.time()
            for item in items:
                sent_at[item["msgid"]] = started
            query, body = envelope(kf_event_xml(await fake.add(http, items, kfid), kfid))
            wall, t0 = time.time(), time.perf_counter()
            stages: dict[str, float] = {}
            async with http.post(f"{base}/webhooks/wecom/{box}", params=query, data=body,
                                 headers={"Content-Type": "text/xml"}, trace_request_ctx=stages) as r:
                await r.read()
                errors += r.status != 200
            acks.append(time.perf_counter() - t0)
            ack_log.append((query["nonce"], wall, acks[-1], stages))
            # Let the other senders whose answers came in the same read take their time first: the 64
            # senders share this event loop, and each one's next callback (its items, the fake's control
            # call, the encryption: ~1-2 ms) ran before the others noted theirs, adding up to ~100 ms of
            # this process's own queueing to the acknowledgements of a burst answered together.
            await asyncio.sleep(0)

    started = time.time()
    sampler = None
    if os.environ.get("BENCH_WAITS"):
        waits = tempfile.NamedTemporaryFile(suffix=".waits", delete=False).name  # noqa: SIM115
        sampler = subprocess.Popen([sys.executable, __file__, "--sample-waits-to", waits], cwd=ROOT)
        while not os.path.getsize(waits) and sampler.poll() is None:  # sampling (the database is never idle)
            await asyncio.sleep(0.1)
    conn = aiohttp.TCPConnector(limit=2 * SENDERS)  # each sender: the fake's control call, then the callback
    async with aiohttp.ClientSession(connector=conn, trace_configs=trace_configs()) as http:
        await open_connections(http, [f"{base}/healthz", f"{fake.base_url}/_bench/stats"])
        await asyncio.gather(*[sender(http) for _ in range(SENDERS)])
    if sampler is not None:
        sampler.kill()
        sampler.wait()
        print_waits(read_waits(waits), [(w, w + a) for _, w, a, _ in ack_log if a > 0.1])
        os.unlink(waits)
    if os.environ.get("BENCH_ACKS"):  # diagnostics: every acknowledgement, to line up with the server's traces
        with open(os.environ["BENCH_ACKS"], "a") as f:
            f.writelines(f"{n} {w:.4f} {a * 1000:.2f} " + " ".join(f"{k}={(v - w) * 1000:.2f}" for k, v in st.items())
                         + "\n" for n, w, a, st in ack_log)
    # Wait with a cheap count; the commit times are read once at the end (the rate and latencies come
    # from them, not from when this loop noticed).
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and await stored_count(run + "-") < total:
        await asyncio.sleep(0.5)
    stored = await stored_times(run + "-")
    latencies = [stored[m] - sent_at[m] for m in sent_at if m in stored]
    finished = max(stored.values(), default=started)
    return {"rate": len(stored) / max(finished - started, 1e-9), "ack_p99_ms": pct(acks, 0.99) * 1000,
            "ack_p50_ms": statistics.median(acks) * 1000, "stored_p99_ms": pct(latencies, 0.99) * 1000,
            "stored_p50_ms": (statistics.median(latencies) * 1000) if latencies else 0.0,
            "lost": total - len(stored), "duplicates": await count_duplicates(run + "-"), "errors": errors,
            "messages": total}


async def api_run(base: str, api_id: int, batches: list[int], run: str) -> dict[str, Any]:
    """The baseline: signed API posts carrying the same numbers of messages."""
    requests = []
    for n, size in enumerate(batches):
        body = json.dumps({"messages": [{"id": f"{run}-{n}-{i}", "sender": {"id": f"c{run}{(n * 7 + i) % CUSTOMERS}"},
                                         "text": f"你好，订单 {n}-{i} 什么时候发货？"} for i in range(size)]},
                          ensure_ascii=False).encode()
        requests.append(body)
    todo = iter(requests)
    errors = 0
    acks: list[float] = []

    async def sender(http: aiohttp.ClientSession) -> None:
        nonlocal errors
        for body in todo:
            headers = {"Content-Type": "application/json", **signed_headers(API_SECRET, body)}
            t0 = time.perf_counter()
            async with http.post(f"{base}/webhooks/api/{api_id}", data=body, headers=headers) as r:
                await r.read()
                errors += r.status != 200
            acks.append(time.perf_counter() - t0)

    conn = aiohttp.TCPConnector(limit=SENDERS)
    async with aiohttp.ClientSession(connector=conn) as http:
        started = time.perf_counter()
        await asyncio.gather(*[sender(http) for _ in range(SENDERS)])
        elapsed = time.perf_counter() - started
    return {"rate": sum(batches) / elapsed, "errors": errors, "ack_p99_ms": pct(acks, 0.99) * 1000}


async def run(callbacks: int, accounts: int, seed_value: int) -> dict[str, Any]:
    rnd = random.Random(seed_value)
    await create_db()
    await fresh_redis(REDIS_URL)
    procs: list[subprocess.Popen[bytes]] = []
    fake = FakeProcess()
    try:
        api_id, kf = await seed(fake.base_url, accounts)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        with tempfile.TemporaryDirectory() as tmp:
            env = {k: v for k, v in os.environ.items() if not k.startswith("SCRM_")}
            env |= {**BENCH_SERVER_ENV, "SCRM_DATABASE_URL": DB_URL, "SCRM_REDIS_URL": REDIS_URL,
                    "SCRM_DATABASE_AUTO_MIGRATE": "false", "SCRM_STORAGE_PATH": f"{tmp}/files",
                    "SCRM_LOGGING_LEVEL": "ERROR", "PYTHONPATH": str(ROOT)}
            profile = os.environ.get("BENCH_PROFILE_DIR")  # cProfile the server processes (slower)
            for name, args in (("serve", ["serve", "--port", str(port), "--no-worker"]), ("worker", ["worker"])):
                prof = ["-m", "cProfile", "-o", f"{profile}/{name}.prof"] if profile else []
                procs.append(subprocess.Popen([sys.executable, *prof, "-m", "scrm.cli", *args], env=env, cwd=ROOT,
                                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            await wait_up(f"{base}/readyz")
            run_id = os.urandom(3).hex()
            warm = [rnd.randint(1, 50) for _ in range(max(8, callbacks // 8))]
            await api_run(base, api_id, warm, run_id + "w0")
            await kf_run(base, fake, kf, warm, run_id + "w1", timeout=60)
            batches = [rnd.randint(1, 50) for _ in range(callbacks)]
            await fake.setup(page_sizes=[rnd.randint(1, 50) for _ in range(callbacks * 4)])  # pages of 1-50
            await settle()
            trace("api phase")
            diag = bool(os.environ.get("BENCH_EVENTS"))
            counts0 = await db_counts() if diag else {}
            cpu0 = await cpu_sample(procs, fake)
            api = await api_run(base, api_id, batches, run_id + "a")
            trace("api done")
            await settle()
            if os.environ.get("BENCH_ANALYZE"):  # diagnostics: the kf phase on fresh planner statistics
                import asyncpg

                conn = await asyncpg.connect(DB_URL.replace("+asyncpg", ""), timeout=5)
                await conn.execute("ANALYZE")
                await conn.close()
            cpu1 = await cpu_sample(procs, fake)
            counts1 = await db_counts() if diag else {}
            trace("kf phase")
            serve_queued, own_queued = queue_wait_seconds(procs[0].pid), queue_wait_seconds(os.getpid())
            if os.environ.get("BENCH_PROFILES"):  # batchget answers a profile (gender) for every customer
                await fake.setup(customers={
                    f"wm{run_id}k{k:06d}": {"external_userid": f"wm{run_id}k{k:06d}", "nickname": f"客户{k}",
                                            "gender": 1 + k % 2, "unionid": "",
                                            "avatar": f"https://wework.qpic.cn/avatar/{k}/0"}
                    for k in range(CUSTOMERS)})
            kfr = await kf_run(base, fake, kf, batches, run_id + "k", timeout=180)
            trace("kf done")
            # Until the last message is stored (the callbacks, the pulls, the start of the bot's work): serve's
            # CPU on the callbacks themselves, without its idle ticks while the worker catches up below.
            live = cpu_delta(cpu1, await cpu_sample(procs, fake))["serve"]
            queued = queue_wait_seconds(procs[0].pid) - serve_queued
            bench_queued = queue_wait_seconds(os.getpid()) - own_queued
            await settle()
            trace("kf settled")
            cpu2 = await cpu_sample(procs, fake)
            if diag:
                await asyncio.sleep(1.0)  # pg_stat_database counters are flushed by the backends now and then
                counts2 = await db_counts()
                print_counts("api phase", counts0, counts1, sum(batches))
                print_counts("kf phase", counts1, counts2, sum(batches))
            api_cpu, kf_cpu = cpu_delta(cpu0, cpu1), cpu_delta(cpu1, cpu2)
            cpu = {f"api_{g}": v for g, v in api_cpu.items()} | {f"kf_{g}": v for g, v in kf_cpu.items()}
            cpu["kf_serve_live"] = live
            cpu["kf_serve_queued"], cpu["kf_bench_queued"] = queued, bench_queued
            return {"api": api, "kf": kfr, "sync_calls": await fake.sync_calls(), "cpu": cpu,
                    "callbacks": len(batches)}
    finally:
        for proc in procs:
            stop(proc)
        fake.close()
        if not os.environ.get("BENCH_KEEP_DB"):  # diagnostics: keep the scratch database to inspect it
            await drop_db()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer callbacks (under a minute)")
    ap.add_argument("--callbacks", type=int)
    ap.add_argument("--accounts", type=int, default=1, help="kf accounts the callbacks are spread over")
    ap.add_argument("--seed", type=int, default=17)
    ap.add_argument("--sample-waits-to", help=argparse.SUPPRESS)  # the BENCH_WAITS sampler's own process
    args = ap.parse_args()
    if args.sample_waits_to:
        sample_waits(args.sample_waits_to)
        return 0
    callbacks = args.callbacks or (120 if args.quick else 600)
    print(f"wecom_kf: {callbacks} encrypted kf callbacks from {SENDERS} concurrent senders, 1-50 new messages each, "
          f"sync_msg pages of 1-50, {args.accounts} kf account(s), {CUSTOMERS} customers; scrm serve --no-worker + "
          "scrm worker on PostgreSQL + Redis; baseline: API posts of the same message counts")
    res = asyncio.run(run(callbacks, args.accounts, args.seed))
    api, kf = res["api"], res["kf"]
    ratio = kf["rate"] / api["rate"]
    print(f"  API channel (baseline)   {api['rate']:7.0f} msgs/s   answer p99 {api['ack_p99_ms']:.1f} ms (it stores "
          f"before answering)   errors {api['errors']}")
    print(f"  微信客服 stored          {kf['rate']:7.0f} msgs/s   {kf['messages']} messages, "
          f"{res['sync_calls']} sync_msg calls")
    print(f"  callback ack             p50 {kf['ack_p50_ms']:7.1f} ms   p99 {kf['ack_p99_ms']:7.1f} ms (target < 100)")
    print(f"  callback -> stored       p50 {kf['stored_p50_ms']:7.1f} ms   p99 {kf['stored_p99_ms']:7.1f} ms")
    print(f"  ratio {ratio:.2f} (target >= 0.70)   lost {kf['lost']}   duplicates {kf['duplicates']}   "
          f"callback errors {kf['errors']}")
    cpu, n = res["cpu"], res["callbacks"]
    msgs = kf["messages"]
    per_msg = "   ".join(f"{g} {cpu['kf_' + g] * 1000 / msgs:.2f} vs {cpu['api_' + g] * 1000 / msgs:.2f}"
                         for g in ("serve", "worker", "runner", "pg", "bench", "fake"))
    print(f"  CPU ms per stored message, kf vs API (phase incl. settling): {per_msg}")
    print(f"  CPU (/proc, phase incl. the worker catching up): serve {cpu['kf_serve'] * 1000 / n:.1f} ms per kf "
          f"callback vs {cpu['api_serve'] * 1000 / n:.1f} ms per API post; worker {cpu['kf_worker'] * 1000 / n:.1f} "
          f"vs {cpu['api_worker'] * 1000 / n:.1f} ms")
    print(f"  CPU (/proc, from the first callback to the last message stored): serve "
          f"{cpu['kf_serve_live'] * 1000 / n:.2f} ms per kf callback")
    print(f"  run-queue wait per kf callback, from the first callback to the last message stored (schedstat): serve "
          f"{cpu['kf_serve_queued'] * 1000 / n:.2f} ms, the senders {cpu['kf_bench_queued'] * 1000 / n:.2f} ms")
    print(f"BENCH wecom_kf ratio={ratio:.3f} ack_p99_ms={kf['ack_p99_ms']:.1f} stored_p99_ms={kf['stored_p99_ms']:.1f} "
          f"rate={kf['rate']:.0f} api_rate={api['rate']:.0f} lost={kf['lost']} duplicates={kf['duplicates']} "
          f"api_ack_p99_ms={api['ack_p99_ms']:.1f} serve_cpu_ms_per_callback={cpu['kf_serve'] * 1000 / n:.2f} "
          f"serve_cpu_ms_per_api_post={cpu['api_serve'] * 1000 / n:.2f} "
          f"serve_cpu_ms_per_callback_live={cpu['kf_serve_live'] * 1000 / n:.2f} "
          + " ".join(f"{p}_{g}_cpu_ms_per_msg={cpu[p + '_' + g] * 1000 / msgs:.3f}"
                     for p in ("kf", "api") for g in ("serve", "worker", "runner", "pg", "bench", "fake")))
    return 0 if not (kf["lost"] or kf["duplicates"] or kf["errors"]) else 1


if __name__ == "__main__":
    sys.exit(main())
