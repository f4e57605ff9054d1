"""Campaign pages in headless Chromium against the real app: create a campaign and its WeChat QR code (fake
WeChat API), see a follower attributed; the churn warning list with reasons; the broadcast funnel report."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from datetime import timedelta

import aiohttp
import pytest
from sqlalchemy import select

from channels.memory import MemoryChannelAdapter
from scrm.context import AppContext
from scrm.db.models import Agent, ContactIdentity, Conversation, Message, utcnow
from scrm.delivery.worker import OutboxWorker
from scrm.services.agents import accounts as agents
from scrm.services.marketing import broadcasts
from scrm.services.uow import unit_of_work
from tests.channels.wechat.fake_wechat_api import APP_ID, APP_SECRET, FakeWeChat, serving
from tests.channels.wechat.wechat_callbacks import AES_KEY, TOKEN, encrypted_request
from tests.conftest import make_agent, make_inbox
from tests.marketing.helpers_marketing import make_contact

pytestmark = pytest.mark.browser
HOSTILE = "<img src=x onerror=alert(1)>"


@pytest.fixture
async def fake_wechat() -> AsyncIterator[FakeWeChat]:
    async with serving() as fake:
        yield fake


def _subscribe(sender: str, scene: str) -> str:
    return ("<xml><ToUserName><![CDATA[gh_account]]></ToUserName>"
            f"<FromUserName><![CDATA[{sender}]]></FromUserName><CreateTime>{int(time.time()) - 60}</CreateTime>"
            "<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe]]></Event>"
            f"<EventKey><![CDATA[qrscene_{scene}]]></EventKey><Ticket><![CDATA[TICKET]]></Ticket></xml>")


async def test_campaign_page_qr_code_attribution_and_churn_warning(tab, ctx, live_server, fake_wechat):
    inbox = await make_inbox(ctx, "wechat_oa", name="品牌公众号",
                             settings={"app_id": APP_ID, "api_base_url": fake_wechat.base_url,  # type: ignore[attr-defined]
                                       "passive_reply_timeout": 0},
                             secrets={"app_secret": APP_SECRET, "token": TOKEN, "encoding_aes_key": AES_KEY})
    await make_agent(ctx, "mkt", "marketer")
    page = tab.page
    await tab.login("mkt", "password-123")
    await page.get_by_test_id("nav-campaigns").click()
    await page.get_by_test_id("campaign-name").fill("春季上新 " + HOSTILE)
    await page.get_by_test_id("campaign-create").click()
    await page.wait_for_url(re.compile(r"/campaigns/\d+$"))
    await page.get_by_role("heading", name="春季上新 " + HOSTILE).wait_for()  # shown as text

    # A permanent QR code with a welcome message; WeChat's refusal of a duplicate scene is shown as text.
    await page.get_by_test_id("qr-kind").select_option("permanent")
    assert await page.get_by_test_id("qr-days").is_disabled()
    await page.get_by_test_id("qr-scene").fill("spring-poster")
    await page.get_by_test_id("qr-welcome-input").fill("欢迎关注！" + HOSTILE)
    await page.get_by_test_id("qr-create").click()
    card = page.locator('[data-testid="qr-card"][data-scene="spring-poster"][data-permanent="true"]')
    await card.wait_for()
    assert await card.get_by_test_id("qr-welcome").inner_text() == "欢迎关注！" + HOSTILE
    await page.wait_for_function(
        "() => { const i = document.querySelector('[data-testid=qr-image]'); return i && i.complete && i.naturalWidth > 0; }")
    assert fake_wechat.followers.qrcodes[0]["request"]["action_name"] == "QR_LIMIT_STR_SCENE"
    await page.get_by_test_id("qr-kind").select_option("permanent")
    await page.get_by_test_id("qr-scene").fill("spring-poster")
    await page.get_by_test_id("qr-create").click()
    await page.get_by_test_id("qr-error").filter(has_text="spring-poster").wait_for()
    await tab.shot("30-campaign-qr")

    # A follower scans it (the real encrypted callback): the page counts a new follower and they are welcomed.
    req = encrypted_request(_subscribe("oFan1", "spring-poster"), app_id=APP_ID)
    async with aiohttp.ClientSession() as http:
        resp = await http.post(str(live_server.make_url(f"/webhooks/wechat/{inbox.id}")), params=dict(req.query),
                               data=req.body, headers={"Content-Type": "text/xml"})
        assert resp.status == 200
    await page.reload()
    await page.locator('[data-testid="cstat-new_followers"][data-value="1"]').wait_for()
    for _ in range(100):
        if fake_wechat.custom_sends:
            break
        await page.wait_for_timeout(100)
    assert fake_wechat.custom_sends[0]["text"]["content"] == "欢迎关注！" + HOSTILE

    # Follower sync from the campaigns page: oFan1 is known already, oFan2 becomes a contact.
    fake_wechat.followers.follow("oFan1")
    fake_wechat.followers.follow("oFan2")
    await page.get_by_test_id("nav-campaigns").click()
    await page.locator('[data-testid="campaign-row"]').first.wait_for()
    await page.locator(f'[data-testid="follower-sync"][data-inbox="{inbox.id}"]').click()
    await page.get_by_text("2 followers: 1 new contacts, 0 merged by UnionID").wait_for()

    # Churn warning: a customer silent for 40 days, with the reasons in words.
    api = await make_inbox(ctx)
    cid = await make_contact(ctx, name="老客户" + HOSTILE, opt_outs={"broadcast:api": True}, identities=[(api, "u1", {})])
    now = utcnow()
    async with ctx.db.transaction() as s:
        ident = await s.scalar(select(ContactIdentity).where(ContactIdentity.contact_id == cid))
        conv = Conversation(inbox_id=api.id, contact_id=cid, identity_id=ident.id, status="resolved",
                            created_at=now - timedelta(days=50))
        s.add(conv)
        await s.flush()
        for d in (40, 45, 50):
            s.add(Message(conversation_id=conv.id, inbox_id=api.id, direction="in", sender_kind="contact", text="hi",
                          created_at=now - timedelta(days=d)))
    await page.get_by_test_id("nav-campaigns").click()
    await page.get_by_test_id("churn-tab").click()
    await page.get_by_test_id("churn-recompute").click()
    row = page.locator(f'[data-testid="churn-row"][data-contact="{cid}"][data-score="80"]')
    await row.wait_for()
    reasons = await row.get_by_test_id("churn-reason").all_inner_texts()
    assert reasons == ["No message for 40 days (+35)", "Fewer messages: 0 in the last 30 days, 3 before (+20)",
                       "Opted out of broadcasts (api) (+25)"]
    assert HOSTILE in await row.inner_text()
    await tab.shot("31-churn-warning")
    # The marketer's bell has today's warning (names as text) and leads back to the list.
    await page.reload()
    await page.get_by_test_id("notif-count").filter(has_text="1").wait_for()
    await page.get_by_test_id("notif-bell").click()
    note = page.locator('[data-testid="notification"][data-kind="churn_risk"]')
    await note.filter(has_text="1 contacts crossed the churn-risk threshold").wait_for()
    assert "老客户" + HOSTILE in await note.inner_text()

    # Segments by campaign (picked by name) and by churn risk.
    await page.get_by_test_id("nav-segments").click()
    await page.get_by_test_id("segment-new").click()
    await page.get_by_test_id("add-condition").click()
    await page.get_by_test_id("rule-field").select_option("campaign")
    await page.get_by_test_id("rule-value").locator("option", has_text="春季上新").wait_for(state="attached")
    await page.locator('[data-testid="segment-count"][data-state="ok"][data-count="1"]').wait_for()
    await page.get_by_test_id("rule-op").select_option("last_touch")
    await page.locator('[data-testid="segment-count"][data-state="ok"][data-count="1"]').wait_for()
    await page.get_by_test_id("rule-field").select_option("churn_risk")
    assert await page.get_by_test_id("rule-op").input_value() == "at_risk"
    await page.get_by_test_id("segment-sample").filter(has_text="老客户").wait_for()
    await page.locator('[data-testid="segment-count"][data-state="ok"][data-count="1"]').wait_for()
    assert tab.dialogs == [] and tab.errors == []


async def _token(ctx: AppContext, login_name: str) -> str:
    async with ctx.db.transaction() as s:
        agent = await s.scalar(select(Agent).where(Agent.login == login_name))
        _, raw = await agents.create_token(s, agent, "shop")
    return raw


async def test_broadcast_report_shows_the_funnel(tab, ctx, live_server):
    base = str(live_server.make_url("")).rstrip("/")
    ctx.settings.server.public_url = base
    sim = await make_inbox(ctx, "memory", name="模拟器")
    ids = [await make_contact(ctx, name=n, tags=("vip",), identities=[(sim, f"m{i}", {})])
           for i, n in enumerate(["王小明", "李娜", HOSTILE])]
    MemoryChannelAdapter.sent.pop(sim.id, None)
    async with unit_of_work(ctx) as tx:
        b = await broadcasts.save(tx, None, {
            "name": "双十一 " + HOSTILE, "rules": {"op": "and", "rules": [{"field": "tag", "operator": "has", "value": "vip"}]},
            "inbox_ids": [sim.id], "template": "{{name}} 双十一 https://shop.example.com/sale 抢购"})
        bid = b.id
    await broadcasts.start(ctx, bid)
    worker = OutboxWorker(ctx, name="test-worker")
    for _ in range(30):  # paced deliveries (the channel's rate limits) may need more than one round
        await worker.run_until_idle(timeout=20)
        if len(MemoryChannelAdapter.sent.get(sim.id, [])) >= 3:
            break
        await asyncio.sleep(1)
    texts = {m.recipient_id: m.text for m in MemoryChannelAdapter.sent[sim.id]}
    assert len(texts) == 3
    short = re.search(r"(/r/[A-Za-z0-9_\-]+)", texts["m0"]).group(1)
    mkt = await make_agent(ctx, "mkt", "marketer")
    assert mkt
    page = tab.page
    # 王小明 clicks (twice) and buys; the shop reports the order twice (retry): one conversion.
    for _ in range(2):
        resp = await page.request.get(base + short, max_redirects=0)
        assert resp.status == 302 and resp.headers["location"] == "https://shop.example.com/sale"
    shop = {"Authorization": "Bearer " + await _token(ctx, "mkt")}
    order = {"order_id": "SO-88", "contact": {"id": ids[0]}, "value": 88}
    for _ in range(2):
        resp = await page.request.post(base + "/api/v1/conversions", data=order, headers=shop)
        assert resp.status in (200, 201)

    await tab.login("mkt", "password-123")
    await tab.goto(f"/broadcasts/{bid}")
    funnel = page.get_by_test_id("funnel")
    await funnel.wait_for()
    steps = {await s.get_attribute("data-step"): await s.get_attribute("data-value")
             for s in await funnel.get_by_test_id("funnel-step").all()}
    assert steps == {"reached": "3", "clicked": "1", "replied": "0", "converted": "1"}
    assert await funnel.get_by_test_id("funnel-value").get_attribute("data-value") == "88"
    assert "88.00" in await funnel.get_by_test_id("funnel-value").inner_text()
    assert await funnel.locator("svg rect").count() == 4
    await page.get_by_role("heading", name="双十一 " + HOSTILE).wait_for()
    await tab.shot("32-broadcast-funnel")
    # 中文界面
    await page.get_by_test_id("lang").select_option("zh")
    await page.get_by_test_id("funnel").filter(has_text="转化漏斗").wait_for()
    assert await page.get_by_test_id("funnel").filter(has_text="订单金额").count() == 1
    assert tab.dialogs == [] and tab.errors == []


async def test_admin_tunes_the_churn_rules(tab, ctx, live_server):
    api = await make_inbox(ctx)
    cid = await make_contact(ctx, name="老客户", identities=[(api, "u1", {})])
    now = utcnow()
    async with ctx.db.transaction() as s:
        ident = await s.scalar(select(ContactIdentity).where(ContactIdentity.contact_id == cid))
        conv = Conversation(inbox_id=api.id, contact_id=cid, identity_id=ident.id, status="resolved",
                            created_at=now - timedelta(days=50))
        s.add(conv)
        await s.flush()
        for d in (40, 45):
            s.add(Message(conversation_id=conv.id, inbox_id=api.id, direction="in", sender_kind="contact", text="hi",
                          created_at=now - timedelta(days=d)))
    await make_agent(ctx, "boss", "admin")
    page = tab.page
    await tab.login("boss", "password-123")
    await tab.goto("/campaigns/churn")
    await page.get_by_test_id("churn-table").wait_for()
    await page.get_by_test_id("churn-table").get_by_text("Nobody is at risk.").wait_for()  # 55 < 60
    await page.get_by_test_id("churn-rules").locator("summary").click()
    await page.get_by_test_id("rule-threshold").fill("150")
    await page.get_by_test_id("rules-save").click()
    await page.get_by_test_id("rules-error").filter(has_text="threshold").wait_for()
    await page.get_by_test_id("rule-threshold").fill("50")
    await page.get_by_test_id("rule-fading").fill("30")
    await page.get_by_test_id("rules-save").click()
    await page.get_by_test_id("churn-recompute").click()
    row = page.locator(f'[data-testid="churn-row"][data-contact="{cid}"][data-score="65"]')
    await row.wait_for()
    assert await row.get_by_test_id("churn-reason").all_inner_texts() == [
        "No message for 40 days (+35)", "Fewer messages: 0 in the last 30 days, 2 before (+30)"]
    assert tab.dialogs == [] and tab.errors == []
