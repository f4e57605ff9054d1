"""A real `scrm worker` SIGKILLed in the middle of a 群发 call: the restarted worker resends that batch
with the clientmsgid recorded before sending, WeChat answers 45065, and no follower gets it twice."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest
from sqlalchemy import select

from scrm.db.models_wechat import WeChatMassBatch
from scrm.services.marketing import broadcasts
from scrm.services.marketing.broadcast_report import report
from tests.channels.wechat.fake_wechat_api import serving
from tests.conftest import wait_for
from tests.marketing.test_marketing_sigkill import _spawn
from tests.marketing.wechat_mass_helpers import draft, followers, oa_inbox

pytestmark = pytest.mark.slow


async def test_sigkill_mid_mass_send_sends_nobody_twice(ctx, settings):
    async with serving() as fake:
        inbox = await oa_inbox(ctx, fake)
        total = 30
        await followers(ctx, inbox, total)
        bid = await draft(ctx, inbox, options={"target": "list", "batch_size": 5})
        assert (await broadcasts.start(ctx, bid))["queued"] == total
        fake.mass_delay = 1.5  # WeChat accepts each batch, then answers slowly: the kill lands in between
        proc = _spawn(settings)
        try:
            await wait_for(lambda: fake.mass_calls >= 2, timeout=60)
            os.kill(proc.pid, signal.SIGKILL)  # batches accepted by WeChat, their answers never recorded
            proc.wait(10)
            async with ctx.db.session() as s:
                recorded = len((await s.scalars(select(WeChatMassBatch.id).where(
                    WeChatMassBatch.broadcast_id == bid, WeChatMassBatch.status == "submitted"))).all())
            assert recorded < len(fake.mass_sends), "nothing was in flight at the kill; nothing proven"
            fake.mass_delay = 0
            await asyncio.sleep(3.5)  # the dead worker's leases expire
            burst = _spawn(settings, "--burst")
            await wait_for(lambda: burst.poll() is not None, timeout=120)
            assert burst.returncode == 0, burst.stderr.read().decode() if burst.stderr else ""
        finally:
            if proc.poll() is None:
                proc.kill()
        async with ctx.db.session() as s:
            rep = await report(s, await s.get(broadcasts.Broadcast, bid))
    assert len(fake.mass_sends) == total // 5  # six batches accepted, each once
    assert fake.mass_calls > total // 5  # the interrupted one was sent again ...
    assert sorted(fake.mass_received) == [f"oF{i:05d}" for i in range(total)]
    assert set(fake.mass_received.values()) == {1}  # ... and WeChat's 45065 kept it from reaching anyone twice
    assert rep["sent"] == total and rep["failed"] == 0
    assert [b["status"] for b in rep["wechat_mass"]["batches"]] == ["submitted"] * (total // 5)
    assert len({b["msg_id"] for b in rep["wechat_mass"]["batches"]}) == total // 5
