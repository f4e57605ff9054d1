"""Process helpers shared by the benchmarks that start real `scrm` processes."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp

# Channel secrets are encrypted at rest: the benchmark's own process and the servers it starts share
# this key (a server on PostgreSQL refuses to start without one).
BENCH_SECRET_KEY = "Yb7m7o2b7u0y0JkQ2c3n9nM0e3q2C1ZQm3V8yX1lq0s="
# The fake platforms and callback receivers of the benchmarks listen on 127.0.0.1, which the outbound policy
# refuses unless allowed (as a deployment with private receivers would set security.outbound_allow).
def _install_key() -> None:
    """Benchmarks write inboxes from their own process too: seal their secrets with the servers' key."""
    from scrm import secret_box

    secret_box.install(BENCH_SECRET_KEY)


_install_key()
BENCH_OUTBOUND_ALLOW = ["127.0.0.0/8", "::1/128"]
BENCH_SERVER_ENV = {"SCRM_SECRET_KEY": BENCH_SECRET_KEY,
                    "SCRM_SECURITY_OUTBOUND_ALLOW": '["127.0.0.0/8", "::1/128"]', "SCRM_SERVER_DEMO": "true"}


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_up(url: str, timeout: float = 60, proc: subprocess.Popen[bytes] | None = None,
                  log: Path | None = None) -> None:
    """Poll `url` until it answers 200; fail early (with the tail of `log`) if `proc` exits."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"server exited: {log.read_text()[-2000:] if log else proc.returncode}")
            try:
                async with http.get(url) as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (graceful shutdown), then SIGKILL after 20 s."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


async def fresh_redis(url: str) -> None:
    """Empty the bench's own Redis db: a previous run's unworked events must not be worked in this one."""
    import redis.asyncio as aioredis

    r = aioredis.from_url(url)
    try:
        await r.flushdb()
    finally:
        await r.aclose()


async def work_drained(db_url: str, timeout: float) -> bool:
    """Wait until the workers have worked off every event (the event log: no unworked row)."""
    from scrm.db.database import Database
    from scrm.event_log import unworked

    db = Database(db_url, pool_size=1)
    try:
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if not await unworked(db):
                return True
            await asyncio.sleep(0.05)
        return False
    finally:
        await db.dispose()


@contextlib.contextmanager
def production_postgres() -> Iterator[str | None]:
    """A PostgreSQL cluster of the bench's own with the server's default settings (fsync, autovacuum on), as
    an operator runs it; yields its server URL (no database), or None where initdb is not available.

    The shared test server of a CI machine may run with autovacuum off: its queue (`events`) and hot rows
    (conversations, deliveries) then only ever gain dead versions, and each claim walks more of them, which
    measures a server no production deployment runs."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.scratch import ScratchPostgres

    if not ScratchPostgres.available():
        yield None
        return
    pg = ScratchPostgres()
    try:
        pg.init(production=True)
        pg.start()
        yield f"postgresql+asyncpg://postgres@127.0.0.1:{pg.port}"
    finally:
        pg.close()


async def autovacuum_off(db_url: str) -> bool:
    """Whether the PostgreSQL server of `db_url` has autovacuum off (figures of a server that never vacuums)."""
    import asyncpg

    server = db_url.replace("+asyncpg", "").rsplit("/", 1)[0]
    conn = await asyncpg.connect(f"{server}/postgres", timeout=5)
    try:
        return str(await conn.fetchval("SHOW autovacuum")) == "off"
    finally:
        await conn.close()
