"""The desk in a real browser: an admin sets the desk up through the pages, a conversation is
auto-assigned, breaches its SLA, a rule fires, and the agent's own browser (a second context) is
notified live; an @mention in a note reaches the mentioned agent at once."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from scrm.db.models import Conversation, ConversationLabel, utcnow
from scrm.db.models_desk import AutomationRule, SlaPolicy, Team
from scrm.db.models_desk_ui import Notification
from scrm.services.desk import sla
from tests.conftest import api_message, make_agent, make_inbox, post_signed
from tests.web.conftest import Tab

pytestmark = pytest.mark.browser


async def post_message(live_server: Any, inbox_id: int, payload: dict[str, Any]) -> dict[str, Any]:
    async with aiohttp.ClientSession(base_url=str(live_server.make_url("/"))) as http:
        r = await post_signed(http, inbox_id, payload)
        assert r.status == 200, await r.text()
        return await r.json()  # type: ignore[no-any-return]


async def second_tab(browser: Any, live_server: Any, locale: str = "zh-CN") -> Tab:
    context = await browser.new_context(locale=locale, viewport={"width": 1400, "height": 900}, timezone_id="Asia/Shanghai")
    context.set_default_timeout(5000)
    return Tab(await context.new_page(), str(live_server.make_url("")).rstrip("/"))


async def test_admin_sets_up_the_desk_and_the_assigned_agent_is_notified_live(tab, browser, ctx, admin, live_server):
    inbox = await make_inbox(ctx)
    li = await make_agent(ctx, "li", "agent")
    page = tab.page
    await tab.login("root", "correct-horse-1")

    # A team serving every inbox, with Li as its only member and round-robin assignment.
    await tab.goto("/desk-settings/teams")
    await page.get_by_test_id("team-new").click()
    await page.get_by_test_id("team-name").fill("一线客服")
    await page.locator(f'[data-testid="team-member"][data-agent="{li}"]').check()
    await page.get_by_test_id("team-capacity").fill("5")
    await page.get_by_test_id("team-save").click()
    await page.get_by_test_id("team-row").filter(has_text="一线客服").wait_for()

    # Business hours round the clock (the SLA clock must run during the test), saved through the form.
    await tab.goto("/desk-settings/hours")
    for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun"):
        await page.get_by_test_id(f"hours-{day}").fill("00:00-24:00")
    await page.get_by_test_id("hours-save").click()
    await page.get_by_test_id("toast").filter(has_text="Saved").first.wait_for()

    # An SLA policy: first response within 10 minutes.
    await tab.goto("/desk-settings/sla")
    await page.get_by_test_id("sla-new").click()
    await page.get_by_test_id("sla-name").fill("标准")
    await page.get_by_test_id("sla-first_response_minutes").fill("10")
    await page.get_by_test_id("sla-save").click()
    await page.get_by_test_id("sla-row").filter(has_text="标准").wait_for()

    # A rule: when the SLA is breached, make the conversation urgent and label it.
    await tab.goto("/desk-settings/rules")
    await page.get_by_test_id("rule-new").click()
    await page.get_by_test_id("rule-name").fill("超时升级")
    await page.get_by_test_id("rule-event").select_option("sla.breached")
    await page.get_by_test_id("rule-action-value").fill("超时")
    await page.get_by_test_id("rule-add-action").click()
    await page.get_by_test_id("rule-action-type").nth(1).select_option("set_priority")
    await page.get_by_test_id("rule-action-priority").select_option("urgent")
    await page.get_by_test_id("rule-save").click()
    await page.get_by_test_id("rule-row").filter(has_text="超时升级").wait_for()
    await tab.shot("desk-01-rules-en")
    async with ctx.db.session() as s:
        team = (await s.scalars(select(Team))).one()
        policy = (await s.scalars(select(SlaPolicy))).one()
        rule = (await s.scalars(select(AutomationRule))).one()
    assert policy.first_response_minutes == 10 and policy.business_hours
    assert rule.event == "sla.breached" and [a["type"] for a in rule.actions] == ["add_label", "set_priority"]
    assert team.auto_assign and team.max_open_per_agent == 5

    # Li works in another browser (Chinese).
    agent = await second_tab(browser, live_server)
    await agent.login("li", "password-123")
    await agent.page.locator('[data-testid="live-status"].live').wait_for()

    # A customer asks for a human: the conversation enters the queue and is auto-assigned to Li.
    result = await post_message(live_server, inbox.id, api_message("m-1", sender="cust-7", text="转人工", name="张三"))
    cid = result["results"][0]["conversation_id"]
    bell = agent.page.get_by_test_id("notif-count")
    await bell.filter(has_text="1").wait_for()
    async with ctx.db.session() as s:
        conv = await s.get(Conversation, cid)
    assert conv.assignee_id == li

    # The SLA checker runs past the due time: breach, the rule fires, Li is told.
    await sla.check_due(ctx, now=utcnow() + timedelta(minutes=11))
    await bell.filter(has_text="2").wait_for()
    await agent.page.get_by_test_id("notif-bell").click()
    breached = agent.page.locator('[data-testid="notification"][data-kind="sla_breached"]')
    await breached.wait_for()
    assert "张三" in await breached.inner_text() and "超时" in await breached.inner_text()
    assert await agent.page.locator('[data-testid="notification"][data-kind="assigned"]').count() == 1
    assert (await agent.page.title()).startswith("(2)")
    await agent.shot("desk-02-notifications-zh")
    async with ctx.db.session() as s:
        conv = await s.get(Conversation, cid)
        labels = (await s.scalars(select(ConversationLabel.label).where(ConversationLabel.conversation_id == cid))).all()
    assert conv.priority == "urgent" and list(labels) == ["超时"]

    # The admin mentions Li in a private note: Li's browser shows it within a second.
    await tab.goto(f"/conversations/{cid}")
    await page.get_by_test_id("mode-note").click()
    await page.get_by_test_id("composer-input").fill("@li 客户很着急，请优先处理")
    await page.get_by_test_id("send").click()
    started = time.monotonic()
    mention = agent.page.locator('[data-testid="notification"][data-kind="mention"]')
    await mention.wait_for(timeout=2000)
    assert time.monotonic() - started < 1.5
    assert "客户很着急" in await mention.inner_text()
    await bell.filter(has_text="3").wait_for()

    # Opening the notification opens the conversation and reads its notifications.
    await mention.click()
    await agent.page.wait_for_url(f"**/conversations/{cid}")
    await agent.page.get_by_test_id("thread-title").filter(has_text="张三").wait_for()
    await agent.page.get_by_test_id("notif-count").wait_for(state="hidden")
    async with ctx.db.session() as s:
        unread = (await s.scalars(select(Notification).where(Notification.agent_id == li, Notification.read_at.is_(None)))).all()
    assert unread == []
    assert tab.errors == [] and agent.errors == []
    await agent.page.context.close()
