"""A real `scrm worker` SIGKILLed mid-broadcast, then a burst worker: no recipient lost, none sent twice."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select

from scrm.db.models import Delivery
from scrm.db.models_marketing import BroadcastRecipient
from scrm.services.marketing import broadcasts
from scrm.services.marketing.broadcast_report import report
from scrm.services.uow import unit_of_work
from tests.conftest import TEST_SERVER_ENV, make_inbox, wait_for
from tests.marketing.helpers_marketing import make_contact

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def _spawn(settings, *args: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCRM_")}
    env.update(TEST_SERVER_ENV)  # loopback fakes allowed, simulator on (as the in-process tests)
    env.update({"SCRM_DATABASE_URL": settings.database.url, "SCRM_DATABASE_AUTO_MIGRATE": "false",
                "SCRM_STORAGE_PATH": settings.storage.path, "SCRM_LOGGING_LEVEL": "WARNING",
                "SCRM_SECRET_KEY": settings.security.secret_key.get_secret_value(),
                "PYTHONPATH": str(ROOT), "SCRM_WORKER_LEASE_SECONDS": "3", "SCRM_WORKER_SEND_TIMEOUT": "2.5",
                "SCRM_WORKER_POLL_INTERVAL": "0.2"})
    if settings.redis.url:
        env["SCRM_REDIS_URL"] = settings.redis.url
    return subprocess.Popen([sys.executable, "-m", "scrm.cli", "worker", *args], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def test_sigkill_mid_broadcast_loses_nobody_and_sends_nobody_twice(ctx, settings, callback_server):
    total = 120
    inbox = await make_inbox(ctx, settings={"callback_url": callback_server.url})
    for i in range(total):
        await make_contact(ctx, name=f"客户{i}", tags=("vip",), identities=[(inbox, f"u{i}", {})])
    async with unit_of_work(ctx) as tx:
        b = await broadcasts.save(tx, None, {
            "name": "kill", "rules": {"op": "and", "rules": [{"field": "tag", "operator": "has", "value": "vip"}]},
            "inbox_ids": [inbox.id], "template": "您好 {{name}}"})
        bid = b.id
    assert (await broadcasts.start(ctx, bid))["queued"] == total
    callback_server.delay = 0.03
    proc = _spawn(settings)
    try:
        await wait_for(lambda: len(callback_server.received) >= 30, timeout=60)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert len(callback_server.received) < total, "the worker finished before the kill; nothing proven"
        await asyncio.sleep(3.5)  # the dead worker's leases expire
        burst = _spawn(settings, "--burst")
        await wait_for(lambda: burst.poll() is not None, timeout=120)
        assert burst.returncode == 0, burst.stderr.read().decode() if burst.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
    async with ctx.db.session() as s:
        keys = set((await s.scalars(select(Delivery.idempotency_key).join(
            BroadcastRecipient, BroadcastRecipient.delivery_id == Delivery.id))).all())
        rep = await report(s, await s.get(broadcasts.Broadcast, bid))
    assert rep["targeted"] == rep["sent"] == total and rep["failed"] == 0  # nobody lost
    assert set(callback_server.processed) == keys
    per_person = Counter(d["message"]["text"] for d in callback_server.processed.values())
    assert per_person == Counter(f"您好 客户{i}" for i in range(total))  # each exactly once (by idempotency key)
