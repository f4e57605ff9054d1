"""The contact panel beside a conversation: an agent sets a defined attribute (typed by the server) and an
undefined one is refused with a message, never stored."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from scrm.db.models import Contact
from scrm.db.models_marketing import AttributeDefinition
from tests.conftest import api_message, make_inbox, post_signed

pytestmark = pytest.mark.browser


async def _panel_of_a_customer(tab: Any, ctx: Any, http: aiohttp.ClientSession) -> tuple[Any, Any]:
    """The agent's page on 周八's conversation (an API-channel customer), with `orders` a defined attribute."""
    inbox = await make_inbox(ctx)
    async with ctx.db.transaction() as s:
        s.add(AttributeDefinition(key="orders", label="订单数", type="number", choices=[]))
    r = await post_signed(http, inbox.id, api_message("m-1", sender="c-1", text="我的积分呢", name="周八"))
    result = (await r.json())["results"][0]
    await tab.login("root", "correct-horse-1")
    await tab.goto(f"/conversations/{result['conversation_id']}")
    panel = tab.page.get_by_test_id("contact-panel")
    await panel.get_by_test_id("contact-name").filter(has_text="周八").wait_for()
    return inbox, panel


async def test_agent_sets_a_defined_attribute_and_an_undefined_one_is_refused(tab, ctx, admin, live_server):
    async with aiohttp.ClientSession(base_url=str(live_server.make_url("/"))) as http:
        _, panel = await _panel_of_a_customer(tab, ctx, http)
    page = tab.page
    assert await panel.locator("datalist#attr-keys option").evaluate_all("els => els.map(e => e.value)") == ["orders"]

    await panel.get_by_test_id("attr-key").fill("orders")
    await panel.get_by_test_id("attr-value").fill("12")
    await panel.get_by_test_id("attr-add").click()
    await panel.locator("table.attrs th", has_text="orders").wait_for()

    await panel.get_by_test_id("attr-key").fill("vip")
    await panel.get_by_test_id("attr-value").fill("yes")
    await panel.get_by_test_id("attr-add").click()
    # The server's reason, shown to the agent (the toast stays 6 s; a loaded CI machine has taken over 5 s to answer).
    await page.get_by_test_id("toast").filter(has_text="no such attribute").wait_for(timeout=15_000)

    async with ctx.db.session() as s:
        contact = (await s.scalars(select(Contact).where(Contact.name == "周八"))).one()
    assert contact.attributes.get("orders") == 12 and "vip" not in contact.attributes
    assert tab.errors == []



async def test_a_realtime_update_keeps_what_the_agent_is_typing_in_the_panel(tab, ctx, admin, live_server):
    # The panel re-renders when the contact changes (the customer's own profile update, another agent's edit):
    # a half-typed attribute must survive it, or the agent's click adds nothing.
    async with aiohttp.ClientSession(base_url=str(live_server.make_url("/"))) as http:
        inbox, panel = await _panel_of_a_customer(tab, ctx, http)
        page = tab.page
        await panel.get_by_test_id("attr-key").fill("orders")
        await panel.get_by_test_id("attr-value").fill("7")
        await post_signed(http, inbox.id, api_message("m-2", sender="c-1", text="还在吗", name="周九"))
        await panel.get_by_test_id("contact-name").filter(has_text="周九").wait_for(timeout=15_000)  # re-rendered
    assert await panel.get_by_test_id("attr-key").input_value() == "orders"
    assert await panel.get_by_test_id("attr-value").input_value() == "7"
    assert await page.evaluate("document.activeElement && document.activeElement.dataset.testid") == "attr-value"
    await panel.get_by_test_id("attr-add").click()
    await panel.locator("table.attrs th", has_text="orders").wait_for(timeout=15_000)
    async with ctx.db.session() as s:
        contact = (await s.scalars(select(Contact).where(Contact.name == "周九"))).one()
    assert contact.attributes["orders"] == 7
