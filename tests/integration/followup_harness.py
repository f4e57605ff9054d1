"""Harness of the follow-up fault tests: real `scrm serve` and `scrm worker` processes, a platform that
retries every message until it is acknowledged (as WeChat and the API channel's senders do), and the
checks of what customers and agents would notice afterwards."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import func, select

from channels import signing
from scrm.db.database import Database
from scrm.db.models import Conversation, Delivery, Message
from scrm.db.models_desk import ConversationStats
from scrm.db.models_events import EventRecord
from tests.conftest import TEST_SECRET_KEY, TEST_SERVER_ENV, api_message, free_port

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s" * 32
QUESTIONS = ("运费怎么收？", "怎么退货")  # FAQ questions: each gets an answer from the default bot


def env_for(db_url: str, redis_url: str | None, storage: str, **extra: str) -> dict[str, str]:
    """The environment of a spawned process: the default bot (on), short polls and leases."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCRM_")}
    env.update({
        "SCRM_DATABASE_URL": db_url, "SCRM_DATABASE_AUTO_MIGRATE": "false", "SCRM_STORAGE_PATH": storage,
        "SCRM_LOGGING_LEVEL": "WARNING", "PYTHONPATH": str(ROOT), "SCRM_WORKER_POLL_INTERVAL": "0.2",
        "SCRM_WORKER_LEASE_SECONDS": "3", "SCRM_WORKER_SEND_TIMEOUT": "2.5", "SCRM_EVENTS_POLL_INTERVAL": "0.2",
        "SCRM_WORKER_NICE": "0", "SCRM_SECRET_KEY": TEST_SECRET_KEY, **TEST_SERVER_ENV,
    })
    if redis_url:
        env["SCRM_REDIS_URL"] = redis_url
    env.update(extra)
    return env


class Processes:
    """`scrm serve --no-worker` on a fixed port and one `scrm worker`; each can be SIGKILLed and restarted."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.port = free_port()
        self.log_dir = log_dir
        self.serve: subprocess.Popen[bytes] | None = None
        self.worker: subprocess.Popen[bytes] | None = None
        self.starts = collections.Counter[str]()

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        self.starts[name] += 1
        log = open(self.log_dir / f"{name}-{self.starts[name]}.log", "wb")  # noqa: SIM115 - the child owns it
        return subprocess.Popen([sys.executable, "-m", "scrm.cli", *args], env=self.env, cwd=ROOT,
                                stdout=log, stderr=subprocess.STDOUT)

    def start_serve(self) -> None:
        self.serve = self._spawn("serve", ["serve", "--port", str(self.port), "--no-worker"])

    def start_worker(self) -> None:
        self.worker = self._spawn("worker", ["worker"])

    @staticmethod
    def kill(proc: subprocess.Popen[bytes] | None) -> None:
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def close(self) -> None:
        for proc in (self.serve, self.worker):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()

    async def wait_ready(self, timeout: float = 60) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with aiohttp.ClientSession() as http:
            while True:
                try:
                    async with http.get(f"http://127.0.0.1:{self.port}/readyz") as r:
                        if r.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                assert loop.time() < deadline, "scrm serve did not become ready"
                await asyncio.sleep(0.2)


class Platform:
    """Senders that post signed messages and retry each one until it gets a 200 (a platform's retries)."""

    def __init__(self, port: int, inbox_id: int) -> None:
        self.url = f"http://127.0.0.1:{port}/webhooks/api/{inbox_id}"
        self.acked: dict[str, int] = {}  # external message id -> conversation id
        self.attempts = 0
        self.failures = 0

    async def send(self, http: aiohttp.ClientSession, mid: str, sender: str, text: str) -> None:
        body = json.dumps(api_message(mid, sender=sender, text=text)).encode()
        while True:
            self.attempts += 1
            try:
                async with http.post(self.url, data=body, headers=signing.signed_headers(SECRET, body),
                                     timeout=aiohttp.ClientTimeout(total=10)) as r:
                    if r.status == 200:
                        self.acked[mid] = int((await r.json())["results"][0]["conversation_id"])
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            self.failures += 1
            await asyncio.sleep(0.2)

    async def customer(self, http: aiohttp.ClientSession, sender: str) -> None:
        """One customer asks the questions in order, each once it was acknowledged."""
        for n, text in enumerate(QUESTIONS):
            await self.send(http, f"{sender}-{n}", sender, text)

    async def burst(self, senders: list[str], parallel: int = 8) -> None:
        queue = list(senders)
        async with aiohttp.ClientSession() as http:
            async def lane() -> None:
                while queue:
                    await self.customer(http, queue.pop(0))

            await asyncio.gather(*(lane() for _ in range(parallel)))


async def settled(db: Database, timeout: float = 90) -> None:
    """Wait until every event is worked and every delivery finished (sent or failed)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            async with db.session() as s:
                unworked = await s.scalar(select(func.count()).select_from(EventRecord)
                                          .where(EventRecord.worked_at.is_(None)))
                open_deliveries = await s.scalar(select(func.count()).select_from(Delivery)
                                                 .where(Delivery.status.in_(("queued", "sending"))))
            if not unworked and not open_deliveries:
                return
        except Exception:  # noqa: BLE001 - the database may still be coming back
            pass
        assert loop.time() < deadline, "follow-up work did not settle"
        await asyncio.sleep(0.2)


async def bot_texts(db: Database, conversation_ids: set[int]) -> dict[int, list[str]]:
    async with db.session() as s:
        rows = (await s.execute(select(Message.conversation_id, Message.text)
                                .where(Message.conversation_id.in_(conversation_ids), Message.sender_kind == "bot")
                                .order_by(Message.id))).all()
    out: dict[int, list[str]] = {cid: [] for cid in conversation_ids}
    for cid, text in rows:
        out[cid].append(text or "")
    return out


async def check_followups(db: Database, platform: Platform, reference: list[str], callback: Any) -> None:
    """Every acknowledged message stored once, answered once in order, with its desk record; no reply twice."""
    conversations = set(platform.acked.values())
    async with db.session() as s:
        inbound = dict((await s.execute(select(Message.conversation_id, func.count())
                                        .where(Message.direction == "in").group_by(Message.conversation_id))).all())
        stats = set(await s.scalars(select(ConversationStats.conversation_id)))
        handlers = dict((await s.execute(select(Conversation.id, Conversation.handler))).all())
        deliveries = (await s.execute(select(Delivery.idempotency_key, Delivery.status))).all()
        errors = list(await s.scalars(select(EventRecord.error).where(EventRecord.error.is_not(None))))
    assert errors == [], errors  # no listener failed on any event
    assert all(inbound.get(cid) == len(QUESTIONS) for cid in conversations), inbound
    assert stats >= conversations, f"no desk record for {sorted(conversations - stats)}"
    assert {handlers[cid] for cid in conversations} == {"bot"}
    answers = await bot_texts(db, conversations)
    wrong = {cid: texts for cid, texts in answers.items() if texts != reference}
    assert not wrong, f"{len(wrong)} conversations not answered exactly once in order, e.g. {next(iter(wrong.items()))}"
    assert {status for _, status in deliveries} <= {"sent", "delivered"}, collections.Counter(s for _, s in deliveries)
    keys = {key for key, _ in deliveries}
    assert len(keys) == len(deliveries) == sum(len(t) for t in answers.values()) + len(reference)
    assert set(callback.processed) == keys  # every reply reached the customer once (by idempotency key)
