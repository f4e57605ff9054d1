"""Inbox membership in the browser: the admin picks an inbox's agents; an agent of another inbox no longer sees it."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from tests.conftest import api_message, make_agent, make_inbox, post_signed

pytestmark = pytest.mark.browser


async def _post(live_server: Any, inbox_id: int, payload: dict[str, Any]) -> None:
    async with aiohttp.ClientSession(base_url=str(live_server.make_url("/"))) as http:
        r = await post_signed(http, inbox_id, payload)
        assert r.status == 200, await r.text()


async def test_admin_restricts_an_inbox_and_the_other_agent_stops_seeing_it(tab, browser, ctx, admin, live_server):
    shop = await make_inbox(ctx, name="Shop")
    await make_inbox(ctx, name="Support")
    await make_agent(ctx, "alice", "agent")
    await make_agent(ctx, "bob", "agent")
    await _post(live_server, shop.id, api_message("s-1", sender="cust-s", text="店铺订单问题", name="王店铺"))
    page = tab.page
    await tab.login("root", "correct-horse-1")
    await tab.goto("/admin/inboxes")
    row = page.locator("tr").filter(has_text="Shop")
    await row.get_by_test_id("members-open").click()
    status = page.get_by_test_id("members-status")
    await status.wait_for()
    assert "every agent sees" in await status.inner_text()
    await page.get_by_test_id("members-agents").get_by_text("Alice (alice)").click()
    await page.get_by_test_id("members-save").click()
    await page.get_by_text("Only admins, 1 agent(s)").wait_for()
    await tab.shot("inbox-members")

    bob = await browser.new_context(locale="zh-CN", viewport={"width": 1400, "height": 900})
    bob.set_default_timeout(5000)
    bob_page = await bob.new_page()
    base = tab.base
    await bob_page.goto(base + "/login")
    await bob_page.get_by_test_id("login-name").fill("bob")
    await bob_page.get_by_test_id("login-password").fill("password-123")
    await bob_page.get_by_test_id("login-submit").click()
    await bob_page.get_by_test_id("conv-list").wait_for()
    await bob_page.wait_for_load_state("networkidle")
    assert await bob_page.get_by_test_id("conv-row").count() == 0  # Shop's only conversation is alice's now
    assert "王店铺" not in await bob_page.content()
    await bob.close()

    alice = await browser.new_context(locale="zh-CN", viewport={"width": 1400, "height": 900})
    alice.set_default_timeout(5000)
    alice_page = await alice.new_page()
    await alice_page.goto(base + "/login")
    await alice_page.get_by_test_id("login-name").fill("alice")
    await alice_page.get_by_test_id("login-password").fill("password-123")
    await alice_page.get_by_test_id("login-submit").click()
    await alice_page.get_by_test_id("conv-row").filter(has_text="王店铺").wait_for()
    await alice.close()
    assert tab.errors == [] and tab.dialogs == []
