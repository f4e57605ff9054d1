"""Shared pieces of the WeCom end-to-end tests: the fake served, inboxes, posting callbacks."""

from __future__ import annotations

from typing import Any

from scrm.context import AppContext
from scrm.db.models import Inbox
from scrm.services.wecom.kf_sync import wait_pulls
from tests.channels.wecom.fake_wecom_api import FakeWeCom
from tests.channels.wecom.wecom_samples import (
    AES_KEY,
    CONTACTS_SECRET,
    CORP_ID,
    OPEN_KFID,
    SECRET,
    TOKEN,
    envelope,
    kf_event_xml,
)
from tests.conftest import make_inbox


async def kf_inbox(ctx: AppContext, fake: FakeWeCom, *, open_kfid: str = OPEN_KFID, name: str = "微信客服",
                   **settings: Any) -> Inbox:
    return await make_inbox(
        ctx, "wecom_kf", name=name,
        settings={"corp_id": CORP_ID, "open_kfid": open_kfid, "api_base_url": fake.base_url,  # type: ignore[attr-defined]
                  **settings},
        secrets={"secret": SECRET, "token": TOKEN, "encoding_aes_key": AES_KEY})


async def contacts_inbox(ctx: AppContext, fake: FakeWeCom, **settings: Any) -> Inbox:
    return await make_inbox(
        ctx, "wecom_contacts", name="客户联系",
        settings={"corp_id": CORP_ID, "api_base_url": fake.base_url, **settings},  # type: ignore[attr-defined]
        secrets={"secret": CONTACTS_SECRET, "token": TOKEN, "encoding_aes_key": AES_KEY})


async def post_xml(client: Any, inbox_id: int, xml: str, *, segment: str = "wecom", **kw: Any) -> Any:
    query, body = envelope(xml, **kw)
    return await client.post(f"/webhooks/{segment}/{inbox_id}", params=query, data=body,
                             headers={"Content-Type": "text/xml"})


async def notify(client: Any, ctx: AppContext, fake: FakeWeCom, inbox_id: int, *, open_kfid: str = OPEN_KFID,
                 wait: bool = True) -> Any:
    """WeCom's kf_msg_or_event callback with a fresh sync token; waits for the pull it starts."""
    resp = await post_xml(client, inbox_id, kf_event_xml(fake.new_callback_token(), open_kfid))
    if wait:
        await wait_pulls(ctx)
        await ctx.bus.drain(5)
    return resp
