"""WeCom 微信客服 end to end: encrypted callback -> pulled -> stored -> bot answers -> kf/send_msg."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from scrm.context import AppContext
from tests.channels.wecom.fake_wecom_api import FakeWeCom, serving
from tests.channels.wecom.wecom_samples import OPEN_KFID, text_item
from tests.integration.helpers_integration import deliver_all, inbound, messages
from tests.integration.wecom_helpers import kf_inbox, notify

CUSTOMER = "wmAJ2GCAAAme1XQRC-NI-q0_ZM9ukoAw"


@pytest.fixture
async def fake() -> AsyncIterator[FakeWeCom]:
    async with serving() as fake:
        fake.customers[CUSTOMER] = {"external_userid": CUSTOMER, "nickname": "张三", "avatar": "http://x/a.png",
                                    "gender": 1, "unionid": "oUnion-zhangsan"}
        yield fake


async def test_callback_pull_store_bot_msgmenu_send(client, ctx: AppContext, fake: FakeWeCom) -> None:
    inbox = await kf_inbox(ctx, fake)
    fake.add(text_item("msg-1", CUSTOMER, "什么时候发货"))
    resp = await notify(client, ctx, fake, inbox.id)
    assert resp.status == 200
    (msg,) = await inbound(ctx, inbox.id)
    assert msg.text == "什么时候发货" and msg.external_id == "msg-1"
    assert fake.sync_requests[0]["open_kfid"] == OPEN_KFID and fake.sync_requests[0]["token"]

    await deliver_all(ctx)
    bot = await messages(ctx, conversation_id=msg.conversation_id, sender_kind="bot")
    answer = next(m for m in bot if m.payload.get("choices"))
    (menu,) = [s for s in fake.sends if s["msgtype"] == "msgmenu"]
    assert menu["touser"] == CUSTOMER and menu["open_kfid"] == OPEN_KFID and len(menu["msgid"]) <= 32
    assert menu["msgmenu"]["head_content"] == answer.text
    assert [i["click"]["content"] for i in menu["msgmenu"]["list"]] == [c["label"] for c in answer.payload["choices"]]
    # Every message went out under its own msgid (our idempotency key), text before the menu.
    assert [s["msgtype"] for s in fake.sends] == ["text", "msgmenu"]
    assert len({s["msgid"] for s in fake.sends}) == 2

    # The customer taps the button: WeCom sends it back as text with menu_id; the bot takes the option.
    option = menu["msgmenu"]["list"][0]["click"]
    fake.add(text_item("msg-2", CUSTOMER, option["content"], menu_id=option["id"]))
    await notify(client, ctx, fake, inbox.id)
    clicked = (await inbound(ctx, inbox.id))[-1]
    assert clicked.content_type == "postback" and clicked.payload["choice"] == option["id"]
    await deliver_all(ctx)
    after = [m for m in await messages(ctx, conversation_id=msg.conversation_id, sender_kind="bot") if m.id > clicked.id]
    assert after and "订单" in (after[0].text or "")
    assert fake.sends[-1]["text"]["content"] == after[-1].text or fake.sends[-1]["msgtype"] == "msgmenu"
