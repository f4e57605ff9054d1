"""Broadcast benchmark on PostgreSQL: resolve a segment of N contacts, materialize the recipients,
deliver at the configured channel rate limits, and survive a SIGKILLed worker.

    python bench/broadcast.py [--quick] [--contacts N] [--window S] [--db NAME] [--profile DIR]

Uses a scratch database (default `scrm_bench_broadcast`) on 127.0.0.1:5432 (created and dropped). Contacts
are spread over two rate-limited HTTP channels (the API channel with a configured RateLimit, against a
local fake receiver), Telegram (a local fake Bot API with Telegram's flood control; half never started
the bot: skipped) and email (a local SMTP sink; half without consent: skipped). Delivery is measured for
`--window` seconds with an in-process worker and compared with the sum of the configured limits of the
rate-limited channels (the fake servers run in a child process, so the measured worker has its own CPU) (email has none: its rate is printed on its own); the highest count in any
1-second window per channel must not exceed its limit, and the fake Bot API must answer no 429.
Then a separate broadcast is delivered by a real `scrm worker` process, SIGKILLed half-way, and a burst
worker finishes it: the receiver counts duplicates and losses by idempotency key.
Last, a WeChat OA 群发 by OpenID list to N followers: the time to hand every batch of 10,000 to a local
fake WeChat API once the broadcast is started (`mass_send_s`, target under 10 s for 100k; starting it,
which records the recipients and batches, is `mass_start_s`), and the same again with its worker SIGKILLed
mid-call (`mass_duplicates`: followers in two accepted batches, must be 0 thanks to clientmsgid).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import BENCH_OUTBOUND_ALLOW, BENCH_SECRET_KEY, BENCH_SERVER_ENV  # noqa: E402
from aiohttp import web  # noqa: E402
from sqlalchemy import func, insert, select, text  # noqa: E402

from channels.api import ApiChannelAdapter, ApiSettings  # noqa: E402
from channels.base import RateLimit  # noqa: E402
from channels.registry import register  # noqa: E402
from scrm.db.models import Contact, ContactIdentity, ContactTag, Delivery, Inbox, utcnow  # noqa: E402
from scrm.db.models_marketing import BroadcastRecipient  # noqa: E402
from scrm.domain import OutboundMessage  # noqa: E402
from tests.channels.telegram.fake_bot_api import DEFAULT_TOKEN, FakeBotApi  # noqa: E402

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_DB = "scrm_bench_broadcast"
PG_URL = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{PG_DB}"
SECRET = "bench-secret-0123456789abcdef-xyz"
LIMITS = {"fast": 300.0, "slow": 150.0, "telegram": 30.0}  # configured sends per second per channel


class LimitedSettings(ApiSettings):
    rate: float = 100.0


@register
class RateLimitedApiAdapter(ApiChannelAdapter):
    """The API channel with a configured per-inbox rate limit (what a platform quota looks like)."""

    channel_type = "bench_limited"
    settings_model = LimitedSettings

    def rate_limits(self, message: OutboundMessage) -> Sequence[RateLimit]:
        rate = float(self.settings.rate)  # type: ignore[attr-defined]
        return (RateLimit(f"bench:{self.inbox.id}", rate, 1.0),)


class RecordingBotApi(FakeBotApi):
    """The fake Bot API with Telegram's flood control; records each accepted sendMessage."""

    def __init__(self) -> None:
        super().__init__(DEFAULT_TOKEN, flood_control=True)
        self.accepted: list[float] = []
        self.flooded = 0
        self.flooded_chat = 0  # of them, refused by the per-chat limit (1/s), not the bot's 30/s

    def _flooded(self, chat: str) -> bool:
        flooded = super()._flooded(chat)
        self.flooded += flooded
        if flooded and len(self._sent_at["*"]) < 30:
            self.flooded_chat += 1
        return flooded

    async def _m_sendMessage(self, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        self.accepted.append(time.monotonic())
        return await super()._m_sendMessage(params, files)


class SmtpSink:
    """A local SMTP server that accepts every mail and records when it arrived."""

    def __init__(self) -> None:
        self.arrivals: list[float] = []
        self.server: asyncio.AbstractServer | None = None
        self.port = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd hook
        self.arrivals.append(time.monotonic())
        return "250 OK"

    async def start(self) -> None:
        from aiosmtpd.smtp import SMTP

        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: SMTP(self, hostname="sink.local"), "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]


class Receiver:
    """A local callback endpoint: verifies nothing (speed), records arrival time and idempotency key.

    Also runs the fake Bot API and the SMTP sink (every fake channel server of the benchmark), and
    answers the benchmark's control calls (`/_stats`, `/_clear`): it runs in a child process."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[float, int, str]] = []
        self.runner: web.AppRunner | None = None
        self.url = ""
        self.bot = RecordingBotApi()
        self.smtp = SmtpSink()

    async def handle(self, request: web.Request) -> web.Response:
        data = json.loads(await request.read())
        self.arrivals.append((time.monotonic(), int(data["inbox_id"]), request.headers["Idempotency-Key"]))
        return web.json_response({"id": f"ext-{data['delivery_id']}"})

    async def stats(self, request: web.Request) -> web.Response:
        """Every recorded arrival (monotonic clock: system-wide on Linux, comparable across processes)."""
        if request.query.get("count_only"):
            return web.json_response({"callback": len(self.arrivals)})
        return web.json_response({"callback": self.arrivals, "telegram": self.bot.accepted,
                                  "email": self.smtp.arrivals, "bot_429": self.bot.flooded,
                                  "bot_429_chat": self.bot.flooded_chat})

    async def clear(self, request: web.Request) -> web.Response:
        self.arrivals.clear()
        return web.json_response({})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/cb", self.handle)
        app.router.add_get("/_stats", self.stats)
        app.router.add_post("/_clear", self.clear)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}/cb"
        await self.bot.start()
        await self.smtp.start()

    async def stop(self) -> None:
        if self.runner:
            await self.runner.cleanup()
        await self.bot.stop()
        if self.smtp.server:
            self.smtp.server.close()


async def serve_fakes() -> None:
    """Child-process mode: run the fake channel servers, print their addresses, stop when stdin closes."""
    receiver = Receiver()
    await receiver.start()
    # The fakes stamp each arrival when their handler runs: a full garbage collection walking every
    # module and library object held them 50-70 ms, and the sends that came meanwhile were stamped
    # together after it, a burst the worker never sent (the 1-second peaks started at those pauses).
    gc.freeze()
    print(json.dumps({"url": receiver.url, "bot_base_url": receiver.bot.base_url, "smtp_port": receiver.smtp.port}),
          flush=True)
    try:
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # EOF: the parent is gone
    finally:
        await receiver.stop()


class FakeServers:
    """The benchmark's handle on the fake channel servers running in a child process.

    Separate so the fakes' CPU (HTTP parsing, SMTP) is not charged to the measured worker."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = self.bot_base_url = self.control = ""
        self.smtp_port = 0
        self.session: Any = None

    async def start(self) -> None:
        import aiohttp

        self.proc = subprocess.Popen([sys.executable, __file__, "--serve-fakes"], cwd=ROOT, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        line = await asyncio.get_running_loop().run_in_executor(None, self.proc.stdout.readline)
        if not line:
            raise RuntimeError("the fake channel servers did not start")
        info = json.loads(line)
        self.url, self.bot_base_url, self.smtp_port = info["url"], info["bot_base_url"], info["smtp_port"]
        self.control = self.url.rsplit("/", 1)[0]
        self.session = aiohttp.ClientSession()

    def cpu_seconds(self) -> float:
        """CPU time the child has used (Linux /proc; 0 elsewhere)."""
        try:
            fields = Path(f"/proc/{self.proc.pid if self.proc else 0}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    async def stats(self) -> dict[str, Any]:
        async with self.session.get(f"{self.control}/_stats") as resp:
            return dict(await resp.json())

    async def callback_count(self) -> int:
        async with self.session.get(f"{self.control}/_stats", params={"count_only": "1"}) as resp:
            return int((await resp.json())["callback"])

    async def clear(self) -> None:
        async with self.session.post(f"{self.control}/_clear") as resp:
            resp.raise_for_status()

    async def stop(self) -> None:
        if self.session is not None:
            await self.session.close()
        if self.proc is not None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def _admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def populate(ctx: Any, n: int, receiver: FakeServers) -> dict[str, int]:
    """N contacts over four inboxes, inserted in bulk."""
    now = utcnow()
    async with ctx.db.transaction() as s:
        inboxes = {
            "fast": Inbox(name="fast", channel_type="bench_limited", settings={"callback_url": receiver.url,
                                                                             "rate": LIMITS["fast"]},
                          secrets={"secret": SECRET}),
            "slow": Inbox(name="slow", channel_type="bench_limited", settings={"callback_url": receiver.url,
                                                                             "rate": LIMITS["slow"]},
                          secrets={"secret": SECRET}),
            "kill": Inbox(name="kill", channel_type="api", settings={"callback_url": receiver.url},
                          secrets={"secret": SECRET}),
            "telegram": Inbox(name="tg", channel_type="telegram", settings={"api_base_url": receiver.bot_base_url},
                              secrets={"bot_token": DEFAULT_TOKEN}),
            "email": Inbox(name="mail", channel_type="email", secrets={},
                           settings={"address": "news@example.com", "smtp_host": "127.0.0.1",
                                     "smtp_port": receiver.smtp_port, "smtp_starttls": False}),
        }
        s.add_all(inboxes.values())
        await s.flush()
        ids = {k: v.id for k, v in inboxes.items()}
    spread = ["fast", "fast", "slow", "slow", "telegram", "email"]
    chunk = 5000
    for start in range(0, n, chunk):
        contacts, idents, tags = [], [], []
        for i in range(start, min(n, start + chunk)):
            cid = i + 1
            channel = spread[i % len(spread)]
            attrs: dict[str, Any] = {"city": ["北京", "上海", "广州"][i % 3]}
            if channel == "email" and (i // 6) % 2:
                attrs["consent"] = {"email": True}
            contacts.append({"id": cid, "name": f"客户{cid}", "attributes": attrs, "opt_outs": {},
                             "first_seen_at": now, "last_seen_at": now, "created_at": now, "updated_at": now})
            started = channel != "telegram" or (i // 6) % 2 == 0
            external = f"{cid}@example.com" if channel == "email" else str(cid)
            idents.append({"inbox_id": ids[channel], "external_id": external, "contact_id": cid, "attributes": {},
                           "reachable": True, "subscribed": True, "created_at": now,
                           "last_inbound_at": now if started else None})
            tags.append({"contact_id": cid, "tag": "all"})
        async with ctx.db.transaction() as s:
            await s.execute(insert(Contact), contacts)
            await s.execute(insert(ContactIdentity), idents)
            await s.execute(insert(ContactTag), tags)
    from scrm.db.models_marketing import AttributeDefinition

    async with ctx.db.transaction() as s:
        s.add(AttributeDefinition(key="city", label="城市", type="text", choices=[]))
        await s.execute(text("SELECT setval(pg_get_serial_sequence('contacts', 'id'), (SELECT max(id) FROM contacts))"))
    return ids


def max_per_second(times: list[float]) -> int:
    """Most arrivals inside any 1-second window."""
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= 1.0:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


async def new_broadcast(ctx: Any, inbox_ids: list[int], rules: dict[str, Any]) -> int:
    from scrm.services.marketing import broadcasts
    from scrm.services.uow import unit_of_work

    async with unit_of_work(ctx) as tx:
        b = await broadcasts.save(tx, None, {"name": "bench", "rules": rules, "inbox_ids": inbox_ids,
                                             "template": "{{name}}，{{attributes.city | 您}}的专属优惠", "subject": "优惠"})
        return b.id


def spawn_worker(*args: str, storage: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCRM_")}
    env.update({**BENCH_SERVER_ENV, "SCRM_DATABASE_URL": PG_URL, "SCRM_DATABASE_AUTO_MIGRATE": "false", "SCRM_STORAGE_PATH": storage,
                "SCRM_LOGGING_LEVEL": "ERROR", "PYTHONPATH": str(ROOT), "SCRM_WORKER_LEASE_SECONDS": "3",
                "SCRM_WORKER_SEND_TIMEOUT": "2.5", "SCRM_WORKER_CONCURRENCY": "16", "SCRM_WORKER_BATCH_SIZE": "50"})
    return subprocess.Popen([sys.executable, "-m", "scrm.cli", "worker", *args], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


class _LastMessage(logging.Handler):
    """Keeps the last INFO message of one logger (the materialize breakdown) while attached."""

    def __init__(self, name: str) -> None:
        super().__init__(logging.INFO)
        self.message = "(no breakdown logged)"
        self.logger = logging.getLogger(name)
        self.level_before = self.logger.level
        self.logger.setLevel(logging.INFO)
        self.logger.addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        self.message = record.getMessage()

    def close(self) -> None:
        self.logger.removeHandler(self)
        self.logger.setLevel(self.level_before)
        super().close()


class Profiler:
    """cProfile around a phase when --profile DIR is given (a .prof file per phase)."""

    def __init__(self, directory: str | None) -> None:
        self.directory = directory

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if not self.directory:
            yield
            return
        import cProfile

        profile = cProfile.Profile(time.process_time)  # CPU time: the machine may be shared
        profile.enable()
        try:
            yield
        finally:
            profile.disable()
            Path(self.directory).mkdir(parents=True, exist_ok=True)
            profile.dump_stats(str(Path(self.directory) / f"broadcast-{name}.prof"))


async def run(n: int, window: float, kill_n: int, profile_dir: str | None = None) -> None:
    from scrm.bootstrap import build_context
    from scrm.db.migrate import upgrade
    from scrm.delivery.worker import OutboxWorker
    from scrm.services.marketing import broadcasts
    from scrm.services.marketing.segments import preview
    from scrm.services.uow import unit_of_work
    from scrm.settings import load_settings

    await _admin(f"DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)")
    await _admin(f"CREATE DATABASE {PG_DB}")
    storage = tempfile.mkdtemp(prefix="scrm-bench-")
    receiver = FakeServers()
    await receiver.start()
    profiler = Profiler(profile_dir)
    try:
        await upgrade(PG_URL)
        settings = load_settings(env={}, overrides={"security": {"secret_key": BENCH_SECRET_KEY, "outbound_allow": BENCH_OUTBOUND_ALLOW},
            "database": {"url": PG_URL, "auto_migrate": False, "pool_size": 20}, "storage": {"path": storage},
            "worker": {"concurrency": 64, "batch_size": 100, "poll_interval": 0.05}})
        ctx = await build_context(settings)
        try:
            t0 = time.perf_counter()
            ids = await populate(ctx, n, receiver)
            print(f"populated {n} contacts in {time.perf_counter() - t0:.1f}s", flush=True)
            rules = {"op": "and", "rules": [{"field": "tag", "operator": "has", "value": "all"}]}
            t0 = time.perf_counter()
            async with ctx.db.session() as s:
                count = (await preview(s, rules, sample=10))["count"]
            resolve_s = time.perf_counter() - t0
            bid = await new_broadcast(ctx, [ids["fast"], ids["slow"], ids["telegram"], ids["email"]], rules)
            breakdown = _LastMessage("scrm.broadcasts")  # start() logs where its time went
            t0 = time.perf_counter()
            with profiler.phase("materialize"):
                started = await broadcasts.start(ctx, bid)
            materialize_s = time.perf_counter() - t0
            breakdown.close()
            print(f"segment count {count} in {resolve_s:.2f}s; materialized {started} in {materialize_s:.2f}s",
                  flush=True)
            print(f"  {breakdown.message}", flush=True)
            async with ctx.db.engine.connect() as conn:  # as autovacuum would after a bulk load
                await conn.execute(text("ANALYZE deliveries"))
                await conn.commit()
            # -- delivery rate against the configured limits, with an in-process worker
            stop = asyncio.Event()
            worker = OutboxWorker(ctx, name="bench-worker")
            task = asyncio.create_task(worker.run(stop))
            await asyncio.sleep(1.0)  # warm-up: claims, connections

            async def arrivals() -> tuple[dict[str, list[float]], int]:
                got = await receiver.stats()
                per = {name: sorted(t for t, inbox, _ in got["callback"] if inbox == ids[name])
                       for name in ("fast", "slow")}
                arrivals.chat_429 = int(got["bot_429_chat"])  # type: ignore[attr-defined]
                return per | {"telegram": got["telegram"], "email": got["email"]}, int(got["bot_429"])

            before = {k: len(v) for k, v in (await arrivals())[0].items()}
            mark, cpu_mark, fakes_mark = time.monotonic(), time.process_time(), receiver.cpu_seconds()
            with profiler.phase("deliver"):
                await asyncio.sleep(window)
            elapsed = time.monotonic() - mark
            worker_cpu, fakes_cpu = time.process_time() - cpu_mark, receiver.cpu_seconds() - fakes_mark
            after, bot_429 = await arrivals()
            stop.set()
            await task
            rates = {k: (len(v) - before[k]) / elapsed for k, v in after.items()}
            rate = sum(rates[k] for k in LIMITS)
            sent = sum(len(v) - before[k] for k, v in after.items())
            limit_sum = sum(LIMITS.values())
            peaks = {k: max_per_second(after[k]) for k in LIMITS}
            exceeded = any(peaks[k] > LIMITS[k] for k in LIMITS) or bot_429 > 0
            print(f"delivery {rate:.0f}/s vs configured {limit_sum:.0f}/s ({rate / limit_sum:.0%}): "
                  + ", ".join(f"{k} {rates[k]:.0f}/s (peak {peaks[k]} in 1 s, limit {LIMITS[k]:.0f})" for k in LIMITS)
                  + f"; Bot API 429s {bot_429} ({arrivals.chat_429} per chat); "  # type: ignore[attr-defined]
                  + f"email (no limit) {rates['email']:.0f}/s", flush=True)
            # Below the limits with the worker well under one core busy: the machine, not the worker, is short.
            print(f"worker process CPU {worker_cpu / elapsed:.2f} cores ({worker_cpu / max(sent, 1) * 1e3:.2f} ms per "
                  f"delivery); fake servers {fakes_cpu / elapsed:.2f} cores; load average {os.getloadavg()[0]:.1f} "
                  f"on {os.cpu_count()} CPUs", flush=True)
            async with unit_of_work(ctx) as tx:
                await broadcasts.cancel(tx, await broadcasts.load(tx, bid), None)
            # -- SIGKILL half-way through a broadcast delivered by a real worker process
            async with ctx.db.transaction() as s:
                await s.execute(insert(ContactIdentity), [
                    {"inbox_id": ids["kill"], "external_id": f"k{cid}", "contact_id": cid, "attributes": {},
                     "reachable": True, "subscribed": True, "created_at": utcnow(), "last_inbound_at": utcnow()}
                    for cid in range(1, kill_n + 1)])
            kill_rules = {"op": "and", "rules": [{"field": "channel", "operator": "has", "value": "api"}]}
            kid = await new_broadcast(ctx, [ids["kill"]], kill_rules)
            queued = (await broadcasts.start(ctx, kid))["queued"]
            await receiver.clear()
            proc = spawn_worker(storage=storage)
            while await receiver.callback_count() < queued // 2:
                await asyncio.sleep(0.02)
                if proc.poll() is not None:
                    raise RuntimeError(proc.stderr.read().decode() if proc.stderr else "worker exited")
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
            at_kill = await receiver.callback_count()
            await asyncio.sleep(3.5)  # leases expire
            burst = spawn_worker("--burst", storage=storage)
            while burst.poll() is None:
                await asyncio.sleep(0.1)
            async with ctx.db.session() as s:
                keys = set((await s.scalars(select(Delivery.idempotency_key).join(
                    BroadcastRecipient, BroadcastRecipient.delivery_id == Delivery.id)
                    .where(BroadcastRecipient.broadcast_id == kid))).all())
                not_sent = await s.scalar(select(func.count()).select_from(Delivery).join(
                    BroadcastRecipient, BroadcastRecipient.delivery_id == Delivery.id).where(
                    BroadcastRecipient.broadcast_id == kid, Delivery.status != "sent"))
            per_key: dict[str, int] = defaultdict(int)
            for _, _, key in (await receiver.stats())["callback"]:
                per_key[key] += 1
            resent = sum(c - 1 for c in per_key.values())  # same key again: the receiver drops it
            lost = len(keys - set(per_key)) + int(not_sent or 0)
            foreign = len(set(per_key) - keys)
            print(f"SIGKILL after {at_kill}/{queued}: received {len(per_key)} distinct, {resent} resent with the same "
                  f"idempotency key (dropped by the receiver), lost {lost}, unexpected {foreign}", flush=True)
            mass_start_s, mass_s, mass_dup, mass_lost, mass_batches = await mass_send_case(ctx, n, storage)
            print(f"BENCH broadcast ratio={rate / limit_sum:.2f} contacts={n} resolve_s={resolve_s:.2f} "
                  f"materialize_s={materialize_s:.2f} targeted={started['targeted']} queued={started['queued']} "
                  f"delivery_rate={rate:.0f} configured_limit={limit_sum:.0f} exceeded={int(exceeded)} "
                  f"bot_api_429={bot_429} email_rate={rates['email']:.0f} worker_cores={worker_cpu / elapsed:.2f} "
                  f"worker_ms_per_delivery={worker_cpu / max(sent, 1) * 1e3:.2f} kill_recipients={queued} "
                  f"duplicates={foreign} lost={lost} resent_same_key={resent} mass_send_s={mass_s:.2f} "
                  f"mass_batches={mass_batches} mass_duplicates={mass_dup} mass_lost={mass_lost} "
                  f"mass_start_s={mass_start_s:.2f}")
        finally:
            await ctx.close()
    finally:
        await receiver.stop()
        await _admin(f"DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)")


async def mass_send_case(ctx: Any, n: int, storage: str) -> tuple[float, float, int, int, int]:
    """WeChat OA 群发 by OpenID list to n followers: starting the broadcast (recipients, batches and their
    clientmsgids recorded: `mass_start_s`), then the time until the fake WeChat API accepted every batch of
    10,000 (`mass_send_s`, in-process worker); then a second 群发 whose real worker is SIGKILLed mid-call:
    duplicates (an OpenID in two accepted batches) and followers never reached."""
    from scrm.delivery.worker import OutboxWorker
    from scrm.services.marketing import broadcasts
    from scrm.services.uow import unit_of_work
    from tests.channels.wechat.fake_wechat_api import APP_ID, APP_SECRET, serving
    from tests.channels.wechat.wechat_callbacks import AES_KEY, TOKEN

    async with serving() as fake:
        async with ctx.db.transaction() as s:
            inbox = Inbox(name="oa", channel_type="wechat_oa", settings={"app_id": APP_ID, "api_base_url": fake.base_url},
                          secrets={"app_secret": APP_SECRET, "token": TOKEN, "encoding_aes_key": AES_KEY})
            s.add(inbox)
            await s.flush()
            inbox_id = inbox.id
        now = utcnow()
        for start in range(0, n, 10_000):
            async with ctx.db.transaction() as s:
                await s.execute(insert(ContactIdentity), [
                    {"inbox_id": inbox_id, "external_id": f"oBench{cid:07d}", "contact_id": cid, "attributes": {},
                     "reachable": True, "subscribed": True, "created_at": now, "last_inbound_at": None}
                    for cid in range(start + 1, min(n, start + 10_000) + 1)])
        rules = {"op": "and", "rules": [{"field": "channel", "operator": "has", "value": "wechat_oa"}]}

        async def mass_broadcast() -> int:
            async with unit_of_work(ctx) as tx:
                b = await broadcasts.save(tx, None, {"name": "群发", "rules": rules, "inbox_ids": [inbox_id],
                                                     "template": "新品上市，欢迎选购", "delivery_mode": "mass",
                                                     "delivery_options": {"target": "list"}})
                return int(b.id)

        bid = await mass_broadcast()
        stop = asyncio.Event()
        worker = OutboxWorker(ctx, name="bench-mass-worker")
        task = asyncio.create_task(worker.run(stop))
        t0 = time.perf_counter()
        queued = (await broadcasts.start(ctx, bid))["queued"]
        start_s = time.perf_counter() - t0  # recipients, batches and their clientmsgids recorded
        batches = -(-queued // 10_000)
        while len(fake.mass_sends) < batches:
            await asyncio.sleep(0.01)
        mass_s = time.perf_counter() - t0 - start_s
        stop.set()
        await task
        handed = sum(len(b["touser"]) for b in fake.mass_sends)
        print(f"群发 to {queued} followers: {batches} batches handed to the fake WeChat API in {mass_s:.2f}s "
              f"({handed} OpenIDs) after starting it in {start_s:.2f}s (recipients, batches, clientmsgids recorded)",
              flush=True)
        # The same followers again, delivered by a real worker process killed in the middle of a call.
        fake.mass_sends.clear()
        fake.mass_received.clear()
        calls_before = fake.mass_calls
        kid = await mass_broadcast()
        await broadcasts.start(ctx, kid)
        fake.mass_delay = 0.5  # accepted, then a slow answer: the kill lands between the two
        proc = spawn_worker(storage=storage)
        while fake.mass_calls - calls_before < min(2, batches):
            await asyncio.sleep(0.01)
            if proc.poll() is not None:
                raise RuntimeError(proc.stderr.read().decode() if proc.stderr else "worker exited")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        fake.mass_delay = 0
        await asyncio.sleep(3.5)  # leases expire
        burst = spawn_worker("--burst", storage=storage)
        while burst.poll() is None:
            await asyncio.sleep(0.1)
        duplicates = sum(c - 1 for c in fake.mass_received.values())
        lost = queued - len(fake.mass_received)
        print(f"群发 SIGKILLed mid-call: {fake.mass_calls - calls_before} calls for {len(fake.mass_sends)} accepted "
              f"batches (the resend answered 45065), {duplicates} duplicates, {lost} followers lost", flush=True)
    return start_s, mass_s, duplicates, lost, batches


def main() -> None:
    global PG_DB, PG_URL
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="10k contacts, 5 s delivery window")
    parser.add_argument("--contacts", type=int)
    parser.add_argument("--window", type=float)
    parser.add_argument("--db", default=PG_DB, help="scratch database name (created and dropped)")
    parser.add_argument("--profile", metavar="DIR", help="write cProfile stats of materialize and deliver to DIR")
    parser.add_argument("--serve-fakes", action="store_true", help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.serve_fakes:
        asyncio.run(serve_fakes())
        return
    PG_DB, PG_URL = args.db, f"postgresql+asyncpg://postgres@127.0.0.1:5432/{args.db}"
    n = args.contacts or (10_000 if args.quick else 100_000)
    window = args.window or (5.0 if args.quick else 15.0)
    asyncio.run(run(n, window, kill_n=500 if args.quick else 2000, profile_dir=args.profile))


if __name__ == "__main__":
    main()
