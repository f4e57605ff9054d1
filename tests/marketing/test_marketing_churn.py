"""Churn warning: transparent rules with admin weights, explanations, a segment rule and the daily notice."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import select

from scrm.context import AppContext
from scrm.db.models import ContactIdentity, Conversation, Message, Ticket, utcnow
from scrm.db.models_campaigns import ChurnScore
from scrm.db.models_desk import CsatSurvey, DeskSetting
from scrm.db.models_desk_ui import Notification
from scrm.services.marketing.churn import RUN_KEY, Signals, explain, run_churn_daily
from scrm.services.marketing.settings import ChurnSettings, ChurnWeights
from tests.conftest import login, make_agent, make_inbox
from tests.marketing.helpers_marketing import make_contact


def test_the_score_is_the_sum_of_the_rules_met_with_their_numbers() -> None:
    now = utcnow()
    rules = ChurnSettings()
    sig = Signals(last_inbound_at=now - timedelta(days=45), recent_messages=0, earlier_messages=6,
                  waiting_since=now - timedelta(hours=30), worst_csat=1, open_tickets=3, opted_out=["wechat_oa"])
    score, reasons = explain(sig, rules, now)
    assert [(r["rule"], r["points"]) for r in reasons] == [
        ("silent", 35), ("fading", 20), ("unanswered", 15), ("low_csat", 20), ("open_tickets", 20), ("opted_out", 25)]
    assert score == 100  # capped
    assert reasons[0]["days"] == 45 and reasons[1] == {"rule": "fading", "points": 20, "recent": 0,
                                                            "earlier": 6, "period_days": 30}
    assert reasons[2]["hours"] == 30 and reasons[3]["rating"] == 1 and reasons[4]["count"] == 3
    # A happy, active customer scores 0 and has no reasons.
    assert explain(Signals(last_inbound_at=now, recent_messages=4, earlier_messages=2, worst_csat=5), rules, now) == (0, [])
    # Admin weights: a rule weighted 0 is not a reason at all.
    quiet = ChurnSettings(weights=ChurnWeights(silent=0, fading=50))
    score, reasons = explain(Signals(last_inbound_at=now - timedelta(days=45), earlier_messages=1), quiet, now)
    assert (score, [r["rule"] for r in reasons]) == (50, ["fading"])


async def _wrote(ctx: AppContext, contact_id: int, inbox_id: int, days_ago: list[float], waiting: bool = False) -> int:
    now = utcnow()
    async with ctx.db.transaction() as s:
        identity = await s.scalar(select(ContactIdentity).where(ContactIdentity.contact_id == contact_id))
        conv = Conversation(inbox_id=inbox_id, contact_id=contact_id, identity_id=identity.id, status="open",
                            waiting_since=now - timedelta(hours=48) if waiting else None,
                            created_at=now - timedelta(days=max(days_ago)))
        s.add(conv)
        await s.flush()
        for i, d in enumerate(days_ago):
            s.add(Message(conversation_id=conv.id, inbox_id=inbox_id, direction="in", sender_kind="contact",
                          text=f"消息 {i}", created_at=now - timedelta(days=d)))
        return conv.id


async def test_scores_explanations_segment_and_daily_notice(client, ctx):
    inbox = await make_inbox(ctx)
    fading = await make_contact(ctx, name="老客户", opt_outs={"broadcast:api": True}, identities=[(inbox, "u1", {})])
    busy = await make_contact(ctx, name="活跃客户", identities=[(inbox, "u2", {})])
    unhappy = await make_contact(ctx, name="不满意", identities=[(inbox, "u3", {})])
    await make_contact(ctx, name="从未说话", identities=[(inbox, "u4", {})])
    await _wrote(ctx, fading, inbox.id, [40, 45, 50])  # silent 40 days, 3 messages in the period before
    await _wrote(ctx, busy, inbox.id, [1, 2])
    conv = await _wrote(ctx, unhappy, inbox.id, [3], waiting=True)
    async with ctx.db.transaction() as s:
        s.add(Ticket(number=1001, subject="退款", status="open", contact_id=busy, conversation_id=None))
        s.add(CsatSurvey(conversation_id=conv, inbox_id=inbox.id, contact_id=unhappy, status="answered", rating=1,
                         asked_at=utcnow(), answered_at=utcnow()))
    mkt = await make_agent(ctx, "mkt", "marketer")
    support = await make_agent(ctx, "ann", "agent")
    h = await login(client, "mkt", "password-123")

    # One contact's score, explained, before any daily run.
    why = await (await client.get(f"/api/v1/contacts/{fading}/churn-risk", headers=h)).json()
    assert why["score"] == 80 and why["at_risk"] is True and why["threshold"] == 60
    assert [(r["rule"], r["points"]) for r in why["reasons"]] == [("silent", 35), ("fading", 20), ("opted_out", 25)]
    assert why["reasons"][0]["days"] == 40 and why["reasons"][2]["channels"] == ["api"]
    never = await (await client.get(f"/api/v1/contacts/{fading + 3}/churn-risk", headers=h)).json()
    assert never["score"] is None and never["reasons"] == []

    res = await (await client.post("/api/v1/churn-risk/recompute", headers=h)).json()
    assert res == {"scored": 3, "crossed": 1}
    listed = await (await client.get("/api/v1/churn-risk", headers=h)).json()
    assert [(i["name"], i["score"]) for i in listed["items"]] == [("老客户", 80)]
    everyone = await (await client.get("/api/v1/churn-risk?all=1", headers=h)).json()
    assert {i["name"]: [r["rule"] for r in i["reasons"]] for i in everyone["items"]} == {
        "老客户": ["silent", "fading", "opted_out"], "不满意": ["unanswered", "low_csat"], "活跃客户": ["open_tickets"]}

    # The marketer is told once about today's newly at-risk contacts; a support agent is not.
    async with ctx.db.session() as s:
        notes = (await s.scalars(select(Notification).where(Notification.kind == "churn_risk"))).all()
    assert [(n.agent_id, n.data["count"], n.data["contacts"][0]["name"]) for n in notes] == [(mkt, 1, "老客户")]
    assert support not in [n.agent_id for n in notes]
    mine = await (await client.get("/api/v1/notifications", headers=h)).json()
    assert [n["kind"] for n in mine["items"]] == ["churn_risk"]
    assert (await (await client.post("/api/v1/churn-risk/recompute", headers=h)).json())["crossed"] == 0

    # A segment rule on it.
    async def count(rule: dict) -> int:
        r = await client.post("/api/v1/segments/preview", headers=h, json={"rules": {"op": "and", "rules": [rule]}})
        assert r.status == 200, await r.text()
        return int((await r.json())["count"])

    assert await count({"field": "churn_risk", "operator": "at_risk"}) == 1
    assert await count({"field": "churn_risk", "operator": "gt", "value": 20}) == 2
    assert await count({"field": "churn_risk", "operator": "between", "value": [0, 20]}) == 1
    assert await count({"field": "churn_risk", "operator": "not_at_risk"}) == 3
    bad = await client.post("/api/v1/segments/preview", headers=h, json={"rules": {"op": "and", "rules": [
        {"field": "churn_risk", "operator": "gt", "value": 150}]}})
    assert bad.status == 400 and "0 to 100" in (await bad.json())["error"]["message"]

    # Admins change the weights: silence stops counting, the old customer drops under the threshold.
    assert (await client.put("/api/v1/marketing-settings", headers=h,
                             json={"settings": {"churn": {"weights": {"silent": 0}}}})).status == 403
    await make_agent(ctx, "boss", "admin")
    ah = await login(client, "boss", "password-123")
    put = await client.put("/api/v1/marketing-settings", headers=ah,
                           json={"settings": {"churn": {"weights": {"silent": 0}, "threshold": 50}}})
    assert put.status == 200 and (await put.json())["churn"]["weights"]["silent"] == 0
    why = await (await client.get(f"/api/v1/contacts/{fading}/churn-risk", headers=ah)).json()
    assert why["score"] == 45 and why["at_risk"] is False


async def test_the_daily_job_runs_once_a_day(ctx):
    inbox = await make_inbox(ctx)
    cid = await make_contact(ctx, name="老客户", identities=[(inbox, "u1", {})])
    await _wrote(ctx, cid, inbox.id, [40, 45])
    ctx.extras["churn_check_interval"] = 0.05
    stop = asyncio.Event()
    task = asyncio.create_task(run_churn_daily(ctx, stop))
    for _ in range(100):
        async with ctx.db.session() as s:
            if await s.get(DeskSetting, RUN_KEY) is not None:
                break
        await asyncio.sleep(0.05)
    async with ctx.db.session() as s:
        first = await s.get(ChurnScore, cid)
        assert first is not None and first.score == 55 and first.at_risk is False
        computed = first.computed_at
    await asyncio.sleep(0.3)  # several more checks: today is done, nothing runs again
    stop.set()
    await task
    async with ctx.db.session() as s:
        assert (await s.get(ChurnScore, cid)).computed_at == computed
        assert (await s.get(DeskSetting, RUN_KEY)).value["date"]
