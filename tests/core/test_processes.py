"""Real processes: a `scrm worker` killed with SIGKILL mid-batch, and events across two `scrm serve` on Redis."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from scrm.db.models import ContactIdentity, Conversation, Delivery, Inbox
from scrm.domain import InboundMessage
from scrm.events import RedisEventBus
from scrm.services.conversations.ingest import ingest
from scrm.services.outbox import enqueue_message
from scrm.services.uow import unit_of_work
from tests.conftest import REDIS_URL, TEST_SERVER_ENV, api_message, free_port, make_inbox, wait_for

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def _env(settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCRM_")}
    env.update(TEST_SERVER_ENV)  # loopback fakes allowed, simulator on (as the in-process tests)
    env.update({
        "SCRM_DATABASE_URL": settings.database.url,
        "SCRM_DATABASE_AUTO_MIGRATE": "false",
        "SCRM_STORAGE_PATH": settings.storage.path,
        "SCRM_LOGGING_LEVEL": "WARNING",
        "SCRM_SECRET_KEY": settings.security.secret_key.get_secret_value(),
        "PYTHONPATH": str(ROOT),
        "SCRM_BOT_CONFIG": str(Path(__file__).resolve().parent / "fixtures" / "bot_disabled.toml"),
    })
    if settings.redis.url:
        env["SCRM_REDIS_URL"] = settings.redis.url
    env.update(extra)
    return env


def _spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "scrm.cli", *args], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def test_sigkilled_worker_loses_nothing_and_sends_nothing_twice(ctx, settings, callback_server):
    total = 120
    inbox = await make_inbox(ctx, settings={"callback_url": callback_server.url})
    for i in range(total):
        [out] = await ingest(ctx, inbox, [InboundMessage(f"k-{i}", f"cust-{i}", "hi")])
        async with unit_of_work(ctx) as tx:
            conv = await tx.session.get(Conversation, out.conversation_id)
            ident = await tx.session.get(ContactIdentity, conv.identity_id)
            ib = await tx.session.get(Inbox, inbox.id)
            await enqueue_message(tx, inbox=ib, conversation=conv, identity=ident, sender_kind="bot", text=f"reply {i}")
    callback_server.delay = 0.03  # the receiver is slow enough that the kill lands mid-batch
    env = _env(settings, SCRM_WORKER_LEASE_SECONDS="3", SCRM_WORKER_SEND_TIMEOUT="2.5", SCRM_WORKER_POLL_INTERVAL="0.2")
    proc = _spawn(["worker"], env)
    try:
        await wait_for(lambda: len(callback_server.received) >= 30, timeout=60)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        received_at_kill = len(callback_server.received)
        assert received_at_kill < total, "worker finished before the kill; test proves nothing"
        await asyncio.sleep(3.5)  # the dead worker's leases expire
        second = _spawn(["worker", "--burst"], env)
        await wait_for(lambda: second.poll() is not None, timeout=120)
        assert second.returncode == 0, second.stderr.read().decode() if second.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
    async with ctx.db.session() as s:
        statuses = dict((await s.execute(select(Delivery.status, func.count()).group_by(Delivery.status))).all())
        keys = set((await s.scalars(select(Delivery.idempotency_key))).all())
    assert statuses == {"sent": total}, statuses  # none lost
    assert set(callback_server.processed) == keys  # every delivery reached the receiver ...
    texts = sorted(d["message"]["text"] for d in callback_server.processed.values())
    assert texts == sorted(f"reply {i}" for i in range(total))  # ... exactly once per idempotency key
    # Rows in flight at the kill (or timed out on this loaded machine) were resent with the same key;
    # the receiver's idempotency check makes each one count once, which `processed` asserts above.
    assert all(r["idempotency_key"] in keys for r in callback_server.received)


@pytest.mark.skipif(not REDIS_URL, reason="needs SCRM_TEST_REDIS_URL")
async def test_events_cross_two_server_processes_through_redis(ctx, settings, callback_server):
    import json

    import aiohttp

    from channels import signing

    inbox = await make_inbox(ctx, settings={"callback_url": callback_server.url})
    port_a, port_b = free_port(), free_port()
    # A answers webhooks and API calls but runs no worker; B runs the worker with a 30 s poll, so only
    # A's `outbox.enqueued` event arriving through Redis can make B deliver quickly.
    proc_a = _spawn(["serve", "--port", str(port_a), "--no-worker"], _env(settings))
    proc_b = _spawn(["serve", "--port", str(port_b)], _env(settings, SCRM_WORKER_POLL_INTERVAL="30"))
    seen: list[tuple[str, str | None]] = []
    import redis.asyncio as aioredis

    redis = aioredis.from_url(settings.redis.url)
    bus = RedisEventBus(redis, process_id="test-observer")

    async def observe(event):
        seen.append((event.name, event.origin))

    bus.subscribe(observe, everywhere=True)
    await bus.start()
    try:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            for port in (port_a, port_b):
                async def up(port=port):
                    try:
                        async with http.get(f"http://127.0.0.1:{port}/readyz") as r:
                            return r.status == 200
                    except aiohttp.ClientError:
                        return False
                await wait_for(up, timeout=30, interval=0.2)
            await asyncio.sleep(1.5)  # B's worker has done its first poll and now sleeps 30 s
            body = json.dumps(api_message("x-1", sender="cross", text="跨进程")).encode()
            async with http.post(f"http://127.0.0.1:{port_a}/webhooks/api/{inbox.id}", data=body,
                                 headers=signing.signed_headers("s" * 32, body)) as r:
                assert r.status == 200
                cid = (await r.json())["results"][0]["conversation_id"]
            await wait_for(lambda: any(n == "message.created" and o not in (None, "test-observer") for n, o in seen))
            from scrm.services.agents.accounts import create_agent

            async with ctx.db.transaction() as s:
                await create_agent(s, login="x", password="password-123", role="agent")
            async with http.post(f"http://127.0.0.1:{port_a}/api/v1/auth/login",
                                 json={"login": "x", "password": "password-123"}) as r:
                csrf = (await r.json())["csrf_token"]
            started = time.monotonic()
            async with http.post(f"http://127.0.0.1:{port_a}/api/v1/conversations/{cid}/messages",
                                 json={"text": "reply via A"}, headers={"X-CSRF-Token": csrf}) as r:
                assert r.status == 201
            await wait_for(lambda: callback_server.received, timeout=10)
            assert time.monotonic() - started < 10 and callback_server.received[0]["message"]["text"] == "reply via A"
    finally:
        await bus.close()
        await redis.aclose()
        for p in (proc_a, proc_b):
            p.send_signal(signal.SIGTERM)
        for p in (proc_a, proc_b):
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
