"""Campaign QR codes against the local fake WeChat API: qrcode/create with scene_str, attribution through the
real encrypted `subscribe` (qrscene_…) and `SCAN` callbacks (first and last touch), the welcome text,
segments by campaign and the per-campaign counts."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import func, select

from scrm.context import AppContext
from scrm.db.models import ContactIdentity, Inbox
from scrm.db.models_campaigns import CampaignTouch, ContactAttribution
from tests.channels.wechat.fake_wechat_api import APP_ID, APP_SECRET, FakeWeChat, serving
from tests.channels.wechat.wechat_callbacks import AES_KEY, TOKEN, encrypted_request, text_xml
from tests.conftest import login, make_agent, make_inbox
from tests.integration.helpers_integration import deliver_all


@pytest.fixture
async def fake_wechat() -> AsyncIterator[FakeWeChat]:
    async with serving() as fake:
        yield fake


async def oa_inbox(ctx: AppContext, fake: FakeWeChat) -> Inbox:
    return await make_inbox(
        ctx, "wechat_oa", name="公众号",
        settings={"app_id": APP_ID, "api_base_url": fake.base_url, "passive_reply_timeout": 0},  # type: ignore[attr-defined]
        secrets={"app_secret": APP_SECRET, "token": TOKEN, "encoding_aes_key": AES_KEY})


def event_xml(event: str, sender: str, key: str | None, created: int) -> str:
    ticket = "<Ticket><![CDATA[gQH47joAAAAAAAAAASxodHRwOi8v]]></Ticket>" if key else ""
    event_key = f"<EventKey><![CDATA[{key}]]></EventKey>" if key is not None else ""
    return ("<xml><ToUserName><![CDATA[gh_account]]></ToUserName>"
            f"<FromUserName><![CDATA[{sender}]]></FromUserName><CreateTime>{created}</CreateTime>"
            f"<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[{event}]]></Event>{event_key}{ticket}</xml>")


async def callback(client: Any, inbox_id: int, xml: str) -> None:
    req = encrypted_request(xml, app_id=APP_ID)
    resp = await client.post(f"/webhooks/wechat/{inbox_id}", params=dict(req.query), data=req.body,
                             headers={"Content-Type": "text/xml"})
    assert resp.status == 200, await resp.text()


async def contact_of(ctx: AppContext, inbox_id: int, openid: str) -> int:
    async with ctx.db.session() as s:
        return int(await s.scalar(select(ContactIdentity.contact_id).where(
            ContactIdentity.inbox_id == inbox_id, ContactIdentity.external_id == openid)))


async def test_qr_codes_attribute_subscribe_and_scan_first_and_last_touch(client, ctx, fake_wechat):
    inbox = await oa_inbox(ctx, fake_wechat)
    api_inbox = await make_inbox(ctx)
    await make_agent(ctx, "mkt", "marketer")
    h = await login(client, "mkt", "password-123")
    spring = (await (await client.post("/api/v1/campaigns", json={"name": "春季上新"}, headers=h)).json())["id"]
    poster = (await (await client.post("/api/v1/campaigns", json={"name": "门店海报"}, headers=h)).json())["id"]

    # A temporary code with a welcome text, and a permanent one with a scene we choose.
    resp = await client.post(f"/api/v1/campaigns/{spring}/qr-codes", headers=h, json={
        "inbox_id": inbox.id, "expire_seconds": 3600, "welcome_text": "欢迎关注！春季新品 8 折"})
    assert resp.status == 201, await resp.text()
    temp = await resp.json()
    assert temp["permanent"] is False and temp["url"].startswith("http://weixin.qq.com/q/") and temp["expires_at"]
    sent = fake_wechat.followers.qrcodes[0]["request"]
    assert sent["action_name"] == "QR_STR_SCENE" and sent["expire_seconds"] == 3600
    assert sent["action_info"]["scene"]["scene_str"] == temp["scene"]
    resp = await client.post(f"/api/v1/campaigns/{poster}/qr-codes", headers=h,
                             json={"inbox_id": inbox.id, "permanent": True, "scene": "store-poster"})
    perm = await resp.json()
    assert resp.status == 201 and perm["permanent"] is True and perm["expires_at"] is None
    assert fake_wechat.followers.qrcodes[1]["request"]["action_name"] == "QR_LIMIT_STR_SCENE"
    svg = await client.get(perm["image_url"], headers=h)
    assert svg.status == 200 and svg.content_type == "image/svg+xml" and b"<svg" in await svg.read()

    # Refusals with their reasons: same scene twice, bad scene, a non-WeChat inbox, WeChat's own error.
    for body, status, code in (({"inbox_id": inbox.id, "permanent": True, "scene": "store-poster"}, 409, "scene_taken"),
                               ({"inbox_id": inbox.id, "scene": "有 空格"}, 400, "bad_scene"),
                               ({"inbox_id": api_inbox.id}, 400, "bad_inbox")):
        r = await client.post(f"/api/v1/campaigns/{poster}/qr-codes", headers=h, json=body)
        assert r.status == status and (await r.json())["error"]["code"] == code
    fake_wechat.fail_next("/cgi-bin/qrcode/create", 45009)
    r = await client.post(f"/api/v1/campaigns/{poster}/qr-codes", headers=h, json={"inbox_id": inbox.id})
    assert r.status == 502 and "45009" in (await r.json())["error"]["message"]

    # oUser1 follows through the spring code: attributed, welcomed once even when WeChat retries the callback.
    now = int(time.time()) - 60  # the callbacks happened a minute ago, before oUser1 writes
    subscribe = event_xml("subscribe", "oUser1", f"qrscene_{temp['scene']}", now)
    await callback(client, inbox.id, subscribe)
    await callback(client, inbox.id, subscribe)
    await deliver_all(ctx)
    assert [m["text"]["content"] for m in fake_wechat.custom_sends if m["touser"] == "oUser1"] == ["欢迎关注！春季新品 8 折"]
    # Later the follower scans the store poster: last touch moves, first touch stays.
    await callback(client, inbox.id, event_xml("SCAN", "oUser1", "store-poster", now + 5))
    # oUser2 follows through a code made elsewhere, oUser3 from search: no campaign.
    await callback(client, inbox.id, event_xml("subscribe", "oUser2", "qrscene_someone-else", now))
    await callback(client, inbox.id, event_xml("subscribe", "oUser3", "", now))
    await deliver_all(ctx)
    assert len(fake_wechat.custom_sends) == 1  # no welcome for the SCAN nor for other codes

    user1 = await contact_of(ctx, inbox.id, "oUser1")
    async with ctx.db.session() as s:
        a = await s.get(ContactAttribution, user1)
        assert (a.first_campaign_id, a.last_campaign_id) == (spring, poster)
        assert await s.scalar(select(func.count()).select_from(CampaignTouch)) == 2

    # oUser1 then writes: a conversation counts for both campaigns (it started after each touch).
    await callback(client, inbox.id, text_xml("春季新品还有吗？", msg_id="6200000000000000777", sender="oUser1"))
    spring_rep = (await (await client.get(f"/api/v1/campaigns/{spring}", headers=h)).json())
    assert {k: spring_rep["report"][k] for k in ("scans", "new_followers", "conversations", "first_touch_contacts")} \
        == {"scans": 0, "new_followers": 1, "conversations": 1, "first_touch_contacts": 1}
    poster_rep = (await (await client.get(f"/api/v1/campaigns/{poster}", headers=h)).json())["report"]
    assert (poster_rep["scans"], poster_rep["new_followers"], poster_rep["conversations"]) == (1, 0, 1)
    assert [q["scene"] for q in spring_rep["qr_codes"]] == [temp["scene"]]

    # Segments select by campaign.
    async def count(rule: dict[str, Any]) -> int:
        r = await client.post("/api/v1/segments/preview", headers=h, json={"rules": {"op": "and", "rules": [rule]}})
        assert r.status == 200, await r.text()
        return int((await r.json())["count"])

    assert await count({"field": "campaign", "operator": "first_touch", "value": spring}) == 1
    assert await count({"field": "campaign", "operator": "last_touch", "value": spring}) == 0
    assert await count({"field": "campaign", "operator": "last_touch", "value": [poster]}) == 1
    assert await count({"field": "campaign", "operator": "touched", "value": [spring, poster]}) == 1
    assert await count({"field": "campaign", "operator": "not_touched", "value": spring}) == 2
    bad = await client.post("/api/v1/segments/preview", headers=h, json={"rules": {"op": "and", "rules": [
        {"field": "campaign", "operator": "touched", "value": "春季"}]}})
    assert bad.status == 400 and "campaign id" in (await bad.json())["error"]["message"]

    # Merging oUser1 into another contact keeps their campaign history on the survivor.
    from tests.marketing.helpers_marketing import make_contact

    other = await make_contact(ctx, name="王小明 (导入)")
    merged = await client.post("/api/v1/contact-merges", headers=h, json={"target_id": other, "source_id": user1})
    assert merged.status == 200, await merged.text()
    async with ctx.db.session() as s:
        a = await s.get(ContactAttribution, other)
        assert (a.first_campaign_id, a.last_campaign_id) == (spring, poster)
        assert await s.get(ContactAttribution, user1) is None
    assert await count({"field": "campaign", "operator": "first_touch", "value": spring}) == 1
    assert await count({"field": "campaign", "operator": "touched", "value": poster}) == 1
