"""Automation rules: every action, conditions, ordering and the log, no loops, validation on save."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, text

from scrm.context import AppContext
from scrm.db.models import ContactTag, Conversation, ConversationLabel, Message, Ticket, utcnow
from scrm.db.models_desk import AutomationLog, AutomationRule, WebhookDelivery, WebhookSubscription
from scrm.services.desk import automation
from scrm.services.desk.assignment import TeamIn, save_team
from scrm.services.uow import unit_of_work
from tests.conftest import make_agent, make_inbox
from tests.desk.conftest import conv, say


async def _rule(ctx: AppContext, event: str, actions: list[dict[str, Any]], conditions: dict[str, Any] | None = None,
                position: int = 0, validate: bool = True) -> int:
    body = {"name": f"r-{event}-{position}", "event": event, "actions": actions, "conditions": conditions or {},
            "position": position}
    if validate:
        rule_in = automation.parse_rule(body)
        body = rule_in.model_dump(mode="json")
        body["conditions"] = rule_in.conditions.model_dump(mode="json", exclude_none=True)
    async with ctx.db.transaction() as s:
        rule = AutomationRule(**body)
        s.add(rule)
        await s.flush()
    automation.invalidate_cache()
    return rule.id


async def _out_texts(ctx: AppContext, cid: int) -> list[str]:
    async with ctx.db.session() as s:
        return list((await s.scalars(select(Message.text).where(
            Message.conversation_id == cid, Message.direction == "out", Message.private.is_(False))
            .order_by(Message.id))).all())


async def test_actions_label_tag_priority_message_ticket(desk: AppContext) -> None:
    inbox = await make_inbox(desk)
    other = await make_inbox(desk, name="other")
    await _rule(desk, "message.created", [
        {"type": "add_label", "label": "退款"}, {"type": "add_tag", "tag": "refund"},
        {"type": "set_priority", "priority": "high"}, {"type": "send_message", "text": "已收到您的退款申请"},
        {"type": "open_ticket", "subject": "退款申请"},
    ], {"direction": "in", "text_contains": ["退款"], "inbox_ids": [inbox.id], "channels": ["api"]})
    cid = await say(desk, inbox, "我要退款！")
    c = await conv(desk, cid)
    async with desk.db.session() as s:
        labels = (await s.scalars(select(ConversationLabel.label).where(ConversationLabel.conversation_id == cid))).all()
        tags = (await s.scalars(select(ContactTag.tag).where(ContactTag.contact_id == c.contact_id))).all()
        ticket = (await s.scalars(select(Ticket).where(Ticket.conversation_id == cid))).one()
        log = (await s.scalars(select(AutomationLog).where(AutomationLog.conversation_id == cid))).all()
    assert list(labels) == ["退款"] and list(tags) == ["refund"] and c.priority == "high"
    assert await _out_texts(desk, cid) == ["已收到您的退款申请"]
    assert ticket.subject == "退款申请"
    assert len(log) == 1 and [a["type"] for a in log[0].actions] == [
        "add_label", "add_tag", "set_priority", "send_message", "open_ticket"]
    # Same words on another inbox: the inbox condition does not hold.
    other_cid = await say(desk, other, "我要退款", sender="x")
    assert (await conv(desk, other_cid)).priority == "normal"
    # A message without the keyword does nothing.
    await say(desk, inbox, "谢谢")
    assert await _out_texts(desk, cid) == ["已收到您的退款申请"]


async def test_actions_assign_team_agent_handoff_canned_webhook(desk: AppContext) -> None:
    a1, a2 = await make_agent(desk, "amy", "agent"), await make_agent(desk, "bob", "agent")
    async with unit_of_work(desk) as tx:
        team = await save_team(tx, TeamIn(name="VIP", members=[a2], auto_assign=False))
        hook = WebhookSubscription(name="crm", url="http://127.0.0.1:9/x", secret="s" * 32, events=["sla.breached"])
        tx.session.add(hook)
        await tx.session.flush()
        await tx.session.execute(text(
            "INSERT INTO canned_responses (shortcut, title, text, created_at, updated_at) "
            "VALUES ('hours', '营业时间', '我们的营业时间是 9:00-18:00', :now, :now)"), {"now": utcnow().replace(tzinfo=None)})
    inbox = await make_inbox(desk)
    await _rule(desk, "conversation.created", [{"type": "assign_team", "team_id": team.id}])
    await _rule(desk, "message.created", [{"type": "handoff", "to": "queue"}, {"type": "assign_agent", "agent_id": a1}],
                {"direction": "in", "text_contains": ["人工"]})
    await _rule(desk, "message.created", [{"type": "send_canned", "shortcut": "hours"},
                                          {"type": "send_canned", "shortcut": "missing"},
                                          {"type": "call_webhook", "webhook_id": hook.id}],
                {"direction": "in", "text_contains": ["几点"]}, position=1)
    cid = await say(desk, inbox, "你们几点上班")
    assert (await conv(desk, cid)).assignee_id == a2  # the team's only member
    assert await _out_texts(desk, cid) == ["我们的营业时间是 9:00-18:00"]
    async with desk.db.session() as s:
        log = (await s.scalars(select(AutomationLog).where(AutomationLog.conversation_id == cid)
                               .order_by(AutomationLog.id))).all()
        hooks = (await s.scalars(select(WebhookDelivery))).all()
    assert "skipped: no canned response 'missing'" in [a["result"] for a in log[-1].actions]
    assert len(hooks) == 1 and hooks[0].event == "automation.rule"
    assert hooks[0].payload["automation"]["rule_id"] == log[-1].rule_id
    await say(desk, inbox, "转人工")
    c = await conv(desk, cid)
    assert c.handler == "queue" and c.assignee_id == a1
    # hand back to the bot
    await _rule(desk, "message.created", [{"type": "handoff", "to": "bot"}], {"direction": "in", "text_contains": ["机器人"]})
    await say(desk, inbox, "给机器人吧")
    assert (await conv(desk, cid)).handler == "bot"


async def test_a_rule_does_not_retrigger_itself_or_loop_through_another(desk: AppContext) -> None:
    agent = await make_agent(desk, "amy", "agent")
    inbox = await make_inbox(desk)
    # Inserted without validation: it answers every message, including its own.
    selfish = await _rule(desk, "message.created", [{"type": "send_message", "text": "自动回复"}], validate=False)
    # A -> B -> A: a handoff assigns, an assignment hands off again.
    rule_a = await _rule(desk, "conversation.handler_changed", [{"type": "assign_agent", "agent_id": agent}])
    rule_b = await _rule(desk, "conversation.assigned", [{"type": "handoff", "to": "queue"}, {"type": "add_label", "label": "b"}])
    cid = await say(desk, inbox, "你好")
    assert await _out_texts(desk, cid) == ["自动回复"]  # once, not forever
    async with desk.db.session() as s:
        assert await s.scalar(select(func.count()).select_from(AutomationLog).where(AutomationLog.rule_id == selfish)) == 1
    async with unit_of_work(desk) as tx:
        from scrm.services.conversations import actions as conv_svc

        await conv_svc.do_set_handler(tx, cid, None, "human")
    from tests.desk.conftest import settle

    await settle(desk)
    async with desk.db.session() as s:
        counts = dict((await s.execute(select(AutomationLog.rule_id, func.count()).where(
            AutomationLog.conversation_id == cid).group_by(AutomationLog.rule_id))).all())
        c = await s.get(Conversation, cid)
    assert counts.get(rule_a) == 1 and counts.get(rule_b) == 1
    assert c is not None and c.assignee_id == agent


async def test_rules_are_validated_when_saved(client: Any, admin_headers: dict[str, str]) -> None:
    cases = [
        ({"event": "message.created", "actions": [{"type": "add_label", "label": "x"}], "conditions": {"colour": "red"}},
         "colour"),
        ({"event": "message.created", "actions": [{"type": "teleport"}]}, "teleport"),
        ({"event": "message.created", "actions": [{"type": "add_label", "label": "x", "extra": 1}]}, "extra"),
        ({"event": "message.exploded", "actions": [{"type": "add_label", "label": "x"}]}, "event must be one of"),
        ({"event": "message.created", "actions": [{"type": "send_message", "text": "hi"}]}, "circular"),
        ({"event": "conversation.assigned", "actions": [{"type": "assign_agent", "agent_id": 1}]}, "circular"),
        ({"event": "message.created", "actions": []}, "actions"),
        ({"event": "message.created", "conditions": {"business_hours": "sometimes"},
          "actions": [{"type": "add_label", "label": "x"}]}, "business_hours"),
        ({"event": "conversation.created", "actions": [{"type": "assign_agent", "agent_id": 999}]}, "no active agent 999"),
        ({"event": "conversation.created", "actions": [{"type": "handoff", "to": "bot"}, {"type": "handoff", "to": "queue"}]},
         "handoff appears twice"),
    ]
    for body, word in cases:
        resp = await client.post("/api/v1/desk/rules", json={"name": "r", **body}, headers=admin_headers)
        assert resp.status == 400, body
        assert word in (await resp.json())["error"]["message"], (word, await resp.json())
    ok_body = {"name": "欢迎", "event": "message.created", "conditions": {"direction": "in", "business_hours": "closed"},
               "actions": [{"type": "send_message", "text": "现在是非工作时间"}]}
    resp = await client.post("/api/v1/desk/rules", json=ok_body, headers=admin_headers)
    assert resp.status == 201, await resp.text()
    listed = await (await client.get("/api/v1/desk/rules", headers=admin_headers)).json()
    assert listed["rules"][0]["conditions"] == {"direction": "in", "business_hours": "closed"}
