"""The broadcast composer's WeChat section in headless Chromium: 群发 mode with the quota shown before
sending, a preview to a test follower, the send, and a second 群发 refused with the quota as reason."""

from __future__ import annotations

from typing import Any

import pytest

from scrm.context import AppContext
from scrm.db.models_marketing import Broadcast, Segment
from scrm.settings import Settings
from tests.channels.wechat.fake_wechat_api import serving
from tests.conftest import make_agent, wait_for
from tests.marketing.wechat_mass_helpers import followers, oa_inbox

pytestmark = pytest.mark.browser


@pytest.fixture
async def live_server(aiohttp_server: Any, ctx: AppContext, settings: Settings) -> Any:
    from scrm.web.app import create_app

    ctx.extras["broadcast_scheduler_interval"] = 0.3
    return await aiohttp_server(create_app(settings, ctx=ctx, run_background=True))


async def _draft(ctx: AppContext, inbox_id: int, name: str) -> None:
    async with ctx.db.transaction() as s:
        sg = Segment(name=f"粉丝 {name}", rules={"op": "and", "rules": [{"field": "tag", "operator": "has",
                                                                         "value": "fans"}]})
        s.add(sg)
        await s.flush()
        s.add(Broadcast(name=name, status="draft", segment_id=sg.id, rules={}, inbox_ids=[inbox_id],
                        template="双十一新品上市", reply_window_days=3))


async def test_marketer_mass_sends_with_quota_preview_and_refusal(tab, ctx, live_server):
    async with serving() as fake:
        inbox = await oa_inbox(ctx, fake, account_type="subscription")
        await followers(ctx, inbox, 3)
        await _draft(ctx, inbox.id, "群发一")
        await _draft(ctx, inbox.id, "群发二")
        await make_agent(ctx, "mkt", "marketer")
        page = tab.page
        await tab.login("mkt", "password-123")
        await tab.goto("/broadcasts")
        await page.get_by_test_id("broadcast-link").filter(has_text="群发一").click()
        section = page.get_by_test_id("wx-section")
        await section.wait_for()
        # Template messages are for service notices only, and the page says so.
        assert "service notices" in await page.get_by_test_id("wx-template-note").inner_text()
        await page.get_by_test_id("wx-mode").select_option("mass")
        quota = page.locator('[data-testid="wx-quota"][data-remaining="1"]')
        await quota.wait_for()
        assert "once a day" in await quota.inner_text()
        await page.get_by_test_id("wx-preview-openid").fill("oMarketer")
        await page.get_by_test_id("wx-preview-btn").click()
        await wait_for(lambda: len(fake.mass_previews) == 1, timeout=20)
        assert fake.mass_previews[0]["touser"] == "oMarketer" and fake.mass_sends == []
        await tab.shot("wechat-01-mass-mode")
        await page.get_by_test_id("bc-send").click()
        await wait_for(lambda: len(fake.mass_sends) == 1, timeout=30)
        assert sorted(fake.mass_sends[0]["touser"]) == [f"oF{i:05d}" for i in range(3)]
        # The report shows the 群发 batch and, once WeChat reports it, its counts.
        await page.locator('[data-testid="wx-batch"][data-status="submitted"]').wait_for(timeout=15000)
        await tab.shot("wechat-02-mass-report")

        await tab.goto("/broadcasts")
        await page.get_by_test_id("broadcast-link").filter(has_text="群发二").click()
        await page.get_by_test_id("wx-mode").select_option("mass")
        await page.locator('[data-testid="wx-quota"][data-remaining="0"]').wait_for()
        await page.get_by_test_id("bc-send").click()
        error = page.get_by_test_id("compose-error")
        await error.filter(has_text="quota").wait_for()
        assert "once a day" in await error.inner_text()
        await tab.shot("wechat-03-quota-refused")
        assert len(fake.mass_sends) == 1
        assert tab.errors == []
