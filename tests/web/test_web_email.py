"""Email in the browser: an untrusted HTML mail is viewed only in a sandboxed frame, and admins see the
mail that had no sender (issue 18)."""

from __future__ import annotations

import pytest

from scrm.services.conversations.ingest import ingest
from tests.conftest import make_inbox

pytestmark = pytest.mark.browser

HOSTILE = (
    b"From: Eve <eve@example.com>\r\nTo: support@example.com\r\nMessage-ID: <hostile@example.com>\r\n"
    b"Subject: Order question\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=B\r\n\r\n"
    b"--B\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\r\n--B\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
    b"<p>Where is my order A42? It was due last Monday and the tracking page shows nothing at all.</p>"
    b"<img src=x onerror=alert(1)><script>alert(2)</script><img src='http://tracker.invalid/p.gif'>"
    b"<a href='javascript:alert(3)'>click</a>\r\n--B--\r\n"
)
NO_SENDER = b"Subject: =?utf-8?B?5rKh5pyJ5Y+R5Lu25Lq6?=\r\nMessage-ID: <ghost@example.com>\r\n\r\nwho?\r\n"


async def _email_inbox(ctx):
    inbox = await make_inbox(ctx, "email", name="Mail", settings={"address": "support@example.com"})

    async def sink(items):
        return await ingest(ctx, inbox, items)

    return ctx.adapters.for_inbox(inbox), sink


async def test_html_mail_is_viewed_in_a_sandboxed_frame_only(tab, ctx, admin, live_server):
    adapter, sink = await _email_inbox(ctx)
    await adapter.ingest_raw(HOSTILE, sink)
    await tab.login("root", "correct-horse-1")
    await tab.page.get_by_test_id("conv-row").first.click()
    text = tab.page.get_by_test_id("msg-text").first
    await text.wait_for()
    assert "Where is my order A42?" in await text.inner_text()  # the stub plain part gave way to the HTML text
    assert await tab.page.get_by_test_id("html-frame").count() == 0
    await tab.page.get_by_test_id("view-html").click()
    frame_el = tab.page.get_by_test_id("html-frame")
    await frame_el.wait_for()
    assert await frame_el.get_attribute("sandbox") == "allow-popups allow-popups-to-escape-sandbox"
    body = tab.page.frame_locator("[data-testid=html-frame]").locator("body")
    assert "Where is my order A42?" in await body.inner_text()
    assert await tab.page.frame_locator("[data-testid=html-frame]").locator("script").count() == 0
    assert await tab.page.locator(".messages img, .messages script").count() == 0  # nothing of it in our page
    await tab.page.wait_for_timeout(300)
    await tab.shot("email_html_sandboxed")
    assert tab.dialogs == [] and tab.errors == []


async def test_admin_sees_unroutable_mail(tab, ctx, admin, live_server):
    adapter, sink = await _email_inbox(ctx)
    await adapter.ingest_raw(NO_SENDER, sink)
    await tab.login("root", "correct-horse-1")
    await tab.goto("/admin/unroutable")
    row = tab.page.get_by_test_id("unroutable-row")
    await row.wait_for()
    assert await tab.page.get_by_test_id("unroutable-subject").inner_text() == "没有发件人"
    href = await tab.page.get_by_test_id("unroutable-raw").get_attribute("href")
    resp = await tab.page.request.get(tab.base + href)
    assert resp.status == 200 and await resp.body() == NO_SENDER
    await tab.shot("admin_unroutable_mail")
