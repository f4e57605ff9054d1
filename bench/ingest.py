"""Ingest benchmark: signed API-channel messages from 64 concurrent senders against `scrm serve`,
next to a bare aiohttp handler (reads the body, answers 200) measured in the same run.

    python bench/ingest.py [--quick] [--messages N] [--backends sqlite,postgresql] [--embedded] [--worker-after]
                           [--no-db-function] [--no-drain]

PostgreSQL + Redis is deployed as the README says: `scrm serve --no-worker` stores and acknowledges,
one `scrm worker` does the follow-up work (FAQ bot answers, desk bookkeeping) from the event
log; the bench also prints how long after the last acknowledgement that work was done. Both run
on this machine, so the worker's share of its cores and of the database is in the figures;
`--worker-after` starts the worker once the burst is acknowledged (workers on other hosts: the
acknowledgement path alone).
PostgreSQL runs use a scratch database `scrm_bench_ingest` (created and dropped) on
127.0.0.1:5432 and Redis db 14 (emptied), as in production; skipped when unreachable.
`--no-db-function` stores PostgreSQL batches without the `scrm_ingest_batch` function (the server
is started with SCRM_INGEST_DB_FUNCTION=off); bench/ingest_pairs.py alternates it with the default.

Each backend's line also gives `scrm serve`'s CPU per acknowledged message during the measured burst
(utime + stime from /proc) and, on PostgreSQL, that of the backends serving its connections. Profiling:
`--py-spy PREFIX` records serve during the burst; BENCH_PROFILE_CMD runs a command with {pid} (e.g.
`perf record -g -p {pid} -o serve.data`) instead; BENCH_SERVE_PYTHON_ARGS adds interpreter arguments
(`-m cProfile -o serve.prof`); BENCH_CPU_ALL=1 prints the CPU per message of every process on the machine;
BENCH_KEEP_DB=1 keeps the scratch PostgreSQL database afterwards; the line also gives the WAL bytes per message
written during the burst (by every process on the server).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from _bot_reply_core import _local_ports, _ticks, backend_pids
from _common import BENCH_SERVER_ENV, free_port, fresh_redis, stop, wait_up, work_drained  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from channels.signing import signed_headers  # noqa: E402

SECRET = "bench-secret-0123456789abcdef-xyz"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_DB = os.environ.get("BENCH_PG_DB", "scrm_bench_ingest")  # per engineer on a shared server
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
BARE = """
import sys
from aiohttp import web
async def handle(request):
    await request.read()
    return web.Response(text="ok")
app = web.Application(client_max_size=1048576)
app.router.add_post("/webhooks/api/{inbox}", handle)
app.router.add_get("/healthz", lambda r: web.Response(text="ok"))
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""






async def load(url: str, total: int, senders: int = 64, contacts: int = 500) -> dict[str, float]:
    """Post `total` signed messages from `senders` concurrent connections; return rate and latency."""
    latencies: list[float] = []
    errors = 0
    counter = iter(range(total))
    run_id = os.urandom(4).hex()

    async def sender(http: aiohttp.ClientSession) -> None:
        nonlocal errors
        for i in counter:
            body = json.dumps({"id": f"{run_id}-{i}", "sender": {"id": f"c{i % contacts}", "name": f"客户{i % contacts}"},
                               "text": f"你好，我的订单 {i} 什么时候发货？"}, ensure_ascii=False).encode()
            headers = {"Content-Type": "application/json", **signed_headers(SECRET, body)}
            started = time.perf_counter()
            async with http.post(url, data=body, headers=headers) as r:
                await r.read()
                if r.status != 200:
                    errors += 1
            latencies.append(time.perf_counter() - started)

    conn = aiohttp.TCPConnector(limit=senders)
    async with aiohttp.ClientSession(connector=conn) as http:
        started = time.perf_counter()
        await asyncio.gather(*[sender(http) for _ in range(senders)])
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "rate": total / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "errors": errors,
    }


def spawn(args: list[str], env: dict[str, str], log: Path | None = None) -> subprocess.Popen[bytes]:
    # Logs go to a file: an unread pipe fills up and blocks the process in its next log line.
    out = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115
    return subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=out)




async def bench_bare(total: int) -> dict[str, float]:
    port = free_port()
    proc = spawn([sys.executable, "-c", BARE, str(port)], dict(os.environ))
    try:
        await wait_up(f"http://127.0.0.1:{port}/healthz")
        await load(f"http://127.0.0.1:{port}/webhooks/api/1", min(500, total))  # warm-up
        return await load(f"http://127.0.0.1:{port}/webhooks/api/1", total)
    finally:
        stop(proc)


async def pg_available() -> bool:
    try:
        import asyncpg

        conn = await asyncpg.connect(PG_ADMIN, timeout=3)
        await conn.execute(f"DROP DATABASE IF EXISTS {PG_DB}")
        await conn.execute(f"CREATE DATABASE {PG_DB}")
        await conn.close()
        return True
    except Exception as exc:  # noqa: BLE001
        print(f"  (PostgreSQL unavailable: {exc}; skipping)")
        return False


async def drop_pg() -> None:
    import asyncpg

    if os.environ.get("BENCH_KEEP_DB"):  # inspect it afterwards (pg_stat_user_tables, WAL, ...)
        return
    conn = await asyncpg.connect(PG_ADMIN)
    await conn.execute(f"DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)")
    await conn.close()


async def seed_inbox(db_url: str) -> int:
    from scrm.db.database import Database
    from scrm.db.migrate import upgrade
    from scrm.db.models import Inbox

    await upgrade(db_url)
    db = Database(db_url)
    async with db.transaction() as s:
        inbox = Inbox(name="bench", channel_type="api", settings={}, secrets={"secret": SECRET})
        s.add(inbox)
        await s.flush()
        inbox_id = inbox.id
    await db.dispose()
    return inbox_id


async def bench_scrm(backend: str, total: int, tmp: Path, embedded: bool = False,
                     worker_after: bool = False, db_function: bool = True, drain: bool = True,
                     py_spy: str | None = None, worker_nice: int | None = None) -> dict[str, float] | None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCRM_")}
    if worker_nice is not None:
        env["SCRM_WORKER_NICE"] = str(worker_nice)
    if backend == "sqlite":
        db_url = f"sqlite+aiosqlite:///{tmp}/bench.db"
    else:
        if not await pg_available():
            return None
        db_url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{PG_DB}"
        env["SCRM_REDIS_URL"] = REDIS_URL
        await fresh_redis(env["SCRM_REDIS_URL"])
    inbox_id = await seed_inbox(db_url)
    port = free_port()
    env |= {**BENCH_SERVER_ENV, "SCRM_DATABASE_URL": db_url, "SCRM_STORAGE_PATH": str(tmp / "files"), "SCRM_LOGGING_LEVEL": "WARNING",
            "SCRM_DATABASE_AUTO_MIGRATE": "false", "PYTHONPATH": str(ROOT)}
    if not db_function:
        env["SCRM_INGEST_DB_FUNCTION"] = "off"
    # PostgreSQL + Redis is measured as deployed (README: `scrm serve --no-worker` + `scrm worker`); SQLite
    # as the embedded default, the outbox worker inside `scrm serve`.
    separate_worker = backend == "postgresql" and not embedded
    serve = [sys.executable, *os.environ.get("BENCH_SERVE_PYTHON_ARGS", "").split(), "-m", "scrm.cli", "serve", "--port", str(port)] + (["--no-worker"] if separate_worker else [])
    procs = [spawn(serve, env, tmp / f"serve-{backend}.log")]
    worker = [sys.executable, "-m", "scrm.cli", "worker"]
    if separate_worker:
        procs.append(spawn(worker, env, tmp / f"worker-{backend}.log"))
    try:
        await wait_up(f"http://127.0.0.1:{port}/readyz")
        url = f"http://127.0.0.1:{port}/webhooks/api/{inbox_id}"
        await load(url, min(300, total))  # warm-up (contacts and conversations exist afterwards too)
        if separate_worker:
            await work_drained(db_url, 120)
            if worker_after:
                stop(procs.pop())
        spy = None
        if py_spy:  # the measured burst only, `scrm serve`
            spy = subprocess.Popen([shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy"), "record", "-p", str(procs[0].pid), "-r", "200", "-f", "raw",
                                    "-o", f"{py_spy}-{backend}.txt"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            await asyncio.sleep(1)
        elif os.environ.get("BENCH_PROFILE_CMD"):  # e.g. "perf record -g -p {pid} -o /tmp/perf.data"
            spy = subprocess.Popen(os.environ["BENCH_PROFILE_CMD"].format(pid=procs[0].pid).split(),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            await asyncio.sleep(1)
        wal_before = await _wal_lsn() if backend == "postgresql" else 0
        before = await _serve_cpu(procs[0].pid, db_url)
        res = await load(url, total)
        after = await _serve_cpu(procs[0].pid, db_url)
        if backend == "postgresql":
            res["wal_kb"] = (await _wal_lsn() - wal_before) / 1024 / total
        if os.environ.get("BENCH_CPU_ALL"):
            hz = os.sysconf("SC_CLK_TCK")
            used = {g: sum(t - before.get(g, {}).get(pid, 0) for pid, t in after[g].items()) * 1000 / hz / total
                    for g in after if g.startswith("all:")}
            print("    CPU ms/msg by process: " + ", ".join(f"{g[4:]} {v:.2f}" for g, v in sorted(used.items(), key=lambda x: -x[1])
                                                            if v >= 0.01) + f"; total {sum(used.values()):.2f}")
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait()
        hz = os.sysconf("SC_CLK_TCK")
        for group in ("serve", "serve_pg"):  # CPU ms per message of `scrm serve` and of its PostgreSQL backends during the burst
            res[f"{group}_cpu_ms"] = sum(t - before[group].get(pid, 0) for pid, t in after[group].items()) * 1000 / hz / total
        if separate_worker and worker_after:
            procs.append(spawn(worker, env, tmp / f"worker-{backend}.log"))
        if separate_worker and drain:  # the follow-up work (bot answers, desk) trails the acknowledgements
            started = time.perf_counter()
            if await work_drained(db_url, 600):
                res["drain_s"] = time.perf_counter() - started
                res["work_rate"] = total / (total / res["rate"] + res["drain_s"])
        return res
    finally:
        for proc in procs:
            stop(proc)
        if backend == "postgresql":
            await drop_pg()


async def _wal_lsn() -> int:
    """The server's WAL position in bytes (the whole server's: the worker's writes and other databases' too)."""
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN)
    try:
        return int(await conn.fetchval("SELECT pg_current_wal_lsn() - '0/0'"))
    finally:
        await conn.close()


async def _serve_cpu(pid: int, db_url: str) -> dict[str, dict[int, int]]:
    """Clock ticks so far of `scrm serve` and of the PostgreSQL backends serving its connections."""
    pg: list[int] = []
    if db_url.startswith("postgresql"):
        pg = await backend_pids(db_url, _local_ports(pid))
    return {"serve": {pid: _ticks(pid)}, "serve_pg": {p: _ticks(p) for p in pg}, **_all_ticks()}


def _all_ticks() -> dict[str, dict[int, int]]:
    """Every process's clock ticks so far, grouped by its command ("all:<name>"; the machine's CPU by consumer)."""
    groups: dict[str, dict[int, int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            name = stat.split("(", 1)[1].rsplit(")", 1)[0]
            if "scrm.cli" in cmd:
                name = "scrm " + cmd.split("scrm.cli", 1)[1].split()[0]
            elif "bench/ingest.py" in cmd:
                name = "bench client"
            elif name.startswith("postgres") or cmd.startswith("postgres:"):
                name = "postgres " + (cmd.split()[1] if len(cmd.split()) > 1 else "")
            groups.setdefault("all:" + name, {})[int(entry)] = int(fields[11]) + int(fields[12])
    return groups


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer messages (runs in under a minute)")
    ap.add_argument("--messages", type=int)
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--embedded", action="store_true", help="PostgreSQL too with the worker inside `scrm serve`")
    ap.add_argument("--worker-after", action="store_true",
                    help="start `scrm worker` once the burst is acknowledged (the acknowledgement path alone)")
    ap.add_argument("--no-db-function", action="store_true",
                    help="PostgreSQL: store batches without the scrm_ingest_batch function (the Python batch path)")
    ap.add_argument("--no-drain", action="store_true",
                    help="do not wait for the follow-up work after the burst (A/B runs of the acknowledgement path)")
    ap.add_argument("--py-spy", help="record `scrm serve` during the measured burst with py-spy into PREFIX-<backend>.txt")
    ap.add_argument("--worker-nice", type=int, help="set worker.nice (default: the product's)")
    args = ap.parse_args()
    total = args.messages or (1500 if args.quick else 6000)
    print(f"ingest benchmark: {total} signed messages, 64 concurrent senders, 500 contacts, FAQ bot on; "
          f"PostgreSQL: {'worker inside serve' if args.embedded else 'serve --no-worker + one scrm worker'}"
          f"{' started after the burst' if args.worker_after and not args.embedded else ''}")
    bare = await bench_bare(total)
    print(f"  bare aiohttp handler   {bare['rate']:8.0f} msg/s   p50 {bare['p50_ms']:6.1f} ms   p99 {bare['p99_ms']:6.1f} ms")
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends.split(","):
            res = await bench_scrm(backend, total, Path(tmp), args.embedded, args.worker_after, not args.no_db_function,
                                   not args.no_drain, args.py_spy, args.worker_nice)
            if res is None:
                continue
            results[backend] = res
            print(f"  scrm {backend:<17} {res['rate']:8.0f} msg/s   p50 {res['p50_ms']:6.1f} ms   "
                  f"p99 {res['p99_ms']:6.1f} ms   ratio {res['rate'] / bare['rate']:.2f}   errors {res['errors']:.0f}   "
                  f"serve CPU {res['serve_cpu_ms']:.2f} ms/msg" + (f" (its PostgreSQL backends {res['serve_pg_cpu_ms']:.2f})"
                                                                  if res.get("serve_pg_cpu_ms") else "")
                  + (f", WAL {res['wal_kb']:.1f} kB/msg" if "wal_kb" in res else ""))
            if "drain_s" in res:
                print(f"    follow-up work (bot, desk) in `scrm worker`: done {res['drain_s']:.1f} s after the last ack "
                      f"({res['work_rate']:.0f} msg/s overall)")
    parts = []
    head = results.get("postgresql") or results.get("sqlite")
    if head:
        parts.append(f"ratio={head['rate'] / bare['rate']:.3f}")
    for name, res in results.items():
        short = "pg" if name == "postgresql" else name
        parts += [f"{short}_rate={res['rate']:.0f}", f"{short}_ratio={res['rate'] / bare['rate']:.3f}",
                  f"{short}_p50_ms={res['p50_ms']:.1f}", f"{short}_p99_ms={res['p99_ms']:.1f}",
                  f"{short}_serve_cpu_ms={res['serve_cpu_ms']:.2f}"]
        if name == "postgresql":
            parts.append(f"pg_serve_pg_cpu_ms={res['serve_pg_cpu_ms']:.2f}")
            parts.append(f"pg_wal_kb={res['wal_kb']:.1f}")
    if "work_rate" in results.get("postgresql", {}):
        parts += [f"pg_work_rate={results['postgresql']['work_rate']:.0f}", f"pg_drain_s={results['postgresql']['drain_s']:.1f}"]
    parts += [f"bare_rate={bare['rate']:.0f}", f"bare_p99_ms={bare['p99_ms']:.1f}"]
    if "postgresql" in results and not args.embedded:
        parts.append(f"pg_worker={'after' if args.worker_after else 'during'}")
        parts.append(f"pg_db_function={'off' if args.no_db_function else 'on'}")
    print("BENCH ingest " + " ".join(parts))


if __name__ == "__main__":
    asyncio.run(main())
