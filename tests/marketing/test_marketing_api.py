"""The marketing REST API: roles, segments preview, broadcast lifecycle with pause/resume, report, CSV."""

from __future__ import annotations

import csv
import io

from sqlalchemy import func, select

from scrm.db.models import Delivery
from scrm.delivery.worker import OutboxWorker
from tests.conftest import login, make_agent, make_inbox
from tests.marketing.helpers_marketing import make_contact

VIP = {"op": "and", "rules": [{"field": "tag", "operator": "has", "value": "vip"}]}


async def _marketer(ctx, client):
    await make_agent(ctx, "mkt", "marketer")
    client.session.cookie_jar.clear()  # one session per client: log the previous agent out
    return await login(client, "mkt", "password-123")


async def test_roles(ctx, client):
    await make_agent(ctx, "ag", "agent")
    agent_headers = await login(client, "ag", "password-123")
    resp = await client.post("/api/v1/segments/preview", json={"rules": VIP}, headers=agent_headers)
    assert resp.status == 403
    m = await _marketer(ctx, client)
    resp = await client.post("/api/v1/attribute-definitions", json={"key": "city", "label": "城市", "type": "text"},
                             headers=m)
    assert resp.status == 403  # only admins define attributes


async def test_attribute_definitions_and_validation(ctx, client, admin_headers):
    h = admin_headers
    r = await client.post("/api/v1/attribute-definitions", json={"key": "level", "label": "等级", "type": "choice",
                                                                 "choices": ["gold", "silver"]}, headers=h)
    assert r.status == 201
    bad = await client.post("/api/v1/attribute-definitions", json={"key": "x", "label": "X", "type": "colour"},
                            headers=h)
    assert bad.status == 400 and "text, number, date, choice" in (await bad.json())["error"]["message"]
    await client.post("/api/v1/attribute-definitions", json={"key": "spend", "label": "S", "type": "number"}, headers=h)
    cid = await make_contact(ctx, name="王五")
    r = await client.put(f"/api/v1/contacts/{cid}/attributes", json={"attributes": {"spend": "1,200", "level": "gold"}},
                         headers=h)
    assert r.status == 200 and (await r.json())["attributes"] == {"spend": 1200, "level": "gold"}
    r = await client.put(f"/api/v1/contacts/{cid}/attributes", json={"attributes": {"spend": "lots", "nope": 1}},
                         headers=h)
    msg = (await r.json())["error"]["message"]
    assert r.status == 400 and "spend: expected a number" in msg and "nope: no such attribute" in msg
    tl = await (await client.get(f"/api/v1/contacts/{cid}/timeline", headers=h)).json()
    assert tl["items"][0]["type"] == "change" and tl["items"][0]["data"]["changes"]["spend"]["to"] == 1200


async def test_broadcast_lifecycle_with_pause_and_resume(ctx, client, callback_server):
    m = await _marketer(ctx, client)
    inbox = await make_inbox(ctx, settings={"callback_url": callback_server.url})
    for i in range(6):
        await make_contact(ctx, name=f"客户{i}", tags=("vip",), identities=[(inbox, f"u{i}", {})])
    me = await make_contact(ctx, name="Marketer Me", identities=[(inbox, "me", {})])
    r = await client.post("/api/v1/segments/preview", json={"rules": VIP}, headers=m)
    assert (await r.json())["count"] == 6
    r = await client.post("/api/v1/segments", json={"name": "VIP", "rules": VIP}, headers=m)
    sid = (await r.json())["id"]
    bad = await client.post("/api/v1/broadcasts", json={"name": "b", "segment_id": sid, "inbox_ids": [inbox.id],
                                                        "template": "Hi {{nickname}}"}, headers=m)
    assert bad.status == 400 and "unknown variable {{nickname}}" in (await bad.json())["error"]["message"]
    bad = await client.post("/api/v1/broadcasts", json={"name": "b", "segment_id": sid, "inbox_ids": [inbox.id],
                                                        "template": "Hi {{attributes.city}}"}, headers=m)
    assert bad.status == 400 and "no attribute 'city'" in (await bad.json())["error"]["message"]
    r = await client.post("/api/v1/broadcasts", json={"name": "b", "segment_id": sid, "inbox_ids": [inbox.id],
                                                      "template": "Hi {{name | there}}"}, headers=m)
    assert r.status == 201
    bid = (await r.json())["id"]
    pv = await (await client.post(f"/api/v1/broadcasts/{bid}/preview", json={"contact_id": me}, headers=m)).json()
    assert pv["channels"][0]["text"] == "Hi Marketer Me" and pv["channels"][0]["eligible"] is True
    r = await client.post(f"/api/v1/broadcasts/{bid}/test", json={"contact_id": me}, headers=m)
    assert r.status == 202
    await OutboxWorker(ctx).run_until_idle()
    assert [x["message"]["text"] for x in callback_server.received] == ["Hi Marketer Me"]

    assert (await client.post(f"/api/v1/broadcasts/{bid}/start", headers=m)).status == 202
    again = await client.post(f"/api/v1/broadcasts/{bid}/start", headers=m)
    assert again.status == 409  # never materialized twice
    r = await client.post(f"/api/v1/broadcasts/{bid}/pause", headers=m)
    assert (await r.json())["deliveries"] == 6
    assert await OutboxWorker(ctx).run_until_idle() == 0  # paused deliveries are not claimed
    rep = await (await client.get(f"/api/v1/broadcasts/{bid}/report", headers=m)).json()
    assert rep["paused"] == 6 and rep["sent"] == 0
    assert (await client.post(f"/api/v1/broadcasts/{bid}/resume", headers=m)).status == 200
    assert await OutboxWorker(ctx).run_until_idle() == 6
    rep = await (await client.get(f"/api/v1/broadcasts/{bid}/report", headers=m)).json()
    assert (rep["targeted"], rep["sent"], rep["skipped"], rep["progress"]) == (6, 6, 0, 1.0)
    assert sorted(x["message"]["text"] for x in callback_server.received[1:]) == sorted(f"Hi 客户{i}" for i in range(6))
    r = await client.get(f"/api/v1/broadcasts/{bid}/recipients.csv", headers=m)
    rows = list(csv.DictReader(io.StringIO((await r.read()).decode("utf-8-sig"))))
    assert len(rows) == 6 and {x["status"] for x in rows} == {"sent"} and rows[0]["name"].startswith("客户")
    async with ctx.db.session() as s:
        assert await s.scalar(select(func.count()).select_from(Delivery).where(Delivery.kind == "broadcast")) == 7


async def test_empty_segment_and_cancel(ctx, client, callback_server):
    m = await _marketer(ctx, client)
    inbox = await make_inbox(ctx, settings={"callback_url": callback_server.url})
    r = await client.post("/api/v1/broadcasts", json={"name": "b", "rules": VIP, "inbox_ids": [inbox.id],
                                                      "template": "x"}, headers=m)
    bid = (await r.json())["id"]
    r = await client.post(f"/api/v1/broadcasts/{bid}/start", headers=m)
    assert r.status == 400 and "no members" in (await r.json())["error"]["message"]
    await make_contact(ctx, tags=("vip",), identities=[(inbox, "u1", {})])
    assert (await client.post(f"/api/v1/broadcasts/{bid}/start", headers=m)).status == 202
    r = await client.post(f"/api/v1/broadcasts/{bid}/cancel", headers=m)
    assert (await r.json())["status"] == "cancelled"
    assert await OutboxWorker(ctx).run_until_idle() == 0
    rep = await (await client.get(f"/api/v1/broadcasts/{bid}/report", headers=m)).json()
    assert rep["cancelled"] == 1 and callback_server.received == []
