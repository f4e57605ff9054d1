"""Typing "@" in a private note offers colleagues; the picked name is the one the server matches, so the
colleague gets the mention notification. Replies never open the menu (customers cannot be @mentioned)."""

from __future__ import annotations

import aiohttp
import pytest
from sqlalchemy import select

from scrm.db.models_desk_ui import Notification
from tests.conftest import api_message, make_agent, make_inbox, post_signed

pytestmark = pytest.mark.browser


async def test_at_in_a_note_offers_colleagues_and_the_pick_notifies_them(tab, ctx, admin, live_server):
    inbox = await make_inbox(ctx)
    wang = await make_agent(ctx, "wang", "agent")
    await make_agent(ctx, "li", "agent")
    async with aiohttp.ClientSession(base_url=str(live_server.make_url("/"))) as http:
        r = await post_signed(http, inbox.id, api_message("m-1", sender="cust-3", text="发票抬头写错了", name="赵六"))
        cid = (await r.json())["results"][0]["conversation_id"]
    await tab.login("root", "correct-horse-1")
    await tab.goto(f"/conversations/{cid}")
    page = tab.page
    await page.get_by_test_id("msg-text").filter(has_text="发票抬头写错了").wait_for()
    box = page.get_by_test_id("composer-input")

    await box.fill("@wa")  # reply mode: no colleague menu
    await page.wait_for_timeout(200)
    assert await page.get_by_test_id("mention-option").count() == 0
    await box.fill("")

    await page.get_by_test_id("mode-note").click()
    await box.type("请 @wa")
    options = page.get_by_test_id("mention-option")
    await options.first.wait_for()
    assert [t.strip() for t in await options.all_inner_texts()] == ["@Wang wang"]  # li and root (me) filtered out
    await box.press("Enter")  # picks, does not send
    assert await box.input_value() == "请 @Wang "
    await box.type("帮忙核实一下")
    await page.get_by_test_id("send").click()
    await page.locator('[data-testid="msg"].note').filter(has_text="请 @Wang 帮忙核实一下").wait_for()

    async with ctx.db.session() as s:
        kinds = (await s.execute(select(Notification.agent_id, Notification.kind))).all()
    assert (wang, "mention") in kinds and all(agent == wang for agent, kind in kinds if kind == "mention")
    assert tab.errors == []
