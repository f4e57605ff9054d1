"""Real processes: `scrm serve` killed with SIGKILL after acknowledging a kf callback, and the worker's
pull runner process killed mid-pull. The owed pull is in the database, so the runner the worker starts
again pulls it once the dead one's lease runs out: nothing lost, nothing twice."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections.abc import AsyncIterator

import aiohttp
import pytest

from scrm.db.models_wecom import WeComKfCursor
from tests.channels.wecom.fake_wecom_api import FakeWeCom, serving
from tests.channels.wecom.wecom_samples import OPEN_KFID, envelope, kf_event_xml, text_item
from tests.conftest import free_port, wait_for
from tests.core.test_processes import _env, _spawn
from tests.integration.helpers_integration import inbound
from tests.integration.wecom_helpers import kf_inbox

pytestmark = pytest.mark.slow
CUSTOMER = "wmKilledServeCustomer0000000001"


@pytest.fixture
async def fake() -> AsyncIterator[FakeWeCom]:
    async with serving() as fake:
        yield fake


async def test_sigkill_between_ack_and_pull_loses_nothing(ctx, settings, fake) -> None:
    inbox = await kf_inbox(ctx, fake)
    fake.add(*[text_item(f"kill-{i}", CUSTOMER, f"消息 {i}") for i in range(25)])
    fake.sync_delays = [30.0]  # the first pull hangs in WeCom: the puller dies meanwhile
    port = free_port()
    serve = _spawn(["serve", "--port", str(port), "--no-worker"], _env(settings))
    worker = _spawn(["worker"], _env(settings, SCRM_WORKER_POLL_INTERVAL="0.2"))
    try:
        async with aiohttp.ClientSession() as http:
            await wait_for(lambda: _up(http, port), timeout=60)
            query, body = envelope(kf_event_xml(fake.new_callback_token()))
            async with http.post(f"http://127.0.0.1:{port}/webhooks/wecom/{inbox.id}", params=query, data=body) as r:
                assert r.status == 200  # acknowledged: the owed pull is committed
        os.kill(serve.pid, signal.SIGKILL)  # the server that answered is gone: the pull does not need it
        serve.wait(10)
        # The worker's pull runner process pulls; it is killed in the middle of the pull.
        await wait_for(lambda: bool(fake.sync_requests), timeout=60)
        [runner] = _children(worker.pid)
        os.kill(runner, signal.SIGKILL)
        assert await inbound(ctx, inbox.id) == []
        async with ctx.db.session() as s:
            row = await s.get(WeComKfCursor, (inbox.id, OPEN_KFID))
        assert row.requested_seq > row.pulled_seq and row.lease_owner  # owed, leased by the dead process
        # The worker starts a new runner; once the dead one's lease runs out, it pulls what is owed.
        found = await wait_for(lambda: _stored(ctx, inbox.id, 25), timeout=90, interval=0.5)
        assert sorted(m.external_id for m in found) == sorted(f"kill-{i}" for i in range(25))
        assert [r for r in _children(worker.pid) if r != runner]  # restarted
    finally:
        _kill(serve, worker)
    await asyncio.sleep(0)


async def test_sigkill_of_serve_with_no_runner_up_loses_nothing(ctx, settings, fake) -> None:
    """Serve killed with SIGKILL right after its answers while no pull runner runs: the notes committed before
    the answers are all the worker started later needs to pull every message, once."""
    inbox = await kf_inbox(ctx, fake)
    port = free_port()
    serve = _spawn(["serve", "--port", str(port), "--no-worker"], _env(settings))
    worker = None
    try:
        async with aiohttp.ClientSession() as http:
            await wait_for(lambda: _up(http, port), timeout=60)
            for n in range(3):
                fake.add(*[text_item(f"gone-{n}-{i}", CUSTOMER, f"消息 {n}-{i}") for i in range(10)])
                query, body = envelope(kf_event_xml(fake.new_callback_token()))
                async with http.post(f"http://127.0.0.1:{port}/webhooks/wecom/{inbox.id}", params=query,
                                     data=body) as r:
                    assert r.status == 200
        os.kill(serve.pid, signal.SIGKILL)
        serve.wait(10)
        assert not fake.sync_requests  # nothing was pulled before the kill
        worker = _spawn(["worker"], _env(settings, SCRM_WORKER_POLL_INTERVAL="0.2"))
        found = await wait_for(lambda: _stored(ctx, inbox.id, 30), timeout=90, interval=0.5)
        assert sorted(m.external_id for m in found) == sorted(f"gone-{n}-{i}" for n in range(3) for i in range(10))
        # The newest callback's token, kept with the note, was used (the worker's first catch-up may pull
        # without one).
        assert any(r.get("token") for r in fake.sync_requests)
    finally:
        _kill(serve, worker)
    await asyncio.sleep(0)


def _kill(*procs: subprocess.Popen[bytes] | None) -> None:
    for proc in procs:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


async def _up(http: aiohttp.ClientSession, port: int) -> bool:
    try:
        async with http.get(f"http://127.0.0.1:{port}/readyz") as r:
            return r.status == 200
    except aiohttp.ClientError:
        return False


async def _stored(ctx, inbox_id: int, count: int):  # type: ignore[no-untyped-def]
    found = await inbound(ctx, inbox_id)
    return found if len(found) >= count else None
