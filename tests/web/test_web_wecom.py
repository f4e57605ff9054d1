"""The admin's WeCom pages in headless Chromium: the inbox form for both WeCom types, with setup help and
the callback URL, and acquisition links with their QR codes and counts."""

from __future__ import annotations

from typing import Any

import pytest

from tests.channels.wecom.fake_wecom_api import serving
from tests.channels.wecom.wecom_samples import AES_KEY, CORP_ID, OPEN_KFID, SECRET, TOKEN

pytestmark = pytest.mark.browser


async def fill(page: Any, name: str, value: str) -> None:
    await page.locator(f'[data-testid="inbox-form"] [name="{name}"]').fill(value)


async def test_admin_connects_a_kf_account_and_creates_a_link_with_a_qr_code(tab, ctx, admin, live_server):
    async with serving() as fake:
        await tab.login("root", "correct-horse-1")
        await tab.goto("/admin/inboxes")
        page = tab.page
        await page.get_by_test_id("channel-type").select_option("wecom_kf")
        assert "self-built app" in await page.get_by_test_id("wecom-help").inner_text()
        await fill(page, "name", "微信客服")
        await fill(page, "corp_id", "not-a-corp-id")
        await fill(page, "open_kfid", OPEN_KFID)
        await fill(page, "api_base_url", fake.base_url)
        await fill(page, "servicers", '{"root": "zhangsan"}')
        for name, value in (("secret", SECRET), ("token", TOKEN), ("encoding_aes_key", AES_KEY)):
            await fill(page, name, value)
        await page.locator('[data-testid="inbox-form"] button[type="submit"]').click()
        error = page.locator('[data-testid="inbox-form"] .error')
        await error.wait_for()
        assert "corp_id" in await error.inner_text()  # validated, and the message names the setting
        await fill(page, "corp_id", CORP_ID)
        await page.locator('[data-testid="inbox-form"] button[type="submit"]').click()
        created = page.get_by_test_id("inbox-created")
        await created.get_by_text("/webhooks/wecom/").wait_for()  # the callback URL to paste into WeCom
        await tab.shot("wecom-01-inbox-created")

        await page.get_by_test_id("wecom-ways").first.click()
        form = page.get_by_test_id("wecom-way-form")
        await form.locator('[name="name"]').fill("公众号菜单")
        await form.locator('[name="scene"]').fill("oamenu3")
        await form.locator('button[type="submit"]').click()
        row = page.get_by_test_id("wecom-way").filter(has_text="oamenu3")
        await row.wait_for()
        qr = row.get_by_test_id("wecom-qr")
        await page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=await qr.element_handle())
        assert await row.get_by_test_id("way-customers").inner_text() == "0"
        assert fake.contact_ways == [{"open_kfid": OPEN_KFID, "scene": "oamenu3"}]
        await tab.shot("wecom-02-link-qr")
        assert tab.errors == []


async def test_contacts_type_shows_its_own_setup_help(tab, ctx, admin, live_server):
    await tab.login("root", "correct-horse-1")
    await tab.goto("/admin/inboxes")
    await tab.page.get_by_test_id("channel-type").select_option("wecom_contacts")
    assert "客户联系" in await tab.page.get_by_test_id("wecom-help").inner_text()
    assert await tab.page.locator('[data-testid="inbox-form"] [name="open_kfid"]').count() == 0
