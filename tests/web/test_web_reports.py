"""The reports page (inside the app) draws its charts in a real browser, from conversations that really happened."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from scrm.db.models import Conversation, FaqEntryRow, UnansweredQuestion
from scrm.db.models_desk import FaqOutcome
from tests.conftest import api_message, make_inbox, post_signed

NARROW = 375  # an iPhone SE / mini in portrait


async def _no_horizontal_overflow(page: Any) -> None:
    """Nothing sticks out to the right: the page does not scroll sideways and every card is on screen."""
    width = await page.evaluate("document.documentElement.clientWidth")
    wide = await page.evaluate("""() => [...document.querySelectorAll('body *')].filter((e) => e.getBoundingClientRect().right > 380)
        .slice(0, 8).map((e) => e.tagName + '.' + e.className + ':' + Math.round(e.getBoundingClientRect().right))""")
    assert await page.evaluate("document.documentElement.scrollWidth") <= width, wide
    rights = await page.locator('[data-testid="rp-cards"] .card').evaluate_all(
        "cards => cards.map(c => c.getBoundingClientRect().right)")
    assert rights and max(rights) <= width, (rights, width)


async def test_reports_page_draws_charts_and_tables(tab: Any, ctx: Any, admin: dict[str, Any], live_server: Any,
                                                    aiohttp_client: Any) -> None:
    inbox = await make_inbox(ctx)
    async with ctx.db.transaction() as s:
        s.add_all([UnansweredQuestion(text="<b>花呗</b>分期可以吗"), UnansweredQuestion(text="能用花呗分期吗")])
    client = await aiohttp_client(live_server)
    for i in range(3):
        assert (await post_signed(client, inbox.id, api_message(f"r-{i}", sender=f"c{i}", text="你好"))).status == 200
    async with ctx.db.transaction() as s:
        cid = (await s.scalars(select(Conversation.id))).first()
        s.add(FaqEntryRow(key="ship", question="<i>运费</i>怎么算？", answer="满99包邮", paraphrases=[], buttons=[]))
        s.add_all([FaqOutcome(conversation_id=cid, inbox_id=inbox.id, outcome=o, entry_key=k, confidence=0.9)
                   for o, k in (("answer", "ship"), ("answer", "ship"), ("clarify", None), ("reject", None))])
    await tab.login("root", "correct-horse-1")
    await tab.goto("/desk/reports")  # the old address leads into the app
    page = tab.page
    await page.wait_for_url("**/reports")
    report = page.locator('[data-testid="report"][data-ready="1"]')
    await report.wait_for()
    assert await page.locator(".chart svg").count() == 3
    cards = page.get_by_test_id("rp-cards")
    assert "3" in await page.get_by_test_id("rp-opened").inner_text()  # three new conversations today
    unanswered = page.get_by_test_id("rp-unanswered")
    assert "<b>花呗</b>分期可以吗" in await unanswered.inner_text() or "能用花呗分期吗" in await unanswered.inner_text()
    assert await unanswered.locator("b").count() == 0  # customer text stays text
    assert "50.0%" in await cards.inner_text() and "2 / 4" in await cards.inner_text()  # FAQ: 2 of 4 answered
    faq_top = await page.get_by_test_id("rp-faq-top").inner_text()
    assert "<i>运费</i>怎么算？" in faq_top and "\t2\t" in faq_top.replace("\n", "\t") + "\t"
    assert await page.get_by_test_id("rp-faq-top").locator("i").count() == 0
    assert await page.get_by_test_id("rp-agents").count() == 1 and await page.get_by_test_id("rp-teams").count() == 1
    assert (await page.get_by_test_id("rp-csv").get_attribute("href")).startswith("/api/v1/desk/reports.csv?")
    await tab.shot("07-reports")
    # A phone in portrait: the card row wraps instead of running off the right edge.
    await page.set_viewport_size({"width": NARROW, "height": 800})
    await page.get_by_test_id("rp-refresh").click()
    await report.wait_for()
    await _no_horizontal_overflow(page)
    await tab.shot("07-reports-narrow")
    assert tab.errors == [] and tab.dialogs == []
