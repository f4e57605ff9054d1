"""客户联系 with a real database: full sync, change callbacks and welcomes, tags both ways, one person by
UnionID across an Official Account, 微信客服 and external contacts, 群发 through add_msg_template."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select

from scrm.db.models import AuditLog, Contact, ContactIdentity, ContactTag
from scrm.services.wecom import contacts as wecom_contacts
from scrm.services.wecom import jobs as wecom_jobs
from scrm.services.wecom import mass as wecom_mass
from tests.channels.wechat.fake_wechat_api import APP_ID, APP_SECRET
from tests.channels.wechat.fake_wechat_api import serving as serving_wechat
from tests.channels.wechat.wechat_callbacks import AES_KEY as WX_AES
from tests.channels.wechat.wechat_callbacks import TOKEN as WX_TOKEN
from tests.channels.wechat.wechat_callbacks import encrypted_request
from tests.channels.wecom.fake_wecom_api import FakeWeCom, serving
from tests.channels.wecom.wecom_samples import CORP_ID, text_item
from tests.conftest import make_inbox, wait_for
from tests.integration.helpers_integration import deliver_all, identity
from tests.integration.wecom_helpers import contacts_inbox, kf_inbox, notify, post_xml

WO1, WO2, WO3 = "woCustomerA000000000000000000001", "woCustomerB000000000000000000002", "woCustomerC000000000000000000003"


@pytest.fixture
async def fake() -> AsyncIterator[FakeWeCom]:
    async with serving() as fake:
        fake.contacts.tag_groups = [{"group_id": "G1", "group_name": "客户等级", "create_time": 1, "order": 1,
                                     "deleted": False, "tag": [{"id": "etVIP", "name": "VIP", "create_time": 1,
                                                                "order": 1, "deleted": False}]}]
        vip = {"group_name": "客户等级", "tag_name": "VIP", "tag_id": "etVIP", "type": 1}
        fake.contacts.add_person(WO1, "王先生", [{"userid": "zhangsan", "remark": "王总", "state": "spring-fair",
                                                   "add_way": 1, "createtime": 1600000000, "tags": [vip]},
                                                  {"userid": "lisi", "createtime": 1700000000}], unionid="oUnionWang")
        fake.contacts.add_person(WO2, "赵女士", [{"userid": "lisi", "add_way": 3}])
        fake.contacts.add_person(WO3, "钱先生", [{"userid": "zhangsan"}])
        yield fake


async def contact_of(ctx: Any, inbox_id: int, euid: str) -> tuple[ContactIdentity, Contact, list[str]]:
    ident = await identity(ctx, inbox_id, euid)
    async with ctx.db.session() as s:
        contact = await s.get(Contact, ident.contact_id)
        while contact.merged_into_id:
            contact = await s.get(Contact, contact.merged_into_id)
        tags = list((await s.scalars(select(ContactTag.tag).where(ContactTag.contact_id == contact.id))).all())
    return ident, contact, sorted(tags)


async def test_full_sync_brings_every_external_contact_with_staff_and_tags(ctx, fake) -> None:
    inbox = await contacts_inbox(ctx, fake)
    assert await wecom_contacts.full_sync(ctx, inbox.id) == 3
    ident, contact, tags = await contact_of(ctx, inbox.id, WO1)
    follows = {f["userid"]: f for f in ident.attributes["follow_users"]}
    assert set(follows) == {"zhangsan", "lisi"} and follows["zhangsan"]["remark"] == "王总"
    assert follows["zhangsan"]["add_way_name"] == "qr_code" and ident.source == "spring-fair"
    assert contact.name == "王先生" and tags == ["VIP"]
    assert fake.contacts.by_user_requests[0]["userid_list"] == ["lisi", "zhangsan"]
    # Nobody follows WO3 any more: the next sync marks them unreachable for 群发.
    del fake.contacts.people[WO3]
    await wecom_contacts.full_sync(ctx, inbox.id)
    assert (await identity(ctx, inbox.id, WO3)).subscribed is False


def change_xml(change: str, euid: str, userid: str = "zhangsan", state: str = "", code: str = "") -> str:
    extra = (f"<State><![CDATA[{state}]]></State>" if state else "") + (
        f"<WelcomeCode><![CDATA[{code}]]></WelcomeCode>" if code else "")
    return (f"<xml><ToUserName><![CDATA[{CORP_ID}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName>"
            f"<CreateTime>{__import__('time').time():.0f}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
            f"<Event><![CDATA[change_external_contact]]></Event><ChangeType><![CDATA[{change}]]></ChangeType>"
            f"<UserID><![CDATA[{userid}]]></UserID><ExternalUserID><![CDATA[{euid}]]></ExternalUserID>{extra}</xml>")


async def test_add_callback_stores_welcomes_once_and_rereads(client, ctx, fake) -> None:
    inbox = await contacts_inbox(ctx, fake, welcome_text="您好，我是您的专属顾问")
    fake.contacts.welcome_codes.add("WC-1")
    xml = change_xml("add_external_contact", WO2, userid="lisi", state="summer", code="WC-1")
    for _ in range(2):  # WeCom retries: the welcome still goes once
        resp = await post_xml(client, inbox.id, xml, segment="wecom-contacts")
        assert resp.status == 200
    await wecom_contacts.wait_background(ctx)
    await deliver_all(ctx)
    assert [w["text"]["content"] for w in fake.contacts.welcomes] == ["您好，我是您的专属顾问"]
    ident, contact, _ = await contact_of(ctx, inbox.id, WO2)
    assert ident.source == "summer" and contact.name == "赵女士"  # the name came from the re-read (`get`)
    fake.contacts.people[WO2]["follow_user"] = []  # the customer deleted lisi
    await post_xml(client, inbox.id, change_xml("del_follow_user", WO2, userid="lisi"), segment="wecom-contacts")
    await wecom_contacts.wait_background(ctx)
    assert (await identity(ctx, inbox.id, WO2)).subscribed is False


async def test_tags_sync_both_ways(client, ctx, fake, admin_headers) -> None:
    inbox = await contacts_inbox(ctx, fake)
    await wecom_contacts.full_sync(ctx, inbox.id)
    ident, contact, tags = await contact_of(ctx, inbox.id, WO1)
    # scrm -> WeCom: a marketer adds a label; it becomes a corp tag in our group, marked on both pairs.
    resp = await client.patch(f"/api/v1/contacts/{contact.id}", json={"tags": ["VIP", "展会客户"]}, headers=admin_headers)
    assert resp.status == 200, await resp.text()
    await ctx.bus.drain(5)  # the listener pushes the change (its WeCom calls run after the event's commit)
    await wait_for(lambda: len(fake.contacts.marks) >= 2, timeout=15)
    ours = next(g for g in fake.contacts.tag_groups if g["group_name"] == "scrm")
    new_id = ours["tag"][0]["id"]
    assert {(m["userid"], tuple(m["add_tag"])) for m in fake.contacts.marks} == {("zhangsan", (new_id,)),
                                                                                 ("lisi", (new_id,))}
    # WeCom -> scrm: VIP removed in the WeCom client (edit callback, re-read): the label goes.
    for f in fake.contacts.people[WO1]["follow_user"]:
        f["tags"] = [t for t in f["tags"] if t["tag_id"] != "etVIP"]
    await post_xml(client, inbox.id, change_xml("edit_external_contact", WO1), segment="wecom-contacts")
    await wecom_contacts.wait_background(ctx)
    _, _, tags = await contact_of(ctx, inbox.id, WO1)
    assert tags == ["展会客户"]
    # scrm -> WeCom removal.
    await client.patch(f"/api/v1/contacts/{contact.id}", json={"tags": []}, headers=admin_headers)
    await ctx.bus.drain(5)
    await wait_for(lambda: len(fake.contacts.marks) >= 4, timeout=15)
    assert {tuple(m["remove_tag"]) for m in fake.contacts.marks[-2:]} == {(new_id,)}


async def test_one_person_across_official_account_kf_and_external_contact(client, ctx, fake) -> None:
    async with serving_wechat() as wx:
        wx.unionids["oFollowerWang"] = "oUnionWang"
        oa = await make_inbox(ctx, "wechat_oa", name="公众号", settings={
            "app_id": APP_ID, "api_base_url": wx.base_url, "passive_reply_timeout": 0, "link_unionid": True},
            secrets={"app_secret": APP_SECRET, "token": WX_TOKEN, "encoding_aes_key": WX_AES})
        kf = await kf_inbox(ctx, fake)
        contacts = await contacts_inbox(ctx, fake)
        xml = ("<xml><ToUserName><![CDATA[gh_1]]></ToUserName><FromUserName><![CDATA[oFollowerWang]]></FromUserName>"
               f"<CreateTime>{__import__('time').time():.0f}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
               "<Content><![CDATA[你好]]></Content><MsgId>7000000000000000001</MsgId></xml>")
        req = encrypted_request(xml, app_id=APP_ID)
        resp = await client.post(f"/webhooks/wechat/{oa.id}", params=dict(req.query), data=req.body)
        assert resp.status == 200
        await ctx.bus.drain(5)
        fake.customers["wmKfWang"] = {"external_userid": "wmKfWang", "nickname": "老王", "unionid": "oUnionWang"}
        fake.add(text_item("kf-wang", "wmKfWang", "在吗"))
        fake.customers["wmKfNoUnion"] = {"external_userid": "wmKfNoUnion", "nickname": "王先生"}  # same name only
        fake.add(text_item("kf-other", "wmKfNoUnion", "你好"))
        await notify(client, ctx, fake, kf.id)
        await wecom_contacts.full_sync(ctx, contacts.id)
        await ctx.bus.drain(5)
        contact_ids = set()
        for inbox_id, euid in ((oa.id, "oFollowerWang"), (kf.id, "wmKfWang"), (contacts.id, WO1)):
            _, contact, _ = await contact_of(ctx, inbox_id, euid)
            contact_ids.add(contact.id)
        assert len(contact_ids) == 1  # one person
        _, other, _ = await contact_of(ctx, kf.id, "wmKfNoUnion")
        assert other.id not in contact_ids  # a name is never enough
        async with ctx.db.session() as s:
            audit = (await s.scalars(select(AuditLog.action).where(AuditLog.target_id == contact_ids.pop()))).all()
        assert "contact.merge" in audit and "contact.link_unionid" in audit


async def test_broadcast_waits_for_staff_then_records_each_outcome(client, ctx, fake, admin_headers) -> None:
    inbox = await contacts_inbox(ctx, fake)
    await wecom_contacts.full_sync(ctx, inbox.id)
    resp = await client.post("/api/v1/broadcasts", headers=admin_headers, json={
        "name": "双十一", "inbox_ids": [inbox.id], "template": "双十一全场八折", "rules": {}})
    assert resp.status == 201, await resp.text()
    bid = (await resp.json())["id"]
    started = await client.post(f"/api/v1/broadcasts/{bid}/start", headers=admin_headers)
    assert started.status == 202, await started.text()
    assert await wecom_mass.dispatch(ctx) == 2  # one task per sending staff member
    await deliver_all(ctx)
    senders = sorted(t["sender"] for t in fake.contacts.templates.values())
    assert senders == ["lisi", "zhangsan"]
    await wecom_mass.poll(ctx, force=True)
    report = await (await client.get(f"/api/v1/broadcasts/{bid}/report", headers=admin_headers)).json()
    assert report["waiting"] == 3 and report["sent"] == 0  # nothing goes out before staff confirm
    for msgid in list(fake.contacts.templates):
        fake.contacts.confirm(msgid, {WO2: 2, WO3: 3})  # WO2 is no longer a friend, WO3 got one today already
    await wecom_mass.poll(ctx, force=True)
    report = await (await client.get(f"/api/v1/broadcasts/{bid}/report", headers=admin_headers)).json()
    assert report["sent"] == 1 and report["waiting"] == 0
    assert report["failed_by_reason"] == {"not_a_friend": 1, "daily_cap": 1}
    # WO1 got a 群发 today: a second broadcast skips them with the reason.
    resp = await client.post("/api/v1/broadcasts", headers=admin_headers, json={
        "name": "再来一次", "inbox_ids": [inbox.id], "template": "hi", "rules": {}})
    bid2 = (await resp.json())["id"]
    await client.post(f"/api/v1/broadcasts/{bid2}/start", headers=admin_headers)
    report = await (await client.get(f"/api/v1/broadcasts/{bid2}/report", headers=admin_headers)).json()
    assert report["skipped_by_reason"].get("daily_cap") == 1
    await wecom_jobs.run_once(ctx)  # the periodic job does the same without errors
