"""The bot reply benchmark's moving parts (bench/bot_reply.py): real `scrm` processes set up over HTTP, an
open-loop sender of signed API-channel messages and the callback receiver that timestamps the bot's replies.

Only processes and HTTP: no scrm module is imported except channels.signing (the API channel's wire format)
and, to learn whether the settings know an outbound URL policy, scrm.settings.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import random
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from _common import BENCH_SERVER_ENV, free_port, fresh_redis, stop, wait_up
from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "bench" / "data"
sys.path.insert(0, str(ROOT))

from channels.signing import signed_headers  # noqa: E402

SECRET = "bench-secret-0123456789abcdef-xyz"
WEEK = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
CHIT_CHAT = ["哈哈哈", "今天天气真不错", "你吃饭了吗", "嗯嗯", "好无聊啊", "你喜欢什么颜色", "lol", "nice weather today",
             "what's up", "I like turtles"]
MIX = (("faq", 0.7), ("small_talk", 0.2), ("handoff", 0.1))
# A reply offering these leaves the conversation one refusal from a handoff: its contact is not used again.
AGENT_PAYLOADS = {"handoff", "open_ticket", "handoff_wait"}
# Share of a rate's messages that retire their contact (every non-FAQ one, and FAQ answers offering an agent),
# with a margin: the pool is topped up to this many greeted contacts per message a rate will send.
RETIRING = 0.5


def pct(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank) in ms; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(len(ordered) * p / 100 + 0.5) - 1))] * 1000


def corpus() -> dict[str, list[str]]:
    """Messages per class, from the FAQ data the repository ships (bench/data, config/faq)."""
    def rows(path: Path) -> list[dict[str, Any]]:
        return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]

    en = rows(DATA / "en_shop" / "queries.jsonl")
    mixed = rows(DATA / "mixed_shop" / "queries.jsonl")
    shop = yaml.safe_load((ROOT / "config" / "faq" / "shop_faq.yaml").read_text(encoding="utf-8"))
    faq = [q["text"] for q in en + mixed if q["type"] == "paraphrase"]
    faq += [p for e in shop for p in e.get("paraphrases") or ()]
    small = [q["text"] for q in en + mixed if q["type"] == "oos_open_domain"] + CHIT_CHAT
    handoff = [h["text"] for h in rows(DATA / "handoff.jsonl") if h.get("intent") == "handoff"]
    return {"faq": faq, "small_talk": small, "handoff": handoff}


def en_shop_kb() -> bytes:
    """bench/data/en_shop's knowledge base as a JSON import; ids prefixed so none replaces a shipped entry."""
    entries = [json.loads(x) for x in (DATA / "en_shop" / "kb.jsonl").read_text(encoding="utf-8").splitlines() if x]
    return json.dumps([{**e, "id": f"en-{e['id']}"} for e in entries], ensure_ascii=False).encode()


@dataclass
class BenchConfig:
    db_url: str
    redis_url: str | None  # None: the worker runs inside `scrm serve` (no Redis to carry events across)
    seconds: float = 15.0
    low_rate: float = 10.0
    max_rate: float = 1280.0
    target_ms: float = 1000.0
    bisect: int = 3
    drain_timeout: float = 30.0
    ack_messages: int = 4000
    ack_repeats: int = 3  # closed-loop ack-path runs, the best counting
    pool: int = 1200
    warm_rate: float = 5.0
    warm_seconds: float = 3.0
    # Messages from brand-new customers (greeting and answer in one round), at every rate; the others come
    # from greeted, returning customers (the pool, topped up before each rate so it never runs dry).
    new_share: float = 0.1
    worker_nice: int | None = None
    seed: int = 23

    @property
    def sqlite(self) -> bool:
        return self.db_url.startswith("sqlite")

    @property
    def embedded(self) -> bool:
        return self.sqlite or not self.redis_url

    def describe(self) -> str:
        store = "PostgreSQL + Redis, scrm serve --no-worker"
        if self.embedded:
            store = f"{'SQLite' if self.sqlite else 'PostgreSQL'}, worker inside scrm serve"
        mix = ", ".join(f"{int(w * 100)}% {n}" for n, w in MIX)
        return (f"{store}; {self.seconds:.0f} s per rate, Poisson arrivals, {mix}; "
                f"{self.new_share:.0%} from new customers")


@dataclass(eq=False)
class Sent:
    """One customer message and what became of it."""

    kind: str
    contact: Contact
    due: float
    step: int
    status: int = 0
    conversation_id: int | None = None
    message_id: int | None = None
    first_reply: float | None = None
    replies: int = 0
    fresh: bool = False  # a new customer: greeted and answered in the same round (two replies)
    no_answer: bool = False  # its conversation is with agents: the bot rightly stays silent

    @property
    def latency(self) -> float | None:
        return None if self.first_reply is None else self.first_reply - self.due


@dataclass(eq=False)
class Contact:
    id: str
    open: Sent | None = None
    last: Sent | None = None
    retired: bool = False


@dataclass
class StepResult:
    rate: float
    sent: int
    p50_ms: float
    p99_ms: float
    late: int  # no reply (and still with the bot) when the step's drain ended
    no_answer: int
    ack_errors: int
    settled: bool  # every message of this and earlier steps answered or accounted for before the next step
    new_customers: int = 0
    # Reply p50 (ms) of the messages due in each second of the step, a late one counting as never: a rate
    # beyond what the host sustains grows from its first second on, a slow spell of the host shows as a bump.
    timeline: list[float] = field(default_factory=list)

    def ok(self, target_ms: float) -> bool:
        return self.sent > 0 and self.late == 0 and self.ack_errors == 0 and self.p99_ms < target_ms


@dataclass
class Receiver:
    """The inbox's callback_url: timestamps each bot reply and matches it to the contact's open message."""

    contacts: dict[str, Contact] = field(default_factory=dict)
    idle: collections.deque[Contact] = field(default_factory=collections.deque)
    delivered: collections.Counter[str] = field(default_factory=collections.Counter)
    greeted: set[str] = field(default_factory=set)
    stray: int = 0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        now = time.perf_counter()
        data = json.loads(await request.read())
        key = str(data.get("message_id") or data.get("idempotency_key"))
        self.delivered[key] += 1
        if self.delivered[key] > 1:  # the same bot message again (a resend after a crash must be dropped)
            return web.json_response({"id": f"cb-{key}"})
        contact = self.contacts.get(str((data.get("recipient") or {}).get("id")))
        if contact is None:
            self.stray += 1
        elif contact.open is not None:
            sent, contact.open, contact.last = contact.open, None, contact.open
            sent.first_reply, sent.replies = now, 1
            choices = {str(c.get("payload")) for c in (data.get("message") or {}).get("choices") or ()}
            contact.retired = contact.retired or sent.fresh or sent.kind != "faq" or bool(choices & AGENT_PAYLOADS)
            if not contact.retired:
                self.idle.append(contact)
        elif contact.last is not None:
            contact.last.replies += 1
        else:
            self.greeted.add(contact.id)  # the warm-up greeting
        self.arrived.set()
        return web.json_response({"id": f"cb-{key}"})


class Bench:
    """Scratch database, `scrm serve` + workers, an admin session, the inbox, the receiver and the pool."""

    def __init__(self, cfg: BenchConfig, workers: int, tmp: Path) -> None:
        self.cfg, self.workers, self.tmp = cfg, workers, tmp
        self.rng = random.Random(cfg.seed)
        self.texts = corpus()
        self.procs: list[subprocess.Popen[bytes]] = []
        self.receiver = Receiver()
        self.sent: list[Sent] = []
        self.warm_up: list[Sent] = []  # the unmeasured first seconds of the mix
        self.idle = self.receiver.idle
        self.fresh = 0
        self.pooled = 0  # pool contacts created so far
        self.steps = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.base = self.url = ""

    # --- processes and setup over HTTP ---------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SCRM_")}
        env |= {"SCRM_DATABASE_URL": self.cfg.db_url, "SCRM_STORAGE_PATH": str(self.tmp / "files"),
                "SCRM_LOGGING_LEVEL": "WARNING", "SCRM_DATABASE_AUTO_MIGRATE": "false", "PYTHONPATH": str(ROOT),
                **BENCH_SERVER_ENV}  # channel secrets are encrypted at rest
        if self.cfg.redis_url and not self.cfg.sqlite:
            env["SCRM_REDIS_URL"] = self.cfg.redis_url
        if self.cfg.worker_nice is not None:
            env["SCRM_WORKER_NICE"] = str(self.cfg.worker_nice)
        return env

    def _config_args(self) -> list[str]:
        """An outbound URL policy (where the settings know one) must let callbacks reach 127.0.0.1; on
        versions without it there is nothing to allow, and an unknown key would stop the server."""
        try:
            from scrm.settings import SecuritySettings

            known = SecuritySettings.model_fields.get("outbound_allow")
        except ImportError:
            known = None
        if known is None:
            return []
        listed = any(word in str(known.annotation).lower() for word in ("list", "tuple", "sequence", "set"))
        value = '["127.0.0.1"]' if listed else '"127.0.0.1"'
        path = self.tmp / "bench.toml"
        path.write_text(f"[security]\noutbound_allow = {value}\n")
        return ["--config", str(path)]

    def _spawn(self, args: list[str], log: str) -> subprocess.Popen[bytes]:
        # Logs go to a file: an unread pipe fills up and blocks the process in its next log line.
        with open(self.tmp / log, "ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", "scrm.cli", *self._config_args(), *args], env=self._env(),
                                    cwd=ROOT, stdout=subprocess.DEVNULL, stderr=out)
        self.procs.append(proc)
        return proc

    def _cli(self, *args: str) -> None:
        done = subprocess.run([sys.executable, "-m", "scrm.cli", *self._config_args(), *args], env=self._env(),
                              cwd=ROOT, capture_output=True, timeout=300)
        if done.returncode:
            raise RuntimeError(f"scrm {args[0]} failed: {done.stderr.decode(errors='replace')[-2000:]}")

    async def _database(self, create: bool) -> None:
        if self.cfg.sqlite:
            return
        import asyncpg

        server, name = self.cfg.db_url.replace("+asyncpg", "").rsplit("/", 1)
        conn = await asyncpg.connect(f"{server}/postgres", timeout=5)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            if create:
                await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    async def __aenter__(self) -> Bench:
        t0 = time.perf_counter()
        await self._database(create=True)
        if self.cfg.redis_url and not self.cfg.sqlite:
            await fresh_redis(self.cfg.redis_url)
        self._cli("migrate")
        password = secrets.token_urlsafe(16)
        # One argument: a random password may start with "-", which argparse would take for an option.
        self._cli("create-admin", "--login", "bench", f"--password={password}", "--name", "Bench")
        app = web.Application()
        app.router.add_post("/callback", self.receiver.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        cb_port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", cb_port).start()
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        serve = ["serve", "--port", str(port)] + ([] if self.cfg.embedded else ["--no-worker"])
        proc = self._spawn(serve, "serve.log")
        # unsafe: the session cookie comes from an IP address (127.0.0.1), which the default jar refuses
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256),
                                          cookie_jar=aiohttp.CookieJar(unsafe=True))
        try:
            await wait_up(f"{self.base}/readyz", 60, proc, self.tmp / "serve.log")
            inbox = await self._setup(f"http://127.0.0.1:{cb_port}/callback", password)
            self.url = f"{self.base}/webhooks/api/{inbox}"
            # Workers start after the setup: they read the knowledge base and business hours fresh.
            for i in range(self.workers):
                self._spawn(["worker", "--name", f"bench-w{i}"], f"worker{i}.log")
            t1 = time.perf_counter()
            await self._warm_up()
            print(f"  (set up in {t1 - t0:.0f} s; {len(self.idle)} contacts greeted and the mix warmed up in "
                  f"{time.perf_counter() - t1:.0f} s)", flush=True)
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def _setup(self, callback_url: str, password: str) -> int:
        api = f"{self.base}/api/v1"
        async with self.http.post(f"{api}/auth/login", json={"login": "bench", "password": password}) as r:
            csrf = (await r.json())["csrf_token"]
        headers = {"X-CSRF-Token": csrf}

        async def call(method: str, path: str, **kw: Any) -> Any:
            async with self.http.request(method, f"{api}{path}", headers=headers | kw.pop("headers", {}), **kw) as r:
                body = await r.json()
                if r.status >= 300:
                    raise RuntimeError(f"{method} {path}: HTTP {r.status} {body}")
                return body

        inbox = await call("POST", "/inboxes", json={
            "name": "bench api", "channel_type": "api", "settings": {"callback_url": callback_url},
            "secrets": {"secret": SECRET}})
        await call("PUT", "/desk/settings/business_hours", json={"weekly": {d: "00:00-24:00" for d in WEEK}})
        shop = (ROOT / "config" / "faq" / "shop_faq.yaml").read_bytes()
        await call("POST", "/faq/import?format=yaml", data=shop, headers={"Content-Type": "application/yaml"})
        await call("POST", "/faq/import?format=json", data=en_shop_kb(), headers={"Content-Type": "application/json"})
        self._check_conversation = lambda cid: call("GET", f"/conversations/{cid}?limit=20")
        return int(inbox["id"])

    async def _greet(self, count: int) -> None:
        """Greet `count` more pool contacts (not measured) and wait for the greetings: returning customers."""
        first = self.pooled
        self.pooled += count
        pool = [Contact(f"p{n}") for n in range(first, self.pooled)]
        for c in pool:
            self.receiver.contacts[c.id] = c
        sem = asyncio.Semaphore(32)

        async def hello(c: Contact) -> None:
            async with sem:
                await self._post(c.id, "你好")

        await asyncio.gather(*[hello(c) for c in pool])
        deadline = time.perf_counter() + 120
        while any(c.id not in self.receiver.greeted for c in pool) and time.perf_counter() < deadline:
            await asyncio.sleep(0.1)
        self.idle.extend(c for c in pool if c.id in self.receiver.greeted)

    async def _warm_up(self) -> None:
        """Greet the pool's contacts so their questions get one answer each, and wait for the greetings."""
        await self._greet(self.cfg.pool)
        if not self.idle:
            raise RuntimeError(f"no greeting came back within 120 s; logs in {self.tmp}")
        # A few seconds of the real mix, not measured: the first FAQ question loads the word segmenter and
        # the index in each worker, which would otherwise land in the first rate's figures.
        await self.step(self.cfg.warm_rate, self.cfg.warm_seconds)
        self.warm_up = list(self.sent)
        self.sent.clear()

    async def __aexit__(self, *exc: object) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if hasattr(self, "http"):
            await self.http.close()
        for proc in reversed(self.procs):
            stop(proc)
        for log in sorted(self.tmp.glob("*.log")):  # a failure in a process shows here, not in a silent figure
            text = log.read_text(errors="replace")
            if "Traceback" in text or "ERROR" in text:
                print(f"--- {log.name} (tail) ---\n{text[-1500:]}", file=sys.stderr)
            log.unlink()
        if hasattr(self, "runner"):
            await self.runner.cleanup()
        await self._database(create=False)

    # --- the load ------------------------------------------------------------------------------------

    async def _post(self, sender: str, text: str, run: str = "") -> tuple[int, int | None, int | None]:
        """(HTTP status, conversation id, message id) of one signed message."""
        body = json.dumps({"id": f"{run or sender}-{time.time_ns()}-{self.rng.random():.9f}",
                           "sender": {"id": sender, "name": f"客户{sender}"}, "text": text},
                          ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json", **signed_headers(SECRET, body)}
        try:
            async with self.http.post(self.url, data=body, headers=headers) as r:
                data = await r.json(content_type=None) if r.status == 200 else {}
                result = (data.get("results") or [{}])[0]
                return r.status, result.get("conversation_id"), result.get("message_id")
        except (aiohttp.ClientError, ValueError):
            return 0, None, None

    def _contact(self) -> Contact:
        if self.rng.random() < self.cfg.new_share:
            return self._new_customer()
        while self.idle:
            c = self.idle.popleft()
            if not c.retired and c.open is None:
                return c
        return self._new_customer()  # the pool ran dry (a rate beyond its top-up)

    def _new_customer(self) -> Contact:
        """A customer writing for the first time: greeted and answered in the same round."""
        self.fresh += 1
        c = self.receiver.contacts[f"f{self.fresh}"] = Contact(f"f{self.fresh}")
        c.retired = True  # its greeting and its answer come separately: never reused
        return c

    async def _send(self, sent: Sent, text: str) -> None:
        sent.status, sent.conversation_id, sent.message_id = await self._post(sent.contact.id, text)
        if sent.status != 200:
            sent.contact.open = None

    async def top_up(self, rate: float, seconds: float, need: int | None = None) -> None:
        """Returning customers for a whole rate (or `need` of them): greet more pool contacts first (not measured)."""
        need = need or int(rate * seconds * RETIRING) + 10
        if len(self.idle) < need:
            await self._greet(need - len(self.idle))
            await self.settle(self.cfg.drain_timeout)

    async def step(self, rate: float, seconds: float) -> StepResult:
        await self.top_up(rate, seconds)
        self.steps += 1
        step, mine = self.steps, []
        kinds, weights = zip(*MIX, strict=True)
        start = time.perf_counter() + 0.05
        due = start
        while True:
            due += self.rng.expovariate(rate)
            if due - start >= seconds:
                break
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            kind = self.rng.choices(kinds, weights)[0]
            contact = self._contact()
            sent = Sent(kind, contact, due, step, fresh=contact.id.startswith("f"))
            contact.open = sent
            self.sent.append(sent)
            mine.append(sent)
            task = asyncio.create_task(self._send(sent, self.rng.choice(self.texts[kind])))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        # The step's figures: wait for its replies (or the drain timeout), asking after silent ones.
        await self._drain(mine, min(self.cfg.drain_timeout, max(3.0, self.cfg.target_ms / 1000 * 3)))
        late = [s for s in mine if s.status == 200 and s.first_reply is None and not s.no_answer]
        lat = [s.latency for s in mine if s.latency is not None] + [float("inf")] * len(late)
        by_second: list[list[float]] = [[] for _ in range(max(1, int(seconds + 0.999)))]
        missing = set(late)
        for s in mine:
            if s.latency is not None or s in missing:
                by_second[min(len(by_second) - 1, int(s.due - start))].append(
                    float("inf") if s.latency is None else s.latency)
        # Before the next rate, earlier backlog must clear, or it would be measured there.
        settled = await self._drain([s for s in self.sent if s.step <= step], self.cfg.drain_timeout)
        return StepResult(rate, len(mine), pct(lat, 50), pct(lat, 99), len(late),
                          sum(s.no_answer for s in mine), sum(s.status != 200 for s in mine), settled,
                          sum(s.fresh for s in mine), [pct(v, 50) for v in by_second])

    async def settle(self, timeout: float) -> bool:
        """Wait for every message sent so far to be answered or accounted for."""
        return await self._drain(self.sent, timeout)

    async def _drain(self, msgs: list[Sent], timeout: float) -> bool:
        """Wait until each message has a reply or needs none; True when none is left waiting."""
        deadline = time.perf_counter() + timeout
        asked: set[int] = set()
        while True:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)
            waiting = [s for s in msgs if s.status == 200 and s.first_reply is None and not s.no_answer]
            if not waiting:
                return True
            if time.perf_counter() >= deadline:
                return False
            # Silent for a second: is the conversation with agents? Then the bot rightly says nothing.
            for s in [s for s in waiting if time.perf_counter() - s.due > 1.0 and id(s) not in asked][:50]:
                asked.add(id(s))
                if await self._with_agents(s):
                    s.no_answer = True
                    s.contact.retired = True
            self.receiver.arrived.clear()
            try:
                await asyncio.wait_for(self.receiver.arrived.wait(), 0.5)
            except TimeoutError:
                pass

    async def _with_agents(self, s: Sent) -> bool:
        """Its conversation is with agents and the bot wrote nothing after it (a handoff note on its way is
        a reply still to come)."""
        if s.conversation_id is None or s.message_id is None:
            return False
        conv = await self._check_conversation(s.conversation_id)
        after = [m for m in conv.get("messages") or () if m.get("id", 0) > s.message_id and m.get("direction") == "out"]
        return conv.get("handler") not in (None, "bot") and not after

    async def finish(self, timeout: float) -> dict[str, Any]:
        """Final drain, then lost and duplicates, in total and per class."""
        await self._drain(self.sent, timeout)
        # Whatever is still silent: one last look at its conversation (handed to agents meanwhile?).
        for s in self.sent:
            if s.status == 200 and s.first_reply is None and not s.no_answer:
                s.no_answer = await self._with_agents(s)
        classes: dict[str, dict[str, Any]] = {}
        for name, _ in MIX:
            mine = [s for s in self.sent if s.kind == name and s.status == 200]
            classes[name] = {
                "sent": len(mine), "replied": sum(s.first_reply is not None for s in mine),
                "no_answer": sum(s.no_answer and s.first_reply is None for s in mine),
                "lost": sum(s.first_reply is None and not s.no_answer for s in mine),
                "extra": sum(max(0, s.replies - (2 if s.fresh else 1)) for s in mine),
                "fresh": sum(s.fresh for s in mine),
                "latencies": [s.latency for s in mine if s.latency is not None]}
        new = [s for s in self.sent if s.fresh and s.status == 200]
        classes["new customers"] = {  # across the classes above: the same messages counted by their sender
            "sent": len(new), "replied": sum(s.first_reply is not None for s in new),
            "no_answer": sum(s.no_answer and s.first_reply is None for s in new),
            "lost": sum(s.first_reply is None and not s.no_answer for s in new),
            "extra": sum(max(0, s.replies - 2) for s in new), "fresh": len(new),
            "latencies": [s.latency for s in new if s.latency is not None]}
        lost = sum(c["lost"] for n, c in classes.items() if n != "new customers")
        extra = sum(c["extra"] for n, c in classes.items() if n != "new customers")
        redelivered = sum(n - 1 for n in self.receiver.delivered.values())
        return {"classes": classes, "lost": lost, "extra": extra, "redelivered": redelivered,
                "duplicates": redelivered + extra, "stray": self.receiver.stray}

    async def ack_rate(self, total: int, senders: int = 64, contacts: int = 500) -> dict[str, float]:
        """The same sender in closed loop: messages acknowledged per second (the ack path's throughput)."""
        run = os.urandom(3).hex()
        latencies: list[float] = []
        errors = 0
        counter = iter(range(total))

        async def sender() -> None:
            nonlocal errors
            for i in counter:
                t0 = time.perf_counter()
                status, _, _ = await self._post(f"ack{run}-{i % contacts}", self.rng.choice(self.texts["faq"]), run)
                latencies.append(time.perf_counter() - t0)
                errors += status != 200

        started = time.perf_counter()
        await asyncio.gather(*[sender() for _ in range(senders)])
        elapsed = time.perf_counter() - started
        return {"rate": total / elapsed, "p99_ms": pct(latencies, 99), "errors": errors}


# --- CPU per message (the --rate mode) ---------------------------------------------------------------


def _ticks(pid: int) -> int:
    """utime + stime of a process in clock ticks (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def _local_ports(pid: int) -> set[int]:
    """Local TCP ports of a process's sockets (/proc/<pid>/fd -> socket inodes -> /proc/net/tcp{,6})."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    ports = set()
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for row in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                cols = row.split()
                if cols[9] in inodes:
                    ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


async def backend_pids(db_url: str, client_ports: set[int] | None = None) -> list[int]:
    """PostgreSQL backends connected to the bench's database (the servers' pools); with `client_ports`,
    only those serving these ports (one process's connections)."""
    import asyncpg

    server, name = db_url.replace("+asyncpg", "").rsplit("/", 1)
    conn = await asyncpg.connect(f"{server}/postgres", timeout=5)
    try:
        rows = await conn.fetch("SELECT pid, client_port FROM pg_stat_activity WHERE datname = $1", name)
    finally:
        await conn.close()
    return [r["pid"] for r in rows if client_ports is None or r["client_port"] in client_ports]


async def cpu_sample(bench: Bench) -> dict[str, dict[int, int]]:
    """Clock ticks so far of `scrm serve`, each worker, the PostgreSQL backends of the bench's database
    and, of those, the workers' own (their connections' ports), and of this process: the sender and the
    callback receiver, the outside world, which shares the machine with what it measures."""
    serve, *workers = bench.procs
    pg = [] if bench.cfg.sqlite else await backend_pids(bench.cfg.db_url)
    ports = set().union(*(_local_ports(p.pid) for p in workers)) if workers else set()
    mine = [] if bench.cfg.sqlite else await backend_pids(bench.cfg.db_url, ports)
    return {"serve": {serve.pid: _ticks(serve.pid)}, "worker": {p.pid: _ticks(p.pid) for p in workers},
            "postgres": {pid: _ticks(pid) for pid in pg}, "worker_pg": {pid: _ticks(pid) for pid in mine},
            "bench": {os.getpid(): _ticks(os.getpid())}}


def cpu_ms(before: dict[str, dict[int, int]], after: dict[str, dict[int, int]]) -> dict[str, float]:
    """CPU milliseconds per process group between two samples (a backend that appeared counts from 0)."""
    hz = os.sysconf("SC_CLK_TCK")
    return {group: sum(t - before[group].get(pid, 0) for pid, t in after[group].items()) * 1000 / hz
            for group in after}


async def last_event(db_url: str) -> int:
    """The event log's last id so far (0 when empty or on SQLite)."""
    import asyncpg

    if db_url.startswith("sqlite"):
        return 0
    conn = await asyncpg.connect(db_url.replace("+asyncpg", ""), timeout=5)
    try:
        return int(await conn.fetchval("SELECT coalesce(max(id), 0) FROM events"))
    finally:
        await conn.close()


async def event_summary(db_url: str, after: int) -> str:
    """The events logged after id `after`: how many per name and the batches (distinct worked_at) that worked them."""
    import asyncpg

    conn = await asyncpg.connect(db_url.replace("+asyncpg", ""), timeout=5)
    try:
        names = await conn.fetch("SELECT name, count(*) AS n FROM events WHERE id > $1 GROUP BY name ORDER BY 2 DESC",
                                 after)
        batches = await conn.fetchval("SELECT count(DISTINCT worked_at) FROM events WHERE id > $1", after)
        total = await conn.fetchval("SELECT count(*) FROM events WHERE id > $1", after)
    finally:
        await conn.close()
    return (f"events {total} in {batches} batches: " + ", ".join(f"{r['name']} {r['n']}" for r in names))
