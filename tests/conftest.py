"""Shared fixtures. Every test runs on SQLite; with SCRM_TEST_DATABASE_URL / SCRM_TEST_REDIS_URL set
(CI does) the same tests run on PostgreSQL + Redis instead."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from channels import signing
from scrm.bootstrap import build_context
from scrm.context import AppContext
from scrm.db.migrate import upgrade
from scrm.db.models import Base, Inbox
from scrm.services.agents.accounts import create_agent
from scrm.settings import Settings, load_settings

PG_URL = os.environ.get("SCRM_TEST_DATABASE_URL")
REDIS_URL = os.environ.get("SCRM_TEST_REDIS_URL")
SHARED = Path(__file__).resolve().parents[2] / "shared"
if not SHARED.exists():
    SHARED = Path(__file__).resolve().parents[1].parent / "shared"
if not SHARED.exists():  # the checkout may live elsewhere; /work/shared is the canonical place
    SHARED = Path("/work/shared")

# Channel secrets are encrypted at rest; every test process (and the servers and workers tests start)
# uses this key. CI runs on PostgreSQL, where a server without a key refuses to start.
TEST_SECRET_KEY = "9O8XMqGGAaFZ6jbszQNWFeGCHF23U4qOTPwnyMgJmFA="

_template_db: Path | None = None
TEST_OUTBOUND_ALLOW = ["127.0.0.0/8", "::1/128"]
# The same, for servers the tests start as processes (SCRM_* environment variables).
TEST_SERVER_ENV = {"SCRM_SECURITY_OUTBOUND_ALLOW": '["127.0.0.0/8", "::1/128"]', "SCRM_SERVER_DEMO": "true"}
_pg_migrated = False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def backend() -> str:
    return "postgresql" if PG_URL else "sqlite"


async def _reset_pg() -> None:
    global _pg_migrated
    assert PG_URL
    if not _pg_migrated:
        engine = create_async_engine(PG_URL)
        async with engine.begin() as conn:
            await conn.execute(text("DROP SCHEMA public CASCADE"))
            await conn.execute(text("CREATE SCHEMA public"))
        await engine.dispose()
        await upgrade(PG_URL)
        _pg_migrated = True
    engine = create_async_engine(PG_URL)
    names = ", ".join(t.name for t in Base.metadata.sorted_tables)
    async with engine.begin() as conn:
        await conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    await engine.dispose()


async def _sqlite_copy(dest: Path) -> str:
    global _template_db
    if _template_db is None:
        tmpl = Path(os.environ.get("PYTEST_TMP_TEMPLATE", "/tmp")) / f"scrm-template-{os.getpid()}.db"
        tmpl.unlink(missing_ok=True)
        await upgrade(f"sqlite+aiosqlite:///{tmpl}")
        import sqlite3

        conn = sqlite3.connect(tmpl)  # copies start in WAL mode, as a running server's file is
        conn.execute("PRAGMA journal_mode=WAL")
        conn.close()  # checkpoints: the copied file alone holds everything
        _template_db = tmpl
    shutil.copy(_template_db, dest)
    return f"sqlite+aiosqlite:///{dest}"


@pytest.fixture
async def settings(tmp_path: Path) -> Settings:
    """Settings for one test with a fresh, migrated database."""
    if PG_URL:
        await _reset_pg()
        url = PG_URL
    else:
        url = await _sqlite_copy(tmp_path / "scrm.db")
    if REDIS_URL:
        import redis.asyncio as aioredis

        r = aioredis.from_url(REDIS_URL)
        await r.flushdb()
        await r.aclose()
    return load_settings(
        env={},
        overrides={
            "database": {"url": url, "auto_migrate": False},
            "redis": {"url": REDIS_URL},
            "storage": {"path": str(tmp_path / "files")},
            "worker": {"poll_interval": 0.1, "backoff_base": 1.05, "lease_seconds": 30, "send_timeout": 10},
            # The fake platforms, callback receivers and flow endpoints of the tests listen on 127.0.0.1:
            # the outbound policy refuses loopback unless allowed, exactly as production does.
            "security": {"login_attempts": 5, "secret_key": TEST_SECRET_KEY, "outbound_allow": TEST_OUTBOUND_ALLOW},
            # Tests drive conversations through the customer simulator (memory channel): demo mode.
            "server": {"demo": True},
        },
    )


@pytest.fixture
async def ctx(settings: Settings) -> AsyncIterator[AppContext]:
    context = await build_context(settings)
    context.bus.consume_work()  # the test process works off the events it publishes, like a worker
    yield context
    await context.bus.drain(2)
    await context.close()


@pytest.fixture
async def client(aiohttp_client: Any, ctx: AppContext, settings: Settings) -> Any:
    """A test client of the real app (no background worker: tests drive it with run_until_idle)."""
    from scrm.web.app import create_app

    app = create_app(settings, ctx=ctx, run_background=False)
    return await aiohttp_client(app)


@pytest.fixture
async def admin(ctx: AppContext) -> dict[str, Any]:
    async with ctx.db.transaction() as s:
        agent = await create_agent(s, login="root", password="correct-horse-1", role="admin", display_name="Root")
    return {"id": agent.id, "login": "root", "password": "correct-horse-1"}


async def make_agent(ctx: AppContext, login: str, role: str) -> int:
    async with ctx.db.transaction() as s:
        agent = await create_agent(s, login=login, password="password-123", role=role, display_name=login.title())
    return agent.id


async def login(client: Any, login_name: str, password: str) -> dict[str, str]:
    """Log in with the cookie session; returns headers carrying the CSRF token."""
    resp = await client.post("/api/v1/auth/login", json={"login": login_name, "password": password})
    assert resp.status == 200, await resp.text()
    return {"X-CSRF-Token": (await resp.json())["csrf_token"]}


@pytest.fixture
async def admin_headers(client: Any, admin: dict[str, Any]) -> dict[str, str]:
    return await login(client, admin["login"], admin["password"])


async def make_inbox(ctx: AppContext, channel_type: str = "api", *, name: str = "API", settings: dict[str, Any] | None = None,
                     secrets: dict[str, Any] | None = None, reopen_policy: str = "reopen") -> Inbox:
    async with ctx.db.transaction() as s:
        inbox = Inbox(name=name, channel_type=channel_type, settings=settings or {},
                      secrets=secrets if secrets is not None else ({"secret": "s" * 32} if channel_type == "api" else {}),
                      reopen_policy=reopen_policy)
        s.add(inbox)
        await s.flush()
    # The row is written behind the processes' backs: drop this one's cached list of active inboxes at once
    # (they reach a running process within AdapterPool.INBOX_TTL; the tests do not wait that long).
    if hasattr(ctx.adapters, "forget"):
        ctx.adapters.forget(inbox.id)
    return inbox


def api_message(mid: str, sender: str = "user-1", text: str = "你好", **extra: Any) -> dict[str, Any]:
    return {"id": mid, "sender": {"id": sender, "name": extra.pop("name", "张三")}, "text": text, **extra}


async def post_signed(client: Any, inbox_id: int, payload: Any, *, secret: str = "s" * 32,
                      headers: dict[str, str] | None = None, raw: bytes | None = None) -> Any:
    body = raw if raw is not None else json.dumps(payload, ensure_ascii=False).encode()
    h = {"Content-Type": "application/json", **signing.signed_headers(secret, body), **(headers or {})}
    return await client.post(f"/webhooks/api/{inbox_id}", data=body, headers=h)


class CallbackServer:
    """A local integrator endpoint: verifies our signature and applies Idempotency-Key like a real receiver."""

    def __init__(self, secret: str = "s" * 32) -> None:
        self.secret = secret
        self.received: list[dict[str, Any]] = []  # every request, repeats included
        self.processed: dict[str, dict[str, Any]] = {}  # by idempotency key
        self.fail_next: list[int] = []
        self.delay = 0.0
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        problem = signing.verify(self.secret, request.headers.get("X-SCRM-Timestamp"),
                                 request.headers.get("X-SCRM-Signature"), body, 300)
        if problem:
            return web.json_response({"error": problem}, status=401)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail_next:
            return web.json_response({"error": "induced"}, status=self.fail_next.pop(0))
        data = json.loads(body)
        key = request.headers["Idempotency-Key"]
        self.received.append(data)
        self.processed.setdefault(key, data)
        return web.json_response({"id": f"ext-{data['delivery_id']}"})

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/callback", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}/callback"
        return self.url

    async def stop(self) -> None:
        if self.runner:
            await self.runner.cleanup()


@pytest.fixture
async def callback_server() -> AsyncIterator[CallbackServer]:
    server = CallbackServer()
    await server.start()
    yield server
    await server.stop()


async def wait_for(predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.05) -> Any:
    """Poll an async or sync predicate until it returns something truthy."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)
