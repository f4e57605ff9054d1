"""The desk reports page draws its charts in a real browser, from conversations that really happened."""

from __future__ import annotations

from typing import Any

from scrm.db.models import UnansweredQuestion
from tests.conftest import api_message, make_inbox, post_signed


async def test_reports_page_draws_charts_and_tables(tab: Any, ctx: Any, admin: dict[str, Any], live_server: Any,
                                                    aiohttp_client: Any) -> None:
    inbox = await make_inbox(ctx)
    async with ctx.db.transaction() as s:
        s.add_all([UnansweredQuestion(text="<b>花呗</b>分期可以吗"), UnansweredQuestion(text="能用花呗分期吗")])
    client = await aiohttp_client(live_server)
    for i in range(3):
        assert (await post_signed(client, inbox.id, api_message(f"r-{i}", sender=f"c{i}", text="你好"))).status == 200
    await tab.login("root", "correct-horse-1")
    await tab.goto("/desk/reports")
    page = tab.page
    await page.locator("body[data-ready='1']").wait_for()
    assert await page.locator("#line svg").count() == 1 and await page.locator("#bars svg").count() == 1
    assert "3" in await page.locator("#cards").inner_text()  # three new conversations today
    unanswered = page.locator("#unanswered")
    assert "<b>花呗</b>分期可以吗" in await unanswered.inner_text() or "能用花呗分期吗" in await unanswered.inner_text()
    assert await page.locator("#unanswered b").count() == 0  # customer text stays text
    await tab.shot("07-reports")
    assert tab.errors == [] and tab.dialogs == []
