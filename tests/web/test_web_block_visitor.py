"""An agent blocks a web chat visitor from the conversation (not only through the API): the button asks first,
the visitor's next message is refused, and unblocking lets them write again. Other channels show no button."""

from __future__ import annotations

import aiohttp
import pytest

from scrm.services.desk import settings as desk_settings
from tests.channels.web.conftest import Visitor, make_web_inbox
from tests.conftest import api_message, make_inbox, post_signed

pytestmark = pytest.mark.browser


async def test_agent_blocks_and_unblocks_a_web_chat_visitor(tab, ctx, admin, live_server):
    desk_settings.clear_cache()
    inbox = await make_web_inbox(ctx)
    async with aiohttp.ClientSession(base_url=str(live_server.make_url("/"))) as http:
        visitor = Visitor(http, inbox)
        await visitor.session()
        cid = (await visitor.send("买一送十 http://spam.example", status=201))["conversation_id"]

        await tab.login("root", "correct-horse-1")
        await tab.goto(f"/conversations/{cid}")
        page = tab.page
        await page.get_by_test_id("msg-text").filter(has_text="买一送十").wait_for()
        dialogs: list[str] = []

        async def answer(dialog) -> None:  # type: ignore[no-untyped-def]
            dialogs.append(dialog.message)
            await (dialog.dismiss() if len(dialogs) == 1 else dialog.accept())

        page.remove_listener("dialog", tab._dialog)  # the tab dismisses every dialog; this test answers them
        page.on("dialog", answer)
        await page.get_by_test_id("block-visitor").click()  # dismissed: nothing happens
        await visitor.send("still here", status=201)
        await page.get_by_test_id("block-visitor").click()
        await page.get_by_test_id("unblock-visitor").wait_for()
        assert len(dialogs) == 2
        assert (await visitor.send("again", status=403))["error"]["code"] == "blocked"

        await page.get_by_test_id("unblock-visitor").click()
        await page.get_by_test_id("block-visitor").wait_for()
        await visitor.send("sorry", status=201)

        other = await make_inbox(ctx)
        r = await post_signed(http, other.id, api_message("m-1", sender="c-1", text="订单查询 A-17"))
        other_cid = (await r.json())["results"][0]["conversation_id"]
    await tab.goto(f"/conversations/{other_cid}")
    await page.get_by_test_id("msg-text").filter(has_text="订单查询 A-17").wait_for()
    assert await page.get_by_test_id("block-visitor").count() == 0
    assert tab.errors == []
    desk_settings.clear_cache()
