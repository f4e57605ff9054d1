"""WeChat callback benchmark: AES-encrypted text callbacks (safe mode) from 64 concurrent senders
against a `scrm serve` process on PostgreSQL + Redis, next to signed API-channel posts to the same
server in the same run (the baseline).

    python bench/wechat_callback.py [--quick] [--messages N] [--no-passive] [--senders N] [--builtin-worker]

Each callback is decrypted, stored, and then waits (up to passive_reply_timeout) for the FAQ bot's
answer to send back in the HTTP response, as in production; `--no-passive` answers `success` right
after the commit. Deployed as the README says: `scrm serve --no-worker` answers the callbacks and one
`scrm worker` runs the bot (its sends go to a closed local port: no message leaves the machine);
`--builtin-worker` runs one `scrm serve` with its worker in the process instead (the embedded
default). The share of callbacks answered with the bot's passive reply is printed too.
Uses a scratch database (created and dropped; BENCH_PG_DB, default `scrm_bench_wxcallback`) and a
Redis db it empties (BENCH_REDIS_URL, default redis://127.0.0.1:6379/13).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
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
from tests.channels.wechat.wechat_callbacks import AES_KEY, TOKEN, encrypted_request  # noqa: E402

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_DB = os.environ.get("BENCH_PG_DB", "scrm_bench_wxcallback")
DB_URL = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{PG_DB}"
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
APP_ID = "wx1234567890abcdef"
API_SECRET = "bench-secret-0123456789abcdef-xyz"
SENDERS = int(os.environ.get("BENCH_SENDERS", "64"))
CONTACTS = 500

Request = tuple[str, bytes, dict[str, str]]  # url (with query), body, headers






def wechat_requests(base: str, inbox_id: int, run: str, n: int) -> list[Request]:
    """Encrypted text callbacks exactly as WeChat sends them (built before timing starts)."""
    out: list[Request] = []
    for i in range(n):
        xml = ("<xml><ToUserName><![CDATA[gh_bench]]></ToUserName>"
               f"<FromUserName><![CDATA[o{run}{i % CONTACTS}]]></FromUserName>"
               f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
               f"<Content><![CDATA[你好，我的订单 {i} 什么时候发货？]]></Content>"
               f"<MsgId>{int(run, 16) * 10**7 + i}</MsgId></xml>")
        req = encrypted_request(xml, app_id=APP_ID)
        url = str(aiohttp.client.URL(f"{base}/webhooks/wechat/{inbox_id}").with_query(dict(req.query)))
        out.append((url, req.body, {"Content-Type": "text/xml"}))
    return out


def api_requests(base: str, inbox_id: int, run: str, n: int) -> list[Request]:
    """Signed API-channel posts with the same text and contact spread (signed when sent: 5-min window)."""
    out: list[Request] = []
    for i in range(n):
        body = json.dumps({"id": f"{run}-{i}", "sender": {"id": f"c{run}{i % CONTACTS}", "name": f"客户{i % CONTACTS}"},
                           "text": f"你好，我的订单 {i} 什么时候发货？"}, ensure_ascii=False).encode()
        out.append((f"{base}/webhooks/api/{inbox_id}", body,
                    {"Content-Type": "application/json", **signed_headers(API_SECRET, body)}))
    return out


async def load(requests: list[Request], check: bytes | None = None) -> dict[str, float]:
    """Send the prepared requests from SENDERS concurrent connections; rate and latency."""
    latencies: list[float] = []
    errors = 0
    passive = 0
    queue = iter(requests)

    async def sender(http: aiohttp.ClientSession) -> None:
        nonlocal errors, passive
        for url, body, headers in queue:
            started = time.perf_counter()
            async with http.post(url, data=body, headers=headers) as r:
                answer = await r.read()
                if r.status != 200 or (check is not None and not answer):
                    errors += 1
                passive += answer.startswith(b"<xml")
            latencies.append(time.perf_counter() - started)

    conn = aiohttp.TCPConnector(limit=SENDERS)
    async with aiohttp.ClientSession(connector=conn) as http:
        started = time.perf_counter()
        await asyncio.gather(*[sender(http) for _ in range(SENDERS)])
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {"rate": len(requests) / elapsed, "p50_ms": statistics.median(latencies) * 1000,
            "p99_ms": latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000, "errors": errors,
            "passive": passive / len(requests)}


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


async def seed(passive: bool) -> tuple[int, int]:
    from scrm.db.database import Database
    from scrm.db.migrate import upgrade
    from scrm.db.models import Inbox

    await upgrade(DB_URL)
    db = Database(DB_URL)
    async with db.transaction() as s:
        api = Inbox(name="bench api", channel_type="api", settings={}, secrets={"secret": API_SECRET})
        # The API base URL is a closed local port: nothing may leave the machine.
        wx = Inbox(name="bench 公众号", channel_type="wechat_oa",
                   settings={"app_id": APP_ID, "api_base_url": "http://127.0.0.1:9",
                             **({} if passive else {"passive_reply_timeout": 0})},
                   secrets={"app_secret": "bench-app-secret", "token": TOKEN, "encoding_aes_key": AES_KEY})
        s.add_all([api, wx])
        await s.flush()
        ids = (api.id, wx.id)
    await db.dispose()
    return ids




async def run(total: int, passive: bool, builtin_worker: bool = False) -> dict[str, Any]:
    await create_db()
    await fresh_redis(REDIS_URL)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        api_id, wx_id = await seed(passive)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        with tempfile.TemporaryDirectory() as tmp:
            env = {k: v for k, v in os.environ.items() if not k.startswith("SCRM_")}
            env |= {**BENCH_SERVER_ENV, "SCRM_DATABASE_URL": DB_URL, "SCRM_REDIS_URL": REDIS_URL, "SCRM_DATABASE_AUTO_MIGRATE": "false",
                    "SCRM_STORAGE_PATH": f"{tmp}/files", "SCRM_LOGGING_LEVEL": "ERROR", "PYTHONPATH": str(ROOT)}
            roles = [["serve", "--port", str(port)]] if builtin_worker else \
                [["serve", "--port", str(port), "--no-worker"], ["worker"]]
            for args in roles:
                procs.append(subprocess.Popen([sys.executable, "-m", "scrm.cli", *args],
                                              env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            await wait_up(f"{base}/readyz")
            warm = min(200, total // 4)
            run_id = os.urandom(3).hex()
            await load(api_requests(base, api_id, run_id + "0", warm))
            await load(wechat_requests(base, wx_id, run_id + "1", warm), check=b"")
            # Alternate the order so neither channel always gets the warmer (or busier) server.
            api_res = await load(api_requests(base, api_id, run_id + "2", total))
            wx_res = await load(wechat_requests(base, wx_id, run_id + "3", total), check=b"")
            return {"api": api_res, "wechat": wx_res}
    finally:
        for proc in procs:
            stop(proc)
        await drop_db()


def main() -> int:
    global SENDERS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer callbacks (under a minute)")
    ap.add_argument("--messages", type=int)
    ap.add_argument("--no-passive", action="store_true", help="answer `success` without waiting for the bot")
    ap.add_argument("--senders", type=int, help=f"concurrent senders (default {SENDERS}; 1 = low load)")
    ap.add_argument("--builtin-worker", action="store_true", help="one `scrm serve` with its in-process worker")
    args = ap.parse_args()
    SENDERS = args.senders or SENDERS
    total = args.messages or (600 if args.quick else 3000)
    mode = "answer `success` after commit" if args.no_passive else "wait for the bot's passive reply (<= 4 s)"
    deploy = "scrm serve with its built-in worker" if args.builtin_worker else "scrm serve --no-worker + scrm worker"
    print(f"wechat callback: {total} encrypted text callbacks, {SENDERS} concurrent senders, {CONTACTS} contacts; "
          f"{deploy} on PostgreSQL + Redis; {mode}")
    res = asyncio.run(run(total, passive=not args.no_passive, builtin_worker=args.builtin_worker))
    api, wx = res["api"], res["wechat"]
    ratio = wx["rate"] / api["rate"]
    for name, r in (("API channel (baseline)", api), ("WeChat safe mode", wx)):
        print(f"  {name:<24} {r['rate']:7.0f} req/s   p50 {r['p50_ms']:7.1f} ms   p99 {r['p99_ms']:7.1f} ms   "
              f"errors {r['errors']:.0f}")
    print(f"  throughput ratio {ratio:.2f} (target >= 0.70)   p99 target < 200 ms (WeChat waits 5 s)   "
          f"passive replies {wx['passive']:.0%} (the rest: `success`, answer via the customer-service API)")
    print(f"BENCH wechat_callback throughput_ratio={ratio:.3f} p99_ms={wx['p99_ms']:.1f} api_p99_ms={api['p99_ms']:.1f} "
          f"rate={wx['rate']:.0f} api_rate={api['rate']:.0f} p50_ms={wx['p50_ms']:.1f} passive={wx['passive']:.3f} "
          f"errors={wx['errors']:.0f} senders={SENDERS} builtin_worker={int(args.builtin_worker)}")
    return 0 if not wx["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
