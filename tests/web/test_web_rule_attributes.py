"""A rule's "customer attribute equals" condition is edited in the rule form (not only through the API), with
the value stored as the attribute's type stores it, so the rule matches the customers it names."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from scrm.db.models_desk import AutomationRule
from scrm.db.models_marketing import AttributeDefinition

pytestmark = pytest.mark.browser


async def test_admin_adds_attribute_conditions_in_the_rule_form(tab, ctx, admin, live_server):
    async with ctx.db.transaction() as s:
        s.add(AttributeDefinition(key="vip_level", label="会员等级", type="choice", choices=["gold", "silver"]))
        s.add(AttributeDefinition(key="orders", label="订单数", type="number", choices=[]))
    await tab.login("root", "correct-horse-1")
    await tab.goto("/desk-settings/rules")
    page = tab.page
    await page.get_by_test_id("rule-new").click()
    await page.get_by_test_id("rule-name").fill("金卡客户优先")
    await page.get_by_test_id("rule-cond-attr-add").click()
    await page.get_by_test_id("rule-cond-attr-key").nth(0).select_option("vip_level")
    await page.get_by_test_id("rule-cond-attr-value").nth(0).select_option("gold")
    await page.get_by_test_id("rule-cond-attr-add").click()
    await page.get_by_test_id("rule-cond-attr-key").nth(1).select_option("orders")
    await page.get_by_test_id("rule-cond-attr-value").nth(1).fill("100")
    await page.get_by_test_id("rule-action-value").fill("vip")
    await page.get_by_test_id("rule-save").click()
    await page.get_by_test_id("rule-row").filter(has_text="金卡客户优先").wait_for()

    async with ctx.db.session() as s:
        rule = (await s.scalars(select(AutomationRule))).one()
    assert rule.conditions["contact_attributes"] == {"vip_level": "gold", "orders": 100}  # a number, not "100"

    # Editing shows the saved conditions; removing one and saving drops it.
    await page.get_by_test_id("rule-row").filter(has_text="金卡客户优先").get_by_role("button").first.click()
    rows = page.get_by_test_id("rule-cond-attr")
    await rows.nth(1).wait_for()
    assert await page.get_by_test_id("rule-cond-attr-value").nth(1).input_value() == "100"
    await rows.nth(1).get_by_role("button").click()
    await page.get_by_test_id("rule-save").click()
    await page.wait_for_function("() => !document.querySelector('[data-testid=rule-form]')")
    async with ctx.db.session() as s:
        rule = (await s.scalars(select(AutomationRule))).one()
    assert rule.conditions["contact_attributes"] == {"vip_level": "gold"}
    assert tab.errors == []


async def test_rule_api_types_attribute_values_and_refuses_unknown_ones(client, ctx, admin_headers):
    async with ctx.db.transaction() as s:
        s.add(AttributeDefinition(key="orders", label="订单数", type="number", choices=[]))
    base = {"name": "r", "event": "message.created", "actions": [{"type": "add_label", "label": "x"}]}
    r = await client.post("/api/v1/desk/rules", json={**base, "conditions": {"contact_attributes": {"orders": "12"}}},
                          headers=admin_headers)
    assert r.status in (200, 201), await r.text()
    async with ctx.db.session() as s:
        assert (await s.scalars(select(AutomationRule))).one().conditions["contact_attributes"] == {"orders": 12}
    r = await client.post("/api/v1/desk/rules", json={**base, "conditions": {"contact_attributes": {"nope": "1"}}},
                          headers=admin_headers)
    assert r.status == 400 and "nope" in (await r.json())["error"]["message"]
    r = await client.post("/api/v1/desk/rules", json={**base, "conditions": {"contact_attributes": {"orders": "many"}}},
                          headers=admin_headers)
    assert r.status == 400 and "expected a number" in (await r.json())["error"]["message"]
