"""SLA policies: due times in business hours, warning then breach events, compliance on resolve."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from scrm.context import AppContext
from scrm.db.models import Conversation, utcnow
from scrm.db.models_desk import ConversationStats, SlaPolicy
from scrm.events import Event
from scrm.services.conversations import actions as conv_svc
from scrm.services.desk import settings as desk_settings
from scrm.services.desk import sla
from scrm.services.uow import unit_of_work
from tests.conftest import login, make_agent, make_inbox
from tests.desk.conftest import say, settle

SH = ZoneInfo("Asia/Shanghai")


async def _policy(ctx: AppContext, **kw: Any) -> int:
    async with ctx.db.transaction() as s:
        p = SlaPolicy(**{"name": "std", "first_response_minutes": 60, "next_response_minutes": 30,
                         "resolution_minutes": 480, "warn_before_minutes": 10, "business_hours": True, **kw})
        s.add(p)
        await s.flush()
        return p.id


async def _stats(ctx: AppContext, cid: int) -> ConversationStats:
    async with ctx.db.session() as s:
        row = await s.get(ConversationStats, cid)
        assert row is not None
        return row


async def test_due_times_skip_weekend_and_holiday(desk: AppContext) -> None:
    async with unit_of_work(desk) as tx:
        await desk_settings.set_section(tx.session, "business_hours", {
            "timezone": "Asia/Shanghai", "weekly": {d: "09:00-18:00" for d in ("mon", "tue", "wed", "thu", "fri")},
            "holidays": ["2025-10-01", "2025-10-02", "2025-10-03"]})
    await _policy(desk, first_response_minutes=240, resolution_minutes=960)
    inbox = await make_inbox(desk)
    cid = await say(desk, inbox)
    start = datetime(2025, 9, 30, 16, 0, tzinfo=SH)  # Tuesday before the National Day holiday
    async with unit_of_work(desk) as tx:
        c = await tx.session.get(Conversation, cid)
        assert c is not None
        stats = await sla.ensure_stats(tx, c)
        await sla.start_clock(tx, c, stats, start)
    stats = await _stats(desk, cid)
    # 2 h on Tuesday; Wed-Fri holidays, weekend closed; 2 more hours on Monday Oct 6.
    assert stats.first_response_due == datetime(2025, 10, 6, 11, 0, tzinfo=SH)
    # 16 h: 2 (Tue) + 9 (Mon) + 5 (Tue Oct 7)
    assert stats.resolution_due == datetime(2025, 10, 7, 14, 0, tzinfo=SH)
    # Answered Monday 10:00: one business hour of waiting... plus Tuesday's two.
    async with unit_of_work(desk) as tx:
        s2 = await tx.session.get(ConversationStats, cid, with_for_update=True)
        assert s2 is not None
        await sla.on_agent_reply(tx, s2, datetime(2025, 10, 6, 10, 0, tzinfo=SH))
    stats = await _stats(desk, cid)
    assert stats.first_response_secs == 3 * 3600
    assert "first_response" not in stats.breached


async def test_warning_then_breach_events_and_inbox_state(desk: AppContext, client: Any, admin: dict[str, Any],
                                                           recorded: list[Event]) -> None:
    await _policy(desk, business_hours=False, priority="high")
    await _policy(desk, name="any", business_hours=False, first_response_minutes=600)
    inbox = await make_inbox(desk)
    cid = await say(desk, inbox, "我要投诉")
    async with unit_of_work(desk) as tx:
        await conv_svc.do_update(tx, cid, admin["id"], priority="high")
        await conv_svc.do_set_handler(tx, cid, None, "queue")
    await settle(desk)
    stats = await _stats(desk, cid)
    assert stats.sla_started_at is not None
    started = stats.sla_started_at
    assert stats.first_response_due == started + timedelta(minutes=60)  # the high-priority policy, not "any"

    assert await sla.check_due(desk, now=started + timedelta(minutes=30)) == 0
    assert await sla.check_due(desk, now=started + timedelta(minutes=51)) == 1
    assert await sla.check_due(desk, now=started + timedelta(minutes=52)) == 0  # warned once only
    assert await sla.check_due(desk, now=started + timedelta(minutes=61)) == 1
    await settle(desk)
    warnings = [e for e in recorded if e.name == "sla.warning"]
    breaches = [e for e in recorded if e.name == "sla.breached"]
    assert [(e.data["conversation_id"], e.data["kind"]) for e in warnings] == [(cid, "first_response")]
    assert [(e.data["conversation_id"], e.data["kind"]) for e in breaches] == [(cid, "first_response")]

    headers = await login(client, admin["login"], admin["password"])
    resp = await client.get(f"/api/v1/desk/sla/conversations?ids={cid}", headers=headers)
    body = await resp.json()
    assert body["conversations"][str(cid)]["state"] == "breached"
    assert body["conversations"][str(cid)]["breached"] == ["first_response"]

    async with unit_of_work(desk) as tx:
        await conv_svc.do_reply(tx, cid, admin["id"], "抱歉久等了")
    await settle(desk)
    async with unit_of_work(desk) as tx:
        await conv_svc.do_set_status(tx, cid, admin["id"], "resolved")
    await settle(desk)
    stats = await _stats(desk, cid)
    assert stats.first_response_secs is not None and stats.first_response_secs >= 0
    assert stats.sla_met is False and stats.resolved_at is not None


async def test_reply_in_time_meets_sla_and_next_response_clock(desk: AppContext, admin: dict[str, Any]) -> None:
    await _policy(desk, business_hours=False)
    inbox = await make_inbox(desk)
    cid = await say(desk, inbox)
    async with unit_of_work(desk) as tx:
        await conv_svc.do_set_handler(tx, cid, None, "queue")
    await settle(desk)
    async with unit_of_work(desk) as tx:
        await conv_svc.do_reply(tx, cid, admin["id"], "您好")
    await settle(desk)
    await say(desk, inbox, "还有一个问题")
    stats = await _stats(desk, cid)
    assert stats.first_response_at is not None
    assert stats.next_response_due is not None
    assert abs((stats.next_response_due - utcnow()) - timedelta(minutes=30)) < timedelta(minutes=1)
    async with unit_of_work(desk) as tx:
        await conv_svc.do_reply(tx, cid, admin["id"], "好的")
        await conv_svc.do_set_status(tx, cid, admin["id"], "resolved")
    await settle(desk)
    stats = await _stats(desk, cid)
    assert stats.next_response_due is None and stats.sla_met is True and stats.breached == []


async def test_bad_policies_are_rejected(client: Any, admin_headers: dict[str, str], ctx: AppContext) -> None:
    cases = [
        ({"name": "x", "first_response_minutes": 30, "colour": "red"}, "colour"),
        ({"name": "x"}, "at least one target"),
        ({"name": "x", "first_response_minutes": -5}, "first_response_minutes"),
        ({"name": "x", "first_response_minutes": 30, "warn_before_minutes": 45}, "warn_before_minutes"),
        ({"name": "x", "first_response_minutes": 60, "resolution_minutes": 30}, "resolution_minutes"),
        ({"name": "x", "first_response_minutes": 60, "priority": "critical"}, "priority"),
    ]
    for body, word in cases:
        resp = await client.post("/api/v1/desk/sla-policies", json=body, headers=admin_headers)
        assert resp.status == 400, body
        assert word in (await resp.json())["error"]["message"]
    resp = await client.put("/api/v1/desk/settings/business_hours", json={"weekly": {"mon": "09:00-25:00"}},
                            headers=admin_headers)
    assert resp.status == 400 and "invalid span" in (await resp.json())["error"]["message"]
    resp = await client.post("/api/v1/desk/sla-policies", headers=admin_headers,
                             json={"name": "vip", "priority": "urgent", "first_response_minutes": 15})
    assert resp.status == 201
    agent = await make_agent(ctx, "ann", "agent")
    assert agent
    client.session.cookie_jar.clear()
    agent_headers = await login(client, "ann", "password-123")
    resp = await client.post("/api/v1/desk/sla-policies", headers=agent_headers,
                             json={"name": "v2", "first_response_minutes": 15})
    assert resp.status == 403
