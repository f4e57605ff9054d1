"""The password and sessions card of "My preferences" in a real browser (both languages' strings exist)."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from tests.conftest import make_agent

pytestmark = pytest.mark.browser


async def _other_device(live_server: Any) -> aiohttp.ClientSession:
    http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    async with http.post(live_server.make_url("/api/v1/auth/login"),
                         json={"login": "li", "password": "password-123"}) as r:
        assert r.status == 200
    return http


async def _me(http: aiohttp.ClientSession, live_server: Any) -> int:
    async with http.get(live_server.make_url("/api/v1/me")) as r:
        return r.status


async def test_agent_changes_password_and_signs_out_everywhere(tab, ctx, admin, live_server):
    await make_agent(ctx, "li", "agent")
    phone = await _other_device(live_server)
    try:
        page = tab.page
        await tab.login("li", "password-123")
        await tab.goto("/preferences")
        await page.get_by_test_id("pw-current").fill("wrong-password")
        await page.get_by_test_id("pw-new").fill("new-secret-99")
        await page.get_by_test_id("pw-change").click()
        await page.get_by_test_id("pw-error").filter(has_text="current password is wrong").wait_for()
        await page.get_by_test_id("pw-current").fill("password-123")
        await page.get_by_test_id("pw-change").click()
        await page.get_by_text("Password changed").wait_for()
        await tab.shot("prefs-security-en")
        assert await _me(phone, live_server) == 401  # the other device is signed out
        # This tab goes on with its rotated session and CSRF token: a write still works.
        await page.get_by_test_id("pref-save").click()
        await page.get_by_text("Saved").first.wait_for()

        await page.get_by_test_id("signout-everywhere").click()
        await page.wait_for_url("**/login*")
        await page.get_by_test_id("login-name").wait_for()
        await tab.login("li", "new-secret-99")
        assert tab.errors == []
    finally:
        await phone.close()
