"""The web chat widget in headless Chromium: a visitor on a customer's website (another origin) and an agent."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from scrm.db.models import Conversation
from scrm.db.models_desk import CsatSurvey
from tests.web.conftest import SHOTS, Tab
from tests.web.webchat_helpers import ALL_DAY, allow, host_app, make_web_inbox, set_hours

pytestmark = pytest.mark.browser


async def _site(aiohttp_server: Any, live_server: Any, inbox_id: int, **kw: Any) -> tuple[Any, str]:
    base = str(live_server.make_url("")).rstrip("/")
    server = await aiohttp_server(host_app(base, inbox_id, **kw))
    return server, str(server.make_url("/")).rstrip("/")


async def _visitor(browser: Any, *, locale: str = "en-US", mobile: bool = False) -> Any:
    if mobile:
        context = await browser.new_context(locale=locale, viewport={"width": 390, "height": 844}, device_scale_factor=2,
                                            is_mobile=True, has_touch=True, timezone_id="Asia/Shanghai")
    else:
        context = await browser.new_context(locale=locale, viewport={"width": 1280, "height": 800}, timezone_id="Asia/Shanghai")
    context.set_default_timeout(8000)
    return context


async def _shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.wait_for_timeout(250)
    await page.screenshot(path=str(SHOTS / f"{name}.png"))


def _frame(page: Any) -> Any:
    return page.frame_locator("[data-testid=scrm-frame]")


async def test_visitor_chats_with_bot_and_agent_on_a_foreign_site(browser, tab: Tab, ctx, admin, live_server, aiohttp_server):
    await set_hours(ctx, ALL_DAY)
    inbox = await make_web_inbox(ctx, [], prechat_enabled=True)
    _, site = await _site(aiohttp_server, live_server, inbox.id)
    await allow(ctx, inbox.id, site)
    await tab.login("root", "correct-horse-1")  # an agent is online

    context = await _visitor(browser)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(site + "/")
    launcher = page.get_by_test_id("scrm-launcher")
    await launcher.wait_for()
    assert await launcher.get_attribute("aria-label") == "Open chat"
    await _shot(page, "webchat-01-closed-en")
    await launcher.click()
    chat = _frame(page)
    await chat.get_by_test_id("prechat").wait_for()
    assert await launcher.get_attribute("aria-expanded") == "true"
    await _shot(page, "webchat-02-prechat-en")
    await chat.get_by_test_id("field-name").fill("Alice Visitor")
    await chat.get_by_test_id("field-email").fill("alice@example.com")
    await chat.get_by_test_id("prechat-submit").click()
    await chat.get_by_test_id("chat-input").wait_for()
    await _shot(page, "webchat-03-open-en")

    await chat.get_by_test_id("chat-input").fill("下单后多久发货？")
    await chat.get_by_test_id("chat-input").press("Enter")
    bot = chat.locator("[data-testid=chat-msg][data-from=bot]").filter(has_text="48 小时")
    await bot.wait_for()
    await chat.get_by_test_id("chat-choice").first.wait_for()
    await _shot(page, "webchat-04-bot-buttons-en")
    sent = chat.locator("[data-testid=chat-msg][data-from=visitor]").filter(has_text="下单后多久发货")
    assert await sent.count() == 1

    await chat.get_by_test_id("chat-input").fill("human")
    await chat.get_by_test_id("chat-input").press("Enter")
    async with ctx.db.session() as s:
        conv = await s.scalar(select(Conversation).where(Conversation.inbox_id == inbox.id))
    assert conv is not None

    # The agent, in another browser context, answers in realtime.
    await tab.goto(f"/conversations/{conv.id}")
    await tab.page.get_by_test_id("msg-text").filter(has_text="下单后多久发货").wait_for()
    await tab.page.get_by_test_id("composer-input").fill("Hi Alice, I am Root and I will help you.")
    await tab.page.get_by_test_id("composer-input").press("Enter")
    reply = chat.locator("[data-testid=chat-msg][data-from=agent]").filter(has_text="I will help you")
    await reply.wait_for(timeout=5000)
    assert "Root" in await reply.inner_text()

    # Reload: the history comes back.
    await page.reload()
    await page.get_by_test_id("scrm-launcher").click()
    await chat.locator("[data-testid=chat-msg][data-from=agent]").filter(has_text="I will help you").wait_for()
    assert await chat.locator("[data-testid=chat-msg][data-from=visitor]").filter(has_text="下单后多久发货").count() == 1

    # Resolve: the rating question arrives in the chat and a star records it.
    await tab.page.get_by_test_id("resolve").click()
    await chat.get_by_test_id("chat-csat").wait_for()
    await _shot(page, "webchat-05-csat-en")
    await chat.locator("[data-testid=chat-star][data-rating='5']").click()
    await chat.locator("[data-testid=chat-msg][data-from=system]").last.wait_for()
    for _ in range(50):
        async with ctx.db.session() as s:
            survey = await s.scalar(select(CsatSurvey).where(CsatSurvey.conversation_id == conv.id))
        if survey is not None and survey.rating == 5:
            break
        await page.wait_for_timeout(100)
    assert survey is not None and survey.rating == 5
    assert errors == []
    await context.close()
