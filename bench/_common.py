"""Process helpers shared by the benchmarks that start real `scrm` processes."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import time
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
