"""Helpers for the WeChat OA 群发 / 订阅通知 tests: an OA inbox on the fake API, followers, callbacks."""

from __future__ import annotations

import time
from typing import Any

from scrm.context import AppContext
from scrm.db.models import Inbox
from scrm.services.marketing import broadcasts
from scrm.services.uow import unit_of_work
from tests.channels.wechat.fake_wechat_api import APP_ID, APP_SECRET, FakeWeChat
from tests.channels.wechat.wechat_callbacks import AES_KEY, TOKEN, encrypted_request
from tests.conftest import make_inbox
from tests.marketing.helpers_marketing import make_contact


async def oa_inbox(ctx: AppContext, fake: FakeWeChat, **settings: Any) -> Inbox:
    return await make_inbox(
        ctx, "wechat_oa", name="公众号",
        settings={"app_id": APP_ID, "api_base_url": fake.base_url, "passive_reply_timeout": 0,  # type: ignore[attr-defined]
                  **settings},
        secrets={"app_secret": APP_SECRET, "token": TOKEN, "encoding_aes_key": AES_KEY})


async def followers(ctx: AppContext, inbox: Inbox, n: int, *, prefix: str = "oF", tag: str = "fans",
                    **fields: Any) -> list[int]:
    return [await make_contact(ctx, name=f"粉丝{i}", tags=(tag,), identities=[(inbox, f"{prefix}{i:05d}", dict(fields))])
            for i in range(n)]


async def draft(ctx: AppContext, inbox: Inbox, mode: str = "mass", options: dict[str, Any] | None = None,
                template: str = "新品上市，欢迎选购", tag: str = "fans") -> int:
    async with unit_of_work(ctx) as tx:
        b = await broadcasts.save(tx, None, {
            "name": f"{mode} broadcast", "rules": {"op": "and", "rules": [{"field": "tag", "operator": "has",
                                                                            "value": tag}]},
            "inbox_ids": [inbox.id], "template": template, "delivery_mode": mode,
            "delivery_options": options if options is not None else {"target": "list"}})
        return b.id


async def post_callback(client: Any, inbox_id: int, xml: str) -> Any:
    req = encrypted_request(xml, app_id=APP_ID)
    return await client.post(f"/webhooks/wechat/{inbox_id}", params=dict(req.query), data=req.body,
                             headers={"Content-Type": "text/xml"})


def job_finish_xml(msg_id: str, *, total: int, filtered: int, sent: int, errors: int,
                   status: str = "send success") -> str:
    """A MASSSENDJOBFINISH callback shaped like the shared fixture (mass_send_job_finish_event.xml)."""
    return ("<xml><ToUserName><![CDATA[gh_4d00ed8d6399]]></ToUserName>"
            "<FromUserName><![CDATA[oV5CrjpxgaGXNHIQigzNlgLTnwic]]></FromUserName>"
            f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
            f"<Event><![CDATA[MASSSENDJOBFINISH]]></Event><MsgID>{msg_id}</MsgID>"
            f"<Status><![CDATA[{status}]]></Status><TotalCount>{total}</TotalCount>"
            f"<FilterCount>{filtered}</FilterCount><SentCount>{sent}</SentCount><ErrorCount>{errors}</ErrorCount>"
            "</xml>")
