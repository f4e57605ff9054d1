"""Webhook mode stays webhook mode (issue 18): with server.public_url set, no process polls getUpdates
(which would delete the webhook), across restarts; without it, polling is used."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from channels.base import InboxConfig
from channels.telegram import TelegramAdapter
from tests.channels.telegram.fake_bot_api import DEFAULT_TOKEN, FakeBotApi
from tests.channels.telegram.helpers import WEBHOOK_SECRET
from tests.conftest import TEST_SERVER_ENV, make_inbox
from tests.fakes import FakeRuntime

ROOT = Path(__file__).resolve().parents[3]
PUBLIC_URL = "https://crm.example.com"
PHASE_SECONDS = 15.0  # two phases (a restart between): 30 s, three poller rounds (10 s) per phase


def test_only_an_inbox_without_public_url_wants_polling() -> None:
    config = InboxConfig(id=1, name="TG", channel_type="telegram", secrets={"bot_token": DEFAULT_TOKEN})
    assert TelegramAdapter(config, FakeRuntime(public_url=PUBLIC_URL)).wants_polling() is False
    assert TelegramAdapter(config, FakeRuntime()).wants_polling() is True


def _env(settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCRM_")}
    env.update(TEST_SERVER_ENV)  # loopback fakes allowed, simulator on (as the in-process tests)
    env.update({"SCRM_DATABASE_URL": settings.database.url, "SCRM_DATABASE_AUTO_MIGRATE": "false",
                "SCRM_STORAGE_PATH": settings.storage.path, "SCRM_LOGGING_LEVEL": "WARNING", "PYTHONPATH": str(ROOT),
                "SCRM_SECRET_KEY": settings.security.secret_key.get_secret_value(),
                "SCRM_BOT_CONFIG": str(ROOT / "tests" / "core" / "fixtures" / "bot_disabled.toml")})
    if settings.redis.url:
        env["SCRM_REDIS_URL"] = settings.redis.url
    env.update(extra)
    return env


def _serve(port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "scrm.cli", "serve", "--port", str(port)], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def _ready(port: int, timeout: float = 120.0) -> None:
    import aiohttp

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with aiohttp.ClientSession() as http:
        while loop.time() < deadline:
            try:
                async with http.get(f"http://127.0.0.1:{port}/readyz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise AssertionError(f"scrm serve on port {port} was not ready within {timeout:.0f} s")


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.mark.slow
async def test_webhook_mode_stays_across_restarts_and_processes(ctx, settings, bot_api: FakeBotApi) -> None:
    from tests.conftest import free_port

    inbox = await make_inbox(ctx, "telegram", name="TG", settings={"api_base_url": bot_api.base_url},
                             secrets={"bot_token": DEFAULT_TOKEN, "webhook_secret": WEBHOOK_SECRET})
    env = _env(settings, SCRM_SERVER_PUBLIC_URL=PUBLIC_URL)
    # Several processes need Redis (the cluster-wide poller lease); on SQLite one process, restarted.
    processes = 2 if settings.redis.url else 1
    started = 0
    for _phase in range(2):
        ports = [free_port() for _ in range(processes)]
        procs = [_serve(port, env) for port in ports]
        started += processes
        try:
            for port in ports:  # a loaded machine can take a while to start a server: the phase starts when it is up
                await _ready(port)
            await asyncio.sleep(PHASE_SECONDS)
            for proc in procs:
                assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "exited"
        finally:
            _stop(procs)
    calls = Counter(c.method for c in bot_api.calls)
    assert calls["getUpdates"] == 0 and calls["deleteWebhook"] == 0, calls
    assert calls["setWebhook"] == started, calls  # registered once by every start, never removed
    assert bot_api.webhook["url"] == f"{PUBLIC_URL}/webhooks/telegram/{inbox.id}"
    assert bot_api.webhook["secret_token"] == WEBHOOK_SECRET
