"""Click tracking (per-recipient short links that redirect only to the broadcast's own URLs) and the
conversion API (idempotent on the order id, attributed to the last touch within the window), ending in
the broadcast funnel reached -> clicked -> replied -> converted."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, update

from channels.memory import MemoryChannelAdapter
from scrm.context import AppContext
from scrm.db.models import Agent, Delivery, utcnow
from scrm.db.models_campaigns import Conversion, TrackedLink
from scrm.db.models_marketing import AttributeDefinition, BroadcastRecipient
from scrm.delivery.worker import OutboxWorker
from scrm.services.agents import accounts as agents
from scrm.services.marketing import broadcasts
from scrm.services.marketing.link_tracking import template_urls
from scrm.services.uow import unit_of_work
from tests.conftest import login, make_agent, make_inbox
from tests.marketing.helpers_marketing import make_contact

BASE = "https://crm.example.com"
SHORT = re.compile(re.escape(BASE) + r"/r/([A-Za-z0-9_\-]+)")


def test_only_urls_written_in_the_template_are_tracked() -> None:
    tpl = ("双十一：https://shop.example.com/sale?id=1。详情 https://shop.example.com/sale, "
           "个人页 {{attributes.site}} 退订 https://crm.example.com/unsubscribe/x")
    assert template_urls(tpl, BASE) == ["https://shop.example.com/sale?id=1", "https://shop.example.com/sale"]
    assert template_urls("没有链接 {{name}}") == []


async def _sent_broadcast(ctx: AppContext, template: str) -> tuple[int, dict[str, int], Any]:
    ctx.settings.server.public_url = BASE
    inbox = await make_inbox(ctx, "memory", name="模拟器")
    async with ctx.db.transaction() as s:
        s.add(AttributeDefinition(key="site", label="Site", type="text", choices=[]))
    ids = {
        "wang": await make_contact(ctx, name="王小明", tags=("vip",), attributes={"site": "https://evil.example/x"},
                                   identities=[(inbox, "m1", {})]),
        "li": await make_contact(ctx, name="李娜", tags=("vip",), identities=[(inbox, "m2", {})]),
    }
    MemoryChannelAdapter.sent.pop(inbox.id, None)
    async with unit_of_work(ctx) as tx:
        b = await broadcasts.save(tx, None, {
            "name": "双十一", "rules": {"op": "and", "rules": [{"field": "tag", "operator": "has", "value": "vip"}]},
            "inbox_ids": [inbox.id], "template": template})
        bid = b.id
    assert (await broadcasts.start(ctx, bid))["queued"] == 2
    assert await OutboxWorker(ctx).run_until_idle() == 2
    return bid, ids, inbox


async def test_links_become_per_recipient_short_links_that_redirect_only_to_the_broadcast_url(client, ctx):
    bid, ids, inbox = await _sent_broadcast(
        ctx, "{{name}}，双十一 https://shop.example.com/sale?id=1 主页 {{attributes.site | 无}}")
    texts = {m.recipient_id: m.text for m in MemoryChannelAdapter.sent[inbox.id]}
    assert "shop.example.com" not in texts["m1"] + texts["m2"]
    assert texts["m1"].endswith("主页 https://evil.example/x")  # a personalized value is not a tracked link
    tokens = {rid: SHORT.findall(text) for rid, text in texts.items()}
    assert len(tokens["m1"]) == len(tokens["m2"]) == 1 and tokens["m1"] != tokens["m2"]

    # The token names a stored row; whatever else the request carries, the redirect goes to that row's URL.
    token = tokens["m1"][0]
    for path in (f"/r/{token}", f"/r/{token}?url=https://evil.example/", f"/r/{token}?next=//evil.example"):
        resp = await client.get(path, allow_redirects=False)
        assert resp.status == 302 and resp.headers["Location"] == "https://shop.example.com/sale?id=1", path
    head = await client.head(f"/r/{token}", allow_redirects=False)
    assert head.status == 302  # a link checker's HEAD is answered but not counted below
    for bad in ("/r/unknown-token", "/r/https:%2F%2Fevil.example", "/r/" + "a" * 40, "/r/%3Cscript%3E"):
        resp = await client.get(bad, allow_redirects=False)
        assert resp.status == 404 and "Location" not in resp.headers, bad
        assert "<script" not in await resp.text()
    async with ctx.db.session() as s:
        link = await s.scalar(select(TrackedLink).where(TrackedLink.token == token))
        assert link.clicks == 3 and link.contact_id == ids["wang"] and link.first_clicked_at is not None
        assert await s.scalar(select(func.count()).select_from(TrackedLink)) == 2  # one per recipient and URL

    await make_agent(ctx, "mkt", "marketer")
    headers = await login(client, "mkt", "password-123")
    rep = await (await client.get(f"/api/v1/broadcasts/{bid}/report", headers=headers)).json()
    assert rep["funnel"] == {"reached": 2, "clicked": 1, "clicks": 3, "replied": 0, "converted": 0, "orders": 0,
                             "value": 0.0}


async def _token(ctx: AppContext, login_name: str) -> str:
    async with ctx.db.transaction() as s:
        agent = await s.scalar(select(Agent).where(Agent.login == login_name))
        _, raw = await agents.create_token(s, agent, "shop")
    return raw


async def test_conversions_are_idempotent_on_the_order_and_attributed_within_the_window(client, ctx):
    bid, ids, _ = await _sent_broadcast(ctx, "双十一 https://shop.example.com/sale")
    await make_agent(ctx, "mkt", "marketer")
    await make_agent(ctx, "ann", "agent")
    shop = {"Authorization": "Bearer " + await _token(ctx, "mkt")}
    order = {"order_id": "SO-1001", "contact": {"id": ids["wang"]}, "value": "199.90", "currency": "cny"}

    first = await client.post("/api/v1/conversions", json=order, headers=shop)
    assert first.status == 201, await first.text()
    body = await first.json()
    assert body["broadcast_id"] == bid and body["value"] == 199.9 and body["currency"] == "CNY"
    assert body["duplicate"] is False
    again = await client.post("/api/v1/conversions", json=order, headers=shop)
    assert again.status == 200 and (await again.json())["duplicate"] is True
    assert (await again.json())["id"] == body["id"]
    changed = await client.post("/api/v1/conversions", json=order | {"value": 299}, headers=shop)
    assert changed.status == 409 and (await changed.json())["error"]["code"] == "order_conflict"
    async with ctx.db.session() as s:
        assert await s.scalar(select(func.count()).select_from(Conversion)) == 1

    # Bad input: clear errors, nothing stored.
    for bad, status, code in (
        ({**order, "order_id": "SO-2", "contact": {"id": 999999}}, 404, "contact_not_found"),
        ({**order, "order_id": "SO-3", "contact": {}}, 400, "bad_contact"),
        ({**order, "order_id": "SO-4", "value": "-5"}, 400, "bad_value"),
        ({**order, "order_id": "SO-5", "value": "lots"}, 400, "bad_value"),
        ({**order, "order_id": "SO-6", "occurred_at": "2026-01-01T10:00:00"}, 400, "bad_time"),
        ({k: v for k, v in order.items() if k != "order_id"}, 400, "invalid_request"),
    ):
        resp = await client.post("/api/v1/conversions", json=bad, headers=shop)
        assert resp.status == status and (await resp.json())["error"]["code"] == code, (bad, await resp.text())
    # Role check like every API: a support agent's token may not report orders.
    refused = await client.post("/api/v1/conversions", json={**order, "order_id": "SO-7"},
                                headers={"Authorization": "Bearer " + await _token(ctx, "ann")})
    assert refused.status == 403

    # Li's broadcast went out 10 days ago: outside the 7-day window, the order is nobody's.
    async with ctx.db.transaction() as s:
        rid = await s.scalar(select(BroadcastRecipient.delivery_id).where(BroadcastRecipient.contact_id == ids["li"]))
        await s.execute(update(Delivery).where(Delivery.id == rid).values(sent_at=utcnow() - timedelta(days=10)))
    late = await client.post("/api/v1/conversions", json={"order_id": "SO-8", "contact": {"id": ids["li"]},
                                                          "value": 50}, headers=shop)
    assert late.status == 201 and (await late.json())["broadcast_id"] is None
    # An admin widens the window to 30 days: the next order of Li counts for the broadcast.
    admin_id = await make_agent(ctx, "boss", "admin")
    assert admin_id
    admin_headers = await login(client, "boss", "password-123")
    put = await client.put("/api/v1/marketing-settings", json={"settings": {"conversion_window_days": 30}},
                           headers=admin_headers)
    assert put.status == 200 and (await put.json())["conversion_window_days"] == 30
    bad = await client.put("/api/v1/marketing-settings", json={"settings": {"conversion_window_days": 0}},
                           headers=admin_headers)
    assert bad.status == 400 and "conversion_window_days" in (await bad.json())["error"]["message"]
    later = await client.post("/api/v1/conversions", json={"order_id": "SO-9", "contact": {"id": ids["li"]},
                                                           "value": 20.5}, headers=shop)
    assert (await later.json())["broadcast_id"] == bid

    rep = await (await client.get(f"/api/v1/broadcasts/{bid}/report", headers=admin_headers)).json()
    assert rep["funnel"]["reached"] == 2 and rep["funnel"]["converted"] == 2
    assert rep["funnel"]["orders"] == 2 and rep["funnel"]["value"] == 220.4
