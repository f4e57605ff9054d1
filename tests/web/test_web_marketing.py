"""The marketer's pages in headless Chromium: segment builder with live count, broadcast compose -> progress ->
report against the real app (outbox worker and broadcast scheduler running), contacts import/merge, roles."""

from __future__ import annotations

import csv
import io
import re
from typing import Any

import pytest
from sqlalchemy import select

from channels.memory import MemoryChannelAdapter
from scrm.context import AppContext
from scrm.db.models import Contact, ContactTag
from scrm.db.models_marketing import AttributeDefinition, Broadcast, Segment
from scrm.settings import Settings
from tests.conftest import make_agent, make_inbox
from tests.marketing.helpers_marketing import make_contact

pytestmark = pytest.mark.browser


@pytest.fixture
async def live_server(aiohttp_server: Any, ctx: AppContext, settings: Settings) -> Any:
    """The app with its background jobs; the broadcast scheduler checks often so "completed" shows quickly."""
    from scrm.web.app import create_app

    ctx.extras["broadcast_scheduler_interval"] = 0.3
    return await aiohttp_server(create_app(settings, ctx=ctx, run_background=True))


async def _audience(ctx: AppContext, callback_url: str) -> dict[str, Any]:
    api = await make_inbox(ctx, name="API 渠道", settings={"callback_url": callback_url})
    sim = await make_inbox(ctx, "memory", name="模拟器")
    async with ctx.db.transaction() as s:
        s.add(AttributeDefinition(key="city", label="城市", type="text", choices=[]))
    ids = {
        "wang": await make_contact(ctx, name="王小明", tags=("vip",), attributes={"city": "北京"},
                                   identities=[(api, "u1", {})]),
        "li": await make_contact(ctx, name="李娜", tags=("vip",), identities=[(api, "u2", {})]),
        "eve": await make_contact(ctx, name="<img src=x onerror=alert(1)>Eve", tags=("vip",),
                                  identities=[(api, "u3", {})]),
        "zhang": await make_contact(ctx, name="张伟", tags=("vip",), identities=[(sim, "m1", {})]),
        "zhao": await make_contact(ctx, name="赵敏", tags=("vip",), opt_outs={"broadcast:memory": True},
                                   identities=[(sim, "m2", {})]),
        "other": await make_contact(ctx, name="路人", identities=[(api, "u9", {})]),
    }
    return {"api": api, "sim": sim, "ids": ids}


async def test_marketer_segment_broadcast_progress_and_report(tab, ctx, live_server, callback_server):
    setup = await _audience(ctx, callback_server.url)
    await make_agent(ctx, "mkt", "marketer")
    MemoryChannelAdapter.sent.pop(setup["sim"].id, None)
    page = tab.page
    await tab.login("mkt", "password-123")
    await page.get_by_test_id("contacts-table").wait_for()  # a marketer lands on contacts, not the inbox
    assert await page.locator('nav.nav a[data-nav="inbox"]').count() == 0
    assert await page.get_by_test_id("contact-row").count() == 6
    assert await page.get_by_test_id("contact-link").filter(has_text="<img src=x onerror=alert(1)>Eve").count() == 1
    await page.get_by_test_id("contacts-tag").fill("vip")
    await page.get_by_test_id("contacts-total").filter(has_text="5 contacts").wait_for()
    assert await page.get_by_test_id("contact-row").count() == 5

    # Segment builder: live count follows the rules.
    await page.get_by_test_id("nav-segments").click()
    await page.get_by_test_id("segment-new").click()
    await page.get_by_test_id("segment-name").fill("VIP 客户")
    count = page.get_by_test_id("segment-count")
    await count.filter(has_text="6").wait_for()  # no conditions: everybody
    await page.get_by_test_id("add-condition").click()
    await page.get_by_test_id("rule-value").fill("vip")
    await page.locator('[data-testid="segment-count"][data-count="5"]').wait_for()
    await page.get_by_test_id("add-condition").click()
    await page.get_by_test_id("rule-field").nth(1).select_option("attributes.city")
    await page.get_by_test_id("rule-value").nth(1).fill("北京")
    await page.locator('[data-testid="segment-count"][data-count="1"]').wait_for()
    await page.get_by_test_id("segment-sample").filter(has_text="王小明").wait_for()
    await page.get_by_test_id("rule-remove").nth(1).click()
    await page.locator('[data-testid="segment-count"][data-count="5"]').wait_for()
    await page.get_by_test_id("add-group").first.click()  # (tag vip) AND (seen in the last 30 days OR ...)
    await page.locator('[data-testid="segment-count"][data-state="incomplete"]').wait_for()
    group = page.locator('[data-testid="rule-group"][data-depth="1"]')
    await group.get_by_test_id("rule-field").select_option("last_seen")
    assert await group.get_by_test_id("rule-op").input_value() == "within_days"
    assert await group.get_by_test_id("rule-value").input_value() == "30"
    await page.locator('[data-testid="segment-count"][data-state="ok"][data-count="5"]').wait_for()
    await group.get_by_test_id("rule-op").select_option("older_than_days")
    await page.locator('[data-testid="segment-count"][data-state="ok"][data-count="0"]').wait_for()
    await group.get_by_role("button", name="remove group").click()
    await page.locator('[data-testid="segment-count"][data-count="5"]').wait_for()
    await tab.shot("20-segment-builder")
    await page.get_by_test_id("segment-save").click()
    await page.wait_for_url(re.compile(r"/segments/\d+$"))

    # Compose: an unknown variable is refused with a clear message before anything is sent.
    await page.get_by_test_id("segment-broadcast").click()
    await page.get_by_test_id("composer").wait_for()
    await page.get_by_test_id("bc-audience").filter(has_text="5").wait_for()
    await page.get_by_test_id("bc-name").fill("双十一预热")
    for box in await page.get_by_test_id("bc-inbox").all():
        await box.check()
    await page.get_by_test_id("bc-template").fill("你好 {{nickname}}")
    await page.get_by_test_id("bc-preview-btn").click()
    await page.get_by_test_id("compose-error").filter(has_text="unknown variable {{nickname}}").wait_for()
    await page.get_by_test_id("bc-template").fill("你好 {{name | 朋友}}，{{attributes.city | 上海}}见")
    await page.get_by_test_id("bc-sample").select_option(label="王小明")
    await page.get_by_test_id("bc-preview-btn").click()
    card = page.get_by_test_id("pv-card").first
    await card.get_by_test_id("pv-text").filter(has_text="你好 王小明，北京见").wait_for()
    await card.get_by_test_id("pv-eligible").wait_for()
    await tab.shot("21-broadcast-compose-preview")

    # Send now -> the progress view refreshes by itself until the scheduler marks it completed.
    await page.get_by_test_id("bc-send").click()
    await page.get_by_test_id("report").wait_for()
    await page.locator('[data-testid="report-status"][data-status="completed"]').wait_for(timeout=20000)
    stat = lambda k: page.get_by_test_id("stat-" + k).get_attribute("data-value")  # noqa: E731
    assert (await stat("targeted"), await stat("sent"), await stat("skipped"), await stat("failed")) == ("5", "4", "1", "0")
    assert await page.get_by_test_id("report-progress").inner_text() == "100%"
    assert await page.locator('[data-testid="skipped-reasons"] tr[data-reason="opted_out"]').count() == 1
    await tab.shot("22-broadcast-report-done")

    api_texts = sorted(r["message"]["text"] for r in callback_server.received)
    assert api_texts == sorted(["你好 王小明，北京见", "你好 李娜，上海见", "你好 <img src=x onerror=alert(1)>Eve，上海见"])
    assert [m.text for m in MemoryChannelAdapter.sent[setup["sim"].id]] == ["你好 张伟，上海见"]  # 赵敏 opted out

    href = await page.get_by_test_id("report-csv").get_attribute("href")
    resp = await page.request.get(tab.base + href)
    rows = list(csv.DictReader(io.StringIO((await resp.body()).decode("utf-8-sig"))))
    assert sorted((r["name"], r["status"], r["reason"]) for r in rows) == sorted([
        ("王小明", "sent", ""), ("李娜", "sent", ""), ("<img src=x onerror=alert(1)>Eve", "sent", ""),
        ("张伟", "sent", ""), ("赵敏", "skipped", "opted_out")])

    await page.get_by_test_id("nav-broadcasts").click()
    row = page.locator('[data-testid="broadcast-row"][data-status="completed"]').filter(has_text="双十一预热")
    await row.wait_for()
    assert "4/5" in await row.inner_text()
    await page.get_by_test_id("lang").select_option("zh")  # Chinese is first-class
    await page.get_by_test_id("nav-broadcasts").filter(has_text="群发").wait_for()
    await page.get_by_test_id("broadcast-row").get_by_test_id("status").filter(has_text="已完成").wait_for()
    await tab.shot("27-broadcasts-list-zh")
    assert tab.dialogs == [] and tab.errors == []


async def test_pause_holds_deliveries_and_resume_sends_them(tab, ctx, live_server, callback_server):
    api = await make_inbox(ctx, settings={"callback_url": callback_server.url})
    for i in range(20):
        await make_contact(ctx, name=f"客户{i}", tags=("vip",), identities=[(api, f"u{i}", {})])
    async with ctx.db.transaction() as s:
        sg = Segment(name="VIP", rules={"op": "and", "rules": [{"field": "tag", "operator": "has", "value": "vip"}]})
        s.add(sg)
        await s.flush()
        s.add(Broadcast(name="暂停测试", status="draft", segment_id=sg.id, rules={}, inbox_ids=[api.id],
                        template="Hi {{name}}", reply_window_days=3))
    await make_agent(ctx, "mkt", "marketer")
    callback_server.delay = 1.0  # a slow receiver: the broadcast is still running when we pause it
    page = tab.page
    await tab.login("mkt", "password-123")
    await tab.goto("/broadcasts")
    await page.get_by_test_id("broadcast-link").filter(has_text="暂停测试").click()
    await page.get_by_test_id("bc-send").click()
    await page.get_by_test_id("broadcast-pause").click()
    await page.locator('[data-testid="report-status"][data-status="paused"]').wait_for()
    # Deliveries already handed to the worker finish (at 1 s each through its send slots) and the
    # progress shows them; the held ones stay held.
    held = sent = 0
    for _ in range(40):
        await page.wait_for_timeout(250)
        held = int(await page.get_by_test_id("stat-paused").get_attribute("data-value") or 0)
        sent = int(await page.get_by_test_id("stat-sent").get_attribute("data-value") or 0)
        if held + sent == 20:
            break
    assert held > 0 and held + sent == 20
    await page.wait_for_timeout(1500)  # and nothing more goes out while paused
    assert int(await page.get_by_test_id("stat-sent").get_attribute("data-value") or 0) == sent
    assert len(callback_server.received) == sent
    await tab.shot("26-broadcast-paused")
    await page.get_by_test_id("broadcast-resume").click()
    await page.locator('[data-testid="report-status"][data-status="completed"]').wait_for(timeout=30000)
    assert await page.get_by_test_id("stat-sent").get_attribute("data-value") == "20"
    assert len({r["message"]["text"] for r in callback_server.received}) == len(callback_server.received) == 20
    assert tab.errors == []


async def test_contacts_import_dry_run_errors_and_merge(tab, ctx, live_server, tmp_path):
    async with ctx.db.transaction() as s:
        s.add(AttributeDefinition(key="spend", label="消费", type="number", choices=[]))
    await make_agent(ctx, "mkt", "marketer")
    page = tab.page
    await tab.login("mkt", "password-123")
    await page.get_by_test_id("contacts-table").wait_for()
    csv_path = tmp_path / "客户.csv"
    csv_path.write_bytes("姓名,邮箱,spend,标签\n王五,wang5@example.com,1200,vip\n坏行,not-an-email,abc,\n"
                         "赵六,zhao6@example.com,30,\n".encode("gb18030"))  # as Excel on Chinese Windows saves it
    await page.get_by_test_id("import-open").click()
    await page.get_by_test_id("import-file").set_input_files(str(csv_path))
    assert await page.get_by_test_id("map-姓名").input_value() == "name"
    assert await page.get_by_test_id("map-spend").input_value() == "attributes.spend"
    await page.get_by_test_id("import-dry-run").click()
    await page.get_by_test_id("import-summary").filter(has_text="Dry run").wait_for()
    err = page.get_by_test_id("import-error-row")
    assert await err.count() == 1
    assert (await err.locator("td").first.inner_text()) == "3"  # the line number in the file
    assert await page.get_by_test_id("contact-row").count() == 0  # a dry run writes nothing
    await tab.shot("23-contacts-import-dry-run")
    await page.get_by_test_id("import-run").click()
    await page.get_by_test_id("import-summary").filter(has_text="2 created").wait_for()
    await page.locator('[data-testid="contact-row"]').nth(1).wait_for()
    assert await page.get_by_test_id("contact-row").count() == 2

    # A duplicate with a verified email shows up as a suggestion; merging keeps the older contact.
    dup = await make_contact(ctx, name="王五 (微信)", email="WANG5@example.com", attributes={"email_verified": True})
    await page.get_by_test_id("contacts-search").fill("王五")
    await page.get_by_test_id("contact-row").nth(1).wait_for()
    await page.get_by_test_id("contact-link").filter(has_text="王五 (微信)").click()
    await page.get_by_test_id("profile-name").filter(has_text="王五 (微信)").wait_for()
    await page.get_by_test_id("profile-tags").fill("微信用户，  vip")
    await page.get_by_test_id("profile-tags-save").click()
    await page.get_by_test_id("toast").filter(has_text="Saved").wait_for()
    assert await page.get_by_test_id("profile-tags").input_value() == "vip, 微信用户"
    suggestion = page.get_by_test_id("merge-suggestion")
    await suggestion.wait_for()
    await suggestion.get_by_test_id("merge-start").click()
    await page.get_by_test_id("merge-swap").click()  # the other way round, then back: the older one survives
    await page.get_by_test_id("merge-box").filter(has_text=f"into #{dup}").wait_for()
    await page.get_by_test_id("merge-swap").click()
    await page.get_by_test_id("merge-box").filter(has_text="surviving contact").wait_for()
    await tab.shot("24-contact-merge")
    await page.get_by_test_id("merge-confirm").click()
    await page.get_by_test_id("merged-notice").wait_for()  # this profile (the newer one) was merged away
    async with ctx.db.session() as s:
        merged = await s.get(Contact, dup)
        assert merged is not None and merged.merged_into_id is not None
        tags = set((await s.scalars(select(ContactTag.tag).where(ContactTag.contact_id == merged.merged_into_id))).all())
    assert tags == {"vip", "微信用户"}  # the imported tag and the merged contact's tags
    assert tab.dialogs == [] and tab.errors == []


async def test_agent_sees_no_marketing_pages(tab, ctx, live_server):
    await make_agent(ctx, "ag", "agent")
    await tab.login("ag", "password-123")
    nav = tab.page.locator("nav.nav")
    await nav.locator('a[data-nav="inbox"]').wait_for()
    for name in ("contacts", "segments", "broadcasts"):
        assert await tab.page.get_by_test_id("nav-" + name).count() == 0
    await tab.goto("/broadcasts")
    await tab.page.get_by_test_id("forbidden").wait_for()
    assert await tab.page.get_by_test_id("broadcasts-table").count() == 0
    await tab.shot("25-agent-no-marketing")
    assert tab.errors == []
