"""Web chat in Chromium: mobile and H5, Chinese, offline form, identity, a foreign site, polling, XSS, size budgets."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from channels.web.tokens import identifier_hash
from scrm.db.models import Contact, ContactIdentity, Conversation
from tests.conftest import login
from tests.web.conftest import Tab
from tests.web.test_webchat_widget import _frame, _shot, _site, _visitor
from tests.web.webchat_helpers import ALL_DAY, NEVER, allow, make_web_inbox, set_hours

pytestmark = pytest.mark.browser
WIDGET = Path(__file__).resolve().parents[2] / "scrm" / "web" / "static" / "widget"
JS = Path(__file__).resolve().parents[2] / "scrm" / "web" / "static" / "js"


def _gz(*paths: Path) -> int:
    return sum(len(gzip.compress(p.read_bytes(), 9)) for p in paths)


def test_widget_stays_within_its_size_budget():
    assert _gz(WIDGET / "loader.js") < 30 * 1024
    chat = [WIDGET / "chat.js", WIDGET / "chat_net.js", WIDGET / "chat_view.js", WIDGET / "chat_i18n.js", WIDGET / "chat.css",
            JS / "dom.js"]
    assert _gz(*chat) < 80 * 1024


async def test_mobile_visitor_in_chinese_and_the_h5_page(browser, ctx, admin, live_server, aiohttp_server, client):
    await set_hours(ctx, ALL_DAY)
    await login(client, "root", "correct-horse-1")  # an agent online
    inbox = await make_web_inbox(ctx, [])
    _, site = await _site(aiohttp_server, live_server, inbox.id, lang="zh-CN")
    await allow(ctx, inbox.id, site)
    context = await _visitor(browser, locale="zh-CN", mobile=True)
    page = await context.new_page()
    await page.goto(site + "/")
    launcher = page.get_by_test_id("scrm-launcher")
    await launcher.wait_for()
    assert await launcher.get_attribute("aria-label") == "打开在线客服"
    await _shot(page, "webchat-10-closed-zh-mobile")
    await launcher.click()
    chat = _frame(page)
    await chat.get_by_test_id("chat-input").wait_for()
    box = await page.get_by_test_id("scrm-panel").bounding_box()
    assert box["width"] == 390 and box["height"] >= 800  # full screen on a phone
    assert await chat.get_by_test_id("chat-title").inner_text() == "在线客服"
    await chat.get_by_test_id("chat-input").fill("下单后多久发货？")
    await chat.get_by_test_id("chat-send").click()
    await chat.get_by_test_id("chat-choice").first.wait_for()
    await _shot(page, "webchat-11-open-zh-mobile")
    await chat.get_by_test_id("chat-close").click()
    await launcher.wait_for(state="visible")  # the panel closes with a transition: wait, do not sample once

    # The H5 page: same chat, first-party, history kept in an HttpOnly cookie; source attribution.
    base = str(live_server.make_url("")).rstrip("/")
    h5 = await context.new_page()
    await h5.goto(f"{base}/chat/{inbox.id}?source=poster-qr")
    await h5.get_by_test_id("chat-input").fill("我想退货")
    await h5.get_by_test_id("chat-input").press("Enter")
    await h5.locator("[data-testid=chat-msg][data-from=bot]").last.wait_for()
    cookies = {c["name"]: c for c in await context.cookies()}
    assert cookies[f"scrm_visitor_{inbox.id}"]["httpOnly"]
    await h5.reload()
    await h5.locator("[data-testid=chat-msg][data-from=visitor]").filter(has_text="我想退货").wait_for()
    await _shot(h5, "webchat-12-h5-zh-mobile")
    async with ctx.db.session() as s:
        sources = set((await s.scalars(select(ContactIdentity.source).where(ContactIdentity.inbox_id == inbox.id))).all())
    assert "poster-qr" in sources
    await context.close()


async def test_offline_visitor_leaves_an_email(browser, ctx, live_server, aiohttp_server):
    await set_hours(ctx, NEVER)
    inbox = await make_web_inbox(ctx, [], hours_banner={"zh": "工作时间：周一 09:00-09:01", "en": "Open Mondays 09:00-09:01"})
    for lang, locale in (("en", "en-US"), ("zh", "zh-CN")):
        _, site = await _site(aiohttp_server, live_server, inbox.id, lang=lang)
        await allow(ctx, inbox.id, site)
        context = await _visitor(browser, locale=locale)
        page = await context.new_page()
        await page.goto(site + "/")
        await page.get_by_test_id("scrm-launcher").click()
        chat = _frame(page)
        await chat.get_by_test_id("offline").wait_for()
        assert await chat.get_by_test_id("chat-banner").is_visible()
        line = await chat.get_by_test_id("chat-status-line").inner_text()
        assert ("回来" in line) if lang == "zh" else ("back" in line)
        await _shot(page, f"webchat-20-offline-{lang}")
        await chat.get_by_test_id("field-email").fill(f"{lang}@example.com")
        await chat.get_by_test_id("field-message").fill("Please call me back")
        await chat.get_by_test_id("offline-submit").click()
        await chat.locator("[data-testid=chat-msg][data-from=visitor]").filter(has_text="Please call me back").wait_for()
        await chat.get_by_test_id("chat-input").wait_for()
        await context.close()
    async with ctx.db.session() as s:
        emails = set((await s.scalars(select(Contact.email).join(ContactIdentity).where(
            ContactIdentity.inbox_id == inbox.id))).all())
    assert emails == {"en@example.com", "zh@example.com"}


async def test_identity_verification_in_the_widget(browser, ctx, admin, client, live_server, aiohttp_server):
    await set_hours(ctx, ALL_DAY)
    await login(client, "root", "correct-horse-1")
    inbox = await make_web_inbox(ctx, [], require_identity=True)
    good = identifier_hash(inbox.secrets["hmac_secret"], "member-7")
    for label, digest in (("accepted", good), ("refused", "0" * 64)):
        js = f"window.scrmSettings = {{identifier: 'member-7', identifier_hash: '{digest}', name: '会员七号'}};"
        _, site = await _site(aiohttp_server, live_server, inbox.id, settings_js=js)
        await allow(ctx, inbox.id, site)
        context = await _visitor(browser)
        page = await context.new_page()
        await page.goto(site + "/")
        await page.get_by_test_id("scrm-launcher").click()
        chat = _frame(page)
        if label == "accepted":
            await chat.get_by_test_id("chat-input").fill("hello as a member")
            await chat.get_by_test_id("chat-input").press("Enter")
            await chat.locator("[data-testid=chat-msg][data-from=visitor][data-id]:not([data-id=''])").first.wait_for()
        else:
            await chat.get_by_test_id("chat-identity-failed").wait_for()
            assert await chat.get_by_test_id("chat-input").count() == 0
        await context.close()
    async with ctx.db.session() as s:
        contact = await s.scalar(select(Contact).join(ContactIdentity).where(ContactIdentity.external_id == "u:member-7"))
    assert contact is not None and contact.name == "会员七号"


async def test_a_site_that_is_not_allowed_shows_no_widget(browser, ctx, live_server, aiohttp_server):
    inbox = await make_web_inbox(ctx, ["https://shop.example.com"])
    _, site = await _site(aiohttp_server, live_server, inbox.id)
    context = await _visitor(browser)
    page = await context.new_page()
    warnings: list[str] = []
    page.on("console", lambda m: warnings.append(m.text))
    await page.goto(site + "/")
    for _ in range(50):
        if any("not allowed" in w for w in warnings):
            break
        await page.wait_for_timeout(100)
    assert any("not allowed" in w for w in warnings)
    assert await page.get_by_test_id("scrm-launcher").count() == 0
    # Framing the chat page directly is refused by its CSP (frame-ancestors).
    base = str(live_server.make_url("")).rstrip("/")
    await page.set_content(f"<iframe id=f src='{base}/chat/{inbox.id}/widget'></iframe>")
    await page.wait_for_timeout(800)
    frame = page.frame_locator("#f")
    assert await frame.get_by_test_id("chat-title").count() == 0
    await context.close()


async def test_long_polling_delivers_when_websockets_are_blocked(browser, tab: Tab, ctx, admin, live_server, aiohttp_server):
    await set_hours(ctx, ALL_DAY)
    inbox = await make_web_inbox(ctx, [])
    _, site = await _site(aiohttp_server, live_server, inbox.id)
    await allow(ctx, inbox.id, site)
    await tab.login("root", "correct-horse-1")
    context = await _visitor(browser)

    async def refuse(ws: Any) -> None:  # a proxy that kills every WebSocket
        await ws.close()

    await context.route_web_socket("**/ws", refuse)
    page = await context.new_page()
    await page.goto(site + "/")
    await page.get_by_test_id("scrm-launcher").click()
    chat = _frame(page)
    await chat.get_by_test_id("chat-input").fill("human")
    await chat.get_by_test_id("chat-input").press("Enter")
    await chat.locator("[data-testid=chat-msg][data-from=bot]").first.wait_for(timeout=10000)
    async with ctx.db.session() as s:
        conv = await s.scalar(select(Conversation).where(Conversation.inbox_id == inbox.id))
    await tab.goto(f"/conversations/{conv.id}")
    await tab.page.get_by_test_id("composer-input").fill("Reply over long polling")
    await tab.page.get_by_test_id("composer-input").press("Enter")
    await chat.locator("[data-testid=chat-msg][data-from=agent]").filter(has_text="long polling").wait_for(timeout=10000)
    await context.close()


async def test_visitor_markup_never_runs_in_the_widget_or_the_desk(browser, tab: Tab, ctx, admin, live_server, aiohttp_server):
    await set_hours(ctx, ALL_DAY)
    inbox = await make_web_inbox(ctx, [], prechat_enabled=True)
    _, site = await _site(aiohttp_server, live_server, inbox.id)
    await allow(ctx, inbox.id, site)
    evil = "<img src=x onerror=alert(1)><script>alert(2)</script>"
    context = await _visitor(browser)
    page = await context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    await page.goto(site + "/")
    await page.get_by_test_id("scrm-launcher").click()
    chat = _frame(page)
    await chat.get_by_test_id("field-name").fill("<b onmouseover=alert(3)>Eve</b>")
    await chat.get_by_test_id("field-email").fill("eve@example.com")
    await chat.get_by_test_id("prechat-submit").click()
    await chat.get_by_test_id("chat-input").fill(evil)
    await chat.get_by_test_id("chat-input").press("Enter")
    text = chat.locator("[data-testid=chat-msg][data-from=visitor] [data-testid=chat-text]").first
    await text.wait_for()
    assert await text.inner_text() == evil
    assert await chat.locator(".log img, .log script, .log b").count() == 0
    await tab.login("root", "correct-horse-1")
    await tab.page.get_by_test_id("conv-row").first.click()
    shown = tab.page.get_by_test_id("msg-text").filter(has_text="onerror")
    await shown.wait_for()
    assert await shown.inner_text() == evil
    await tab.page.wait_for_timeout(300)
    assert dialogs == [] and tab.dialogs == [] and tab.errors == []
    await context.close()


async def test_demo_site_shows_the_widget(browser, ctx, live_server):
    await make_web_inbox(ctx, [])
    context = await _visitor(browser)
    page = await context.new_page()
    await page.goto(str(live_server.make_url("/demo/site?lang=en")))
    await page.get_by_test_id("scrm-launcher").click()
    await _frame(page).get_by_test_id("chat-greeting").wait_for()
    await _shot(page, "webchat-30-demo-site")
    await context.close()


async def test_admin_sets_up_a_web_inbox_and_gets_the_embed_code(tab: Tab, ctx, admin, live_server):
    await tab.login("root", "correct-horse-1")
    await tab.goto("/admin/inboxes")
    page = tab.page
    await page.get_by_test_id("channel-type").select_option("web")
    await page.get_by_test_id("inbox-form").locator("input[name=name]").fill("官网客服")
    await page.get_by_test_id("inbox-form").locator("button[type=submit]").click()
    await page.get_by_test_id("inbox-created").wait_for()
    await page.get_by_test_id("webchat-open").click()
    await page.get_by_test_id("webchat-panel").wait_for()
    script = await page.get_by_test_id("webchat-script").inner_text()
    assert "/static/widget/loader.js" in script and "data-inbox=" in script
    assert await page.get_by_test_id("webchat-qr").evaluate("img => img.complete && img.naturalWidth > 0")
    await page.get_by_test_id("wc-origins").fill("https://shop.example.com\nhttps://*.example.cn")
    await page.get_by_test_id("wc-title-zh").fill("官网在线客服")
    await page.get_by_test_id("wc-prechat_enabled").check()
    await page.get_by_test_id("wc-field-phone").select_option("required")
    await page.get_by_test_id("wc-custom").fill("order_no | 订单号 | required")
    await page.get_by_test_id("webchat-save").click()
    await page.get_by_text("Saved").wait_for()
    await tab.shot("webchat-40-admin")
    async with ctx.db.session() as s:
        from scrm.db.models import Inbox

        inbox = await s.scalar(select(Inbox).where(Inbox.channel_type == "web"))
    st = inbox.settings
    assert st["allowed_origins"] == ["https://shop.example.com", "https://*.example.cn"]
    assert st["title"]["zh"] == "官网在线客服" and st["prechat_enabled"] is True
    fields = {f["name"]: f for f in st["prechat_fields"]}
    assert fields["phone"]["required"] and fields["order_no"]["required"] and fields["email"]["required"]
    assert inbox.secrets["hmac_secret"] and inbox.secrets["token_key"]
    assert tab.errors == []


async def test_visitor_sends_a_picture_and_sees_it(browser, ctx, admin, client, live_server, aiohttp_server, tmp_path):
    await set_hours(ctx, ALL_DAY)
    await login(client, "root", "correct-horse-1")
    inbox = await make_web_inbox(ctx, [])
    _, site = await _site(aiohttp_server, live_server, inbox.id)
    await allow(ctx, inbox.id, site)
    picture = tmp_path / "receipt.png"
    import base64

    picture.write_bytes(base64.b64decode(  # a 1x1 PNG
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="))
    context = await _visitor(browser)
    page = await context.new_page()
    await page.goto(site + "/")
    await page.get_by_test_id("scrm-launcher").click()
    chat = _frame(page)
    await chat.get_by_test_id("chat-input").wait_for()
    await chat.get_by_test_id("chat-file-input").set_input_files(str(picture))
    image = chat.get_by_test_id("chat-image")
    try:
        await image.wait_for()
    except Exception:
        raise AssertionError(await chat.get_by_test_id("chat-notice").inner_text()) from None
    assert await image.evaluate("img => img.complete && img.naturalWidth === 1")
    await context.close()
