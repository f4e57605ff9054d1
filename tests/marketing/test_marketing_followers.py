"""OA follower sync against the fake WeChat API: user/get pages, user/info/batchget profiles, UnionID merging
into an existing contact, and OA tags kept in step with scrm labels both ways."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select

from scrm.context import AppContext
from scrm.db.models import Contact, ContactIdentity, ContactTag, Inbox
from scrm.db.models_wecom import WeChatUnionId
from scrm.services.marketing.oa_followers import merge_tags
from tests.channels.wechat.fake_wechat_api import APP_ID, APP_SECRET, FakeWeChat, serving
from tests.channels.wechat.wechat_callbacks import AES_KEY, TOKEN
from tests.conftest import login, make_agent, make_inbox
from tests.marketing.helpers_marketing import make_contact


def test_tags_merge_three_ways() -> None:
    assert merge_tags({"a"}, {"b"}, None) == {"a", "b"}  # first sync: both sides' tags
    assert merge_tags({"a"}, set(), {"a"}) == set()  # removed in scrm -> removed on OA
    assert merge_tags(set(), {"a"}, {"a"}) == set()  # removed on OA -> removed in scrm
    assert merge_tags({"a", "c"}, {"a", "b"}, {"a"}) == {"a", "b", "c"}  # added on either side
    assert merge_tags({"a"}, {"a"}, set()) == {"a"}


@pytest.fixture
async def fake_wechat() -> AsyncIterator[FakeWeChat]:
    async with serving() as fake:
        yield fake


async def _labels(ctx: AppContext, contact_id: int) -> set[str]:
    async with ctx.db.session() as s:
        return set((await s.scalars(select(ContactTag.tag).where(ContactTag.contact_id == contact_id))).all())


async def _contact(ctx: AppContext, inbox_id: int, openid: str) -> Contact:
    async with ctx.db.session() as s:
        cid = await s.scalar(select(ContactIdentity.contact_id).where(ContactIdentity.inbox_id == inbox_id,
                                                                      ContactIdentity.external_id == openid))
        contact = await s.get(Contact, cid)
        while contact.merged_into_id:
            contact = await s.get(Contact, contact.merged_into_id)
        return contact


async def test_followers_become_contacts_merge_by_unionid_and_tags_sync_both_ways(client, ctx, fake_wechat):
    oa = fake_wechat.followers
    oa.page_size = 2  # three followers: user/get pages through them
    vip, news = oa.add_tag("VIP"), oa.add_tag("会员通讯")
    oa.follow("oA", unionid="UNION-A", tags=(vip,))
    oa.follow("oB", unionid="UNION-B")
    oa.follow("oC")
    oa.follow("oGone").subscribed = False
    inbox = await make_inbox(ctx, "wechat_oa", name="公众号",
                             settings={"app_id": APP_ID, "api_base_url": fake_wechat.base_url},  # type: ignore[attr-defined]
                             secrets={"app_secret": APP_SECRET, "token": TOKEN, "encoding_aes_key": AES_KEY})
    wecom = await make_inbox(ctx, "wecom_contacts", name="企业微信")
    async with ctx.db.transaction() as s:  # only its identities matter here: no WeCom API behind it
        (await s.get(Inbox, wecom.id)).active = False
    # 王小明 is already a WeCom external contact with the same UnionID, labelled 会员通讯 in scrm.
    wang = await make_contact(ctx, name="王小明", tags=("会员通讯", "线下"), identities=[(wecom, "wmEXT1", {})])
    async with ctx.db.transaction() as s:
        ident = await s.scalar(select(ContactIdentity).where(ContactIdentity.external_id == "wmEXT1"))
        s.add(WeChatUnionId(identity_id=ident.id, unionid="UNION-A"))
    # oC wrote before and was labelled VIP by an agent.
    li = await make_contact(ctx, name="李娜", tags=("VIP",), identities=[(inbox, "oC", {})])

    await make_agent(ctx, "mkt", "marketer")
    h = await login(client, "mkt", "password-123")
    resp = await client.post(f"/api/v1/inboxes/{inbox.id}/wechat/follower-sync", headers=h)
    assert resp.status == 200, await resp.text()
    stats = await resp.json()
    assert stats["total"] == 3 and stats["created"] == 2 and stats["updated"] == 1 and stats["merged"] == 1
    assert [c for c in oa.calls if c[0] == "user/get"] == [("user/get", ""), ("user/get", "oB"), ("user/get", "oC")]
    assert all(n <= 100 for name, n in oa.calls if name == "user/info/batchget")

    # oA is 王小明: merged into the existing contact; labels are the union of both sides, on both sides.
    a = await _contact(ctx, inbox.id, "oA")
    assert a.id == wang and await _labels(ctx, wang) == {"VIP", "会员通讯", "线下"}
    assert oa.followers["oA"].tags == {vip, news}  # 线下 is no OA tag: not pushed
    b = await _contact(ctx, inbox.id, "oB")
    assert b.id not in (wang, li) and await _labels(ctx, b.id) == set()
    assert oa.followers["oC"].tags == {vip} and (await _contact(ctx, inbox.id, "oC")).id == li
    async with ctx.db.session() as s:
        identity = await s.scalar(select(ContactIdentity).where(ContactIdentity.external_id == "oB"))
        assert identity.last_inbound_at is None  # following opens no reply window
        assert await s.scalar(select(ContactIdentity).where(ContactIdentity.external_id == "oGone")) is None

    # Later: someone tags oB 会员通讯 in the WeChat console, an agent removes VIP from 李娜 in scrm.
    oa.followers["oB"].tags.add(news)
    assert (await client.put(f"/api/v1/contacts/{li}/tags", json={"tags": []}, headers=h)).status == 200
    resp = await client.post(f"/api/v1/inboxes/{inbox.id}/wechat/follower-sync", headers=h)
    assert resp.status == 200
    assert await _labels(ctx, b.id) == {"会员通讯"}
    assert oa.followers["oC"].tags == set() and await _labels(ctx, li) == set()
    assert ("batchuntagging", (vip, ["oC"])) in oa.calls
    assert await _labels(ctx, wang) == {"VIP", "会员通讯", "线下"}  # unchanged on both sides: nothing moves

    # WeChat refusing the follower list is a clear 502, not a crash.
    fake_wechat.fail_next("/cgi-bin/user/get", 48001)
    resp = await client.post(f"/api/v1/inboxes/{inbox.id}/wechat/follower-sync", headers=h)
    assert resp.status == 502 and "48001" in (await resp.json())["error"]["message"]
    other = await make_inbox(ctx)
    assert (await client.post(f"/api/v1/inboxes/{other.id}/wechat/follower-sync", headers=h)).status == 404
