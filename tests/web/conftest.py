"""Browser fixtures: the real app (with its outbox worker) in-process, and headless Debian Chromium via Playwright."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from scrm.context import AppContext
from scrm.settings import Settings

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parents[2] / "test-output" / "screenshots"
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync"]


@pytest.fixture
async def live_server(aiohttp_server: Any, ctx: AppContext, settings: Settings) -> Any:
    """The whole app on a free 127.0.0.1 port, outbox worker included (replies really get delivered)."""
    from scrm.web.app import create_app

    return await aiohttp_server(create_app(settings, ctx=ctx, run_background=True))


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    if not os.path.exists(CHROMIUM):
        pytest.skip("headless Chromium is not installed at /usr/bin/chromium (apt-get install chromium)")
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        instance = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield instance
        await instance.close()


class Tab:
    """A browser tab on the app that records page errors and dialogs (an alert() would mean injected script ran)."""

    def __init__(self, page: Any, base: str) -> None:
        self.page = page
        self.base = base
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on("dialog", self._dialog)

    async def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        await dialog.dismiss()

    async def goto(self, path: str) -> None:
        await self.page.goto(self.base + path)

    async def login(self, login: str, password: str) -> None:
        await self.goto("/login")
        await self.page.get_by_test_id("login-name").fill(login)
        await self.page.get_by_test_id("login-password").fill(password)
        await self.page.get_by_test_id("login-submit").click()
        # The password hash (argon2) is CPU-bound by design: on a loaded 2-core machine it can take seconds.
        await self.page.get_by_test_id("me").wait_for(timeout=20000)

    async def shot(self, name: str) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        await self.page.screenshot(path=str(SHOTS / f"{name}.png"))


@pytest.fixture
async def tab(browser: Any, live_server: Any) -> AsyncIterator[Tab]:
    """A fresh browser context (own cookies) in English at 1400x900, Shanghai time."""
    context = await browser.new_context(locale="en-US", viewport={"width": 1400, "height": 900}, timezone_id="Asia/Shanghai")
    context.set_default_timeout(5000)
    page = await context.new_page()
    yield Tab(page, str(live_server.make_url("")).rstrip("/"))
    await context.close()
