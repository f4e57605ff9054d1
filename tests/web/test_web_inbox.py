"""The agent inbox in headless Chromium: what an agent sees and does, end to end against the real app."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest
from sqlalchemy import delete

from scrm.db.models import AgentSession
from scrm.listeners.realtime import hub_for
from tests.conftest import api_message, make_agent, make_inbox, post_signed

pytestmark = pytest.mark.browser


async def _post(live_server: Any, inbox_id: int, payload: dict[str, Any]) -> dict[str, Any]:
    async with aiohttp.ClientSession(base_url=str(live_server.make_url("/"))) as http:
        r = await post_signed(http, inbox_id, payload)
        assert r.status == 200, await r.text()
        return await r.json()  # type: ignore[no-any-return]


async def test_live_message_reaches_list_and_thread_within_a_second(tab, ctx, admin, live_server):
    inbox = await make_inbox(ctx)
    await tab.goto("/")
    await tab.page.get_by_test_id("login-name").wait_for()
    await tab.shot("01-login")
    await tab.login("root", "correct-horse-1")
    await tab.page.locator('[data-testid="live-status"].live').wait_for()

    await _post(live_server, inbox.id, api_message("m-1", sender="cust-1", text="我的订单还没发货", name="王小明"))
    started = time.monotonic()
    row = tab.page.get_by_test_id("conv-row").filter(has_text="王小明")
    await row.wait_for(timeout=1000)
    assert time.monotonic() - started < 1.0
    assert await row.get_by_test_id("conv-preview").inner_text()  # the message, or the bot's answer already
    await tab.page.get_by_test_id("waiting-count").filter(has_text="Waiting: 0").wait_for()  # the bot handles it

    await row.click()
    await tab.page.get_by_test_id("msg-text").filter(has_text="我的订单还没发货").wait_for()
    await _post(live_server, inbox.id, api_message("m-2", sender="cust-1", text="请尽快处理", name="王小明"))
    started = time.monotonic()
    await tab.page.get_by_test_id("msg-text").filter(has_text="请尽快处理").wait_for(timeout=1000)
    assert time.monotonic() - started < 1.0
    await tab.page.wait_for_timeout(300)
    await tab.shot("02-inbox-thread")
    assert tab.errors == []


async def test_reply_is_delivered_and_a_private_note_is_not(tab, ctx, admin, live_server, callback_server):
    inbox = await make_inbox(ctx, settings={"callback_url": callback_server.url})
    result = await _post(live_server, inbox.id, api_message("m-1", sender="cust-9", text="发票怎么开？", name="李娜"))
    cid = result["results"][0]["conversation_id"]
    await tab.login("root", "correct-horse-1")
    await tab.goto(f"/conversations/{cid}")
    page = tab.page
    await page.get_by_test_id("msg-text").filter(has_text="发票怎么开？").wait_for()

    await page.get_by_test_id("mode-note").click()
    await page.get_by_test_id("composer-input").fill("客户要专票，内部先核实")
    await page.get_by_test_id("send").click()
    note = page.locator('[data-testid="msg"].note').filter(has_text="客户要专票")
    await note.wait_for()
    assert await note.get_by_test_id("delivery").count() == 0

    await page.get_by_test_id("mode-reply").click()
    await page.get_by_test_id("composer-input").fill("您好，可以开电子发票")
    await page.get_by_test_id("composer-input").press("Enter")
    sent = page.locator('[data-testid="msg"][data-kind="agent"]').filter(has_text="您好，可以开电子发票")
    await sent.locator('[data-testid="delivery"].sent').wait_for()  # the worker delivered; the socket told us
    assert await sent.get_by_test_id("delivery").inner_text() == "Sent"
    texts = [m["message"]["text"] for m in callback_server.received]  # the bot's greeting may be there too
    assert "您好，可以开电子发票" in texts and not any("内部先核实" in (x or "") for x in texts)
    assert await page.get_by_test_id("composer-input").input_value() == ""
    await tab.shot("03-reply-delivered")


async def test_take_over_and_hand_back(tab, ctx, admin, live_server):
    inbox = await make_inbox(ctx)
    result = await _post(live_server, inbox.id, api_message("m-1", sender="cust-2", text="转人工", name="刘洋"))
    cid = result["results"][0]["conversation_id"]
    await tab.login("root", "correct-horse-1")
    await tab.goto(f"/conversations/{cid}")
    page = tab.page
    handler = page.get_by_test_id("handler")
    await page.get_by_test_id("take-over").click()
    await handler.filter(has_text="Agent").wait_for()
    assert await page.get_by_test_id("assign").input_value() == str(admin["id"])
    await page.locator('[data-testid="msg"][data-kind="system"]').first.wait_for()  # the handoff note
    await page.get_by_test_id("hand-back").click()
    await handler.filter(has_text="Bot").wait_for()
    assert await handler.inner_text() == "Bot"
    assert await page.get_by_test_id("take-over").is_visible()
    assert await page.locator('[data-testid="msg"][data-kind="system"]').count() >= 2


async def test_customer_markup_is_shown_as_text_and_never_runs(tab, ctx, admin, live_server):
    inbox = await make_inbox(ctx)
    evil = '<img src=x onerror=alert(1)> <script>alert(2)</script>'
    result = await _post(live_server, inbox.id, api_message("m-x", sender="cust-x", text=evil, name="<b onmouseover=alert(3)>Eve</b>"))
    cid = result["results"][0]["conversation_id"]
    await tab.login("root", "correct-horse-1")
    row = tab.page.get_by_test_id("conv-row").first
    await row.wait_for()
    assert await row.locator(".name").inner_text() == "<b onmouseover=alert(3)>Eve</b>"
    await row.click()
    text = tab.page.get_by_test_id("msg-text").first
    await text.wait_for()
    assert await text.inner_text() == evil
    assert await tab.page.locator(".messages img, .messages script, .conv-list img, .conv-list b").count() == 0
    await row.hover()
    await tab.page.get_by_test_id("thread-title").hover()
    await tab.page.wait_for_timeout(300)
    assert tab.dialogs == [] and tab.errors == []
    assert cid


async def test_language_switch_and_chinese_default(tab, browser, ctx, admin, live_server):
    await tab.login("root", "correct-horse-1")
    page = tab.page
    await page.get_by_test_id("tab-mine").filter(has_text="Mine").wait_for()
    assert (await page.get_by_test_id("tab-mine").inner_text()).startswith("Mine")  # the count badge loads later
    await page.get_by_test_id("lang").select_option("zh")
    await page.get_by_test_id("tab-mine").filter(has_text="我的").wait_for()
    await page.reload()
    await page.get_by_test_id("tab-mine").wait_for()
    assert (await page.get_by_test_id("tab-mine").inner_text()).startswith("我的")
    await tab.shot("04-inbox-zh")

    zh_context = await browser.new_context(locale="zh-CN")
    zh_page = await zh_context.new_page()
    await zh_page.goto(tab.base + "/login")
    assert await zh_page.get_by_test_id("login-submit").inner_text() == "登录"
    await zh_context.close()


async def test_agent_without_admin_role_cannot_open_admin_pages(tab, ctx, admin, live_server):
    await make_agent(ctx, "mei", "agent")
    await tab.login("mei", "password-123")
    assert await tab.page.locator('nav a[data-nav="admin"]').count() == 0
    await tab.goto("/admin/inboxes")
    forbidden = tab.page.get_by_test_id("forbidden")
    await forbidden.wait_for()
    assert "admin role" in await forbidden.inner_text()
    assert await tab.page.get_by_test_id("inbox-form").count() == 0
    refused = await tab.page.request.get(tab.base + "/api/v1/channel_types")
    assert refused.status == 403
    await tab.shot("05-admin-forbidden")


async def test_admin_creates_inbox_and_sees_webhook_url(tab, ctx, admin, live_server):
    await tab.login("root", "correct-horse-1")
    await tab.goto("/admin/inboxes")
    page = tab.page
    await page.get_by_test_id("channel-type").select_option("api")
    await page.locator('[data-testid="inbox-form"] input[name="name"]').fill("Shop API")
    await page.locator('[data-testid="inbox-form"] button[type="submit"]').click()
    created = page.get_by_test_id("inbox-created")
    await created.get_by_text("/webhooks/api/").wait_for()
    assert "Shop API" in await created.inner_text()
    await tab.shot("06-admin-inboxes")


async def test_expired_session_goes_to_login_and_keeps_the_draft(tab, ctx, admin, live_server):
    inbox = await make_inbox(ctx)
    result = await _post(live_server, inbox.id, api_message("m-1", sender="cust-3", text="hello"))
    cid = result["results"][0]["conversation_id"]
    await tab.login("root", "correct-horse-1")
    await tab.goto(f"/conversations/{cid}")
    page = tab.page
    await page.get_by_test_id("composer-input").fill("半句话还没写完")
    async with ctx.db.transaction() as s:
        await s.execute(delete(AgentSession))
    await page.get_by_test_id("send").click()
    await page.get_by_test_id("session-expired").wait_for()
    await page.get_by_test_id("login-name").fill("root")
    await page.get_by_test_id("login-password").fill("correct-horse-1")
    await page.get_by_test_id("login-submit").click()
    await page.wait_for_url(f"**/conversations/{cid}")
    assert await page.get_by_test_id("composer-input").input_value() == "半句话还没写完"


async def test_lost_socket_shows_reconnecting_and_catches_up(tab, ctx, admin, live_server):
    inbox = await make_inbox(ctx)
    result = await _post(live_server, inbox.id, api_message("m-1", sender="cust-4", text="first"))
    cid = result["results"][0]["conversation_id"]
    await tab.login("root", "correct-horse-1")
    await tab.goto(f"/conversations/{cid}")
    page = tab.page
    await page.locator('[data-testid="live-status"].live').wait_for()
    # Note every state the indicator shows: under load it may already be live again when we look.
    await page.evaluate("""() => {
        const el = document.querySelector('[data-testid="live-status"]');
        window.__liveStates = [];
        new MutationObserver(records => records.forEach(r => window.__liveStates.push(r.oldValue || '', el.className)))
            .observe(el, {attributes: true, attributeOldValue: true});
    }""")
    hub = hub_for(ctx)
    for _ in range(100):  # the page may see its socket open before the server has registered it
        if hub.clients:
            break
        await asyncio.sleep(0.05)
    assert hub.clients, "the page's socket never reached the hub"
    for client in list(hub.clients):  # the network drops
        hub.remove(client)
        await client.ws.close()
    await page.wait_for_function("() => window.__liveStates.some(c => c.includes('reconnecting'))", timeout=5000)
    await _post(live_server, inbox.id, api_message("m-2", sender="cust-4", text="sent while you were away"))
    await page.get_by_test_id("msg-text").filter(has_text="sent while you were away").wait_for(timeout=5000)
    await page.locator('[data-testid="live-status"].live').wait_for()
    await asyncio.sleep(0)
