"""Automation rules: event + conditions + actions, run in order, logged per conversation.

Rules cannot loop: every event caused by a rule's actions carries the chain of rule ids that led to
it (`automation_chain`), a rule never runs on an event it caused itself, and chains stop after
MAX_CHAIN rules. Saving a rule rejects unknown fields, unknown targets and actions that would
retrigger the rule's own event.
"""

from __future__ import annotations

import logging
import time
import unicodedata
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from sqlalchemy import select, text

from scrm import events as ev
from scrm.db.models import Agent, Contact, ContactTag, Conversation, ConversationLabel, Inbox, Message, Ticket
from scrm.db.models_desk import AutomationLog, AutomationRule, Team, WebhookSubscription
from scrm.services.agents.inbox_access import agent_sees_inbox
from scrm.services.contacts import attributes
from scrm.services.conversations import actions as conv_svc
from scrm.services.conversations.turns import take_turn
from scrm.services.desk import assignment
from scrm.services.desk.settings import business_hours
from scrm.services.uow import Tx, unit_of_work

if TYPE_CHECKING:
    from scrm.context import AppContext

log = logging.getLogger("scrm.automation")
RULE_EVENTS = (
    "conversation.created", "message.created", "conversation.status_changed", "conversation.handler_changed",
    "conversation.assigned", "ticket.opened", "ticket.updated", "sla.warning", "sla.breached",
)
MAX_CHAIN = 3
CHAIN_KEY = "automation_chain"
Priority = Literal["low", "normal", "high", "urgent"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Conditions(_Strict):
    """All given conditions must hold; a list matches when any of its values does."""

    inbox_ids: list[int] | None = None
    channels: list[str] | None = None
    text_contains: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = None
    contact_tags: list[str] | None = None
    contact_attributes: dict[str, str | int | float | bool] | None = None
    priority: list[Priority] | None = None
    business_hours: Literal["open", "closed"] | None = None
    labels: list[str] | None = None
    direction: Literal["in", "out"] | None = None
    status: list[Literal["open", "pending", "snoozed", "resolved"]] | None = None
    sla_kind: list[Literal["first_response", "next_response", "resolution"]] | None = None


class AssignAgent(_Strict):
    type: Literal["assign_agent"]
    agent_id: int


class AssignTeam(_Strict):
    type: Literal["assign_team"]
    team_id: int


class AddLabel(_Strict):
    type: Literal["add_label"]
    label: str = Field(min_length=1, max_length=64)


class AddTag(_Strict):
    type: Literal["add_tag"]
    tag: str = Field(min_length=1, max_length=64)


class SetPriority(_Strict):
    type: Literal["set_priority"]
    priority: Priority


class SendMessage(_Strict):
    type: Literal["send_message"]
    text: str = Field(min_length=1, max_length=4000)


class SendCanned(_Strict):
    type: Literal["send_canned"]
    shortcut: str = Field(min_length=1, max_length=64)


class Handoff(_Strict):
    type: Literal["handoff"]
    to: Literal["bot", "queue"]


class OpenTicket(_Strict):
    type: Literal["open_ticket"]
    subject: str | None = Field(None, max_length=255)
    priority: Priority | None = None


class CallWebhook(_Strict):
    type: Literal["call_webhook"]
    webhook_id: int


Action = Annotated[
    AssignAgent | AssignTeam | AddLabel | AddTag | SetPriority | SendMessage | SendCanned | Handoff | OpenTicket
    | CallWebhook,
    Field(discriminator="type"),
]
# The events each action causes (what a rule must not be triggered by).
PRODUCES: dict[str, set[str]] = {
    "assign_agent": {"conversation.assigned"}, "assign_team": {"conversation.assigned"},
    "add_label": set(), "add_tag": set(), "set_priority": set(),
    "send_message": {"message.created"}, "send_canned": {"message.created"},
    "handoff": {"conversation.handler_changed", "message.created"}, "open_ticket": {"ticket.opened"},
    "call_webhook": set(),
}


class RuleIn(_Strict):
    name: str = Field(min_length=1, max_length=120)
    event: str
    conditions: Conditions = Field(default_factory=Conditions)
    actions: list[Action] = Field(min_length=1, max_length=20)
    position: int = Field(0, ge=0, le=100000)
    active: bool = True

    @model_validator(mode="after")
    def _check(self) -> RuleIn:
        if self.event not in RULE_EVENTS:
            raise ValueError(f"event must be one of {', '.join(RULE_EVENTS)}")
        kinds = [a.type for a in self.actions]
        for once in ("handoff", "set_priority", "open_ticket"):
            if kinds.count(once) > 1:
                raise ValueError(f"actions: {once} appears twice (the second would undo the first)")
        if "assign_agent" in kinds and "assign_team" in kinds or kinds.count("assign_agent") + kinds.count("assign_team") > 1:
            raise ValueError("actions: only one assign_agent or assign_team per rule")
        for action in self.actions:
            produced = PRODUCES[action.type]
            if self.event not in produced:
                continue
            if self.event == "message.created" and self.conditions.direction == "in":
                continue  # the rule reacts to customer messages; its own message is outgoing
            raise ValueError(
                f"circular rule: action {action.type} causes {self.event}, the event this rule runs on"
                + (" (add the condition direction: in)" if self.event == "message.created" else "")
            )
        return self


class RuleError(ValueError):
    """A rule cannot be saved; the message names the field."""


def parse_rule(data: Any) -> RuleIn:
    """Validate a rule body; raises RuleError with a readable message."""
    try:
        return RuleIn.model_validate(data)
    except ValidationError as exc:
        parts = []
        for e in exc.errors()[:5]:
            where = ".".join(str(p) for p in e["loc"])
            msg = e["msg"].removeprefix("Value error, ")
            parts.append(f"{where}: {msg}" if where else msg)
        raise RuleError("; ".join(parts)) from None


async def check_targets(tx: Tx, rule: RuleIn) -> None:
    """Referenced agents, teams, webhooks and contact attributes must exist; attribute values are stored as
    the attribute's type stores them ("100" for a number attribute becomes 100), or the rule never matches."""
    wanted = rule.conditions.contact_attributes
    if wanted:
        types = await attributes.attribute_types(tx.session)
        typed: dict[str, str | int | float | bool] = {}
        for key, value in wanted.items():
            if key not in types:
                raise RuleError(f"conditions.contact_attributes.{key}: no such attribute (define it first)")
            type_, choices = types[key]
            try:
                typed[key] = attributes.coerce(type_, value, choices, key=f"conditions.contact_attributes.{key}")
            except attributes.AttributeError_ as exc:
                raise RuleError(str(exc)) from None
        rule.conditions.contact_attributes = typed
    for i, a in enumerate(rule.actions):
        if isinstance(a, AssignAgent):
            agent = await tx.session.get(Agent, a.agent_id)
            if agent is None or not agent.active:
                raise RuleError(f"actions.{i}.agent_id: no active agent {a.agent_id}")
        elif isinstance(a, AssignTeam) and await tx.session.get(Team, a.team_id) is None:
            raise RuleError(f"actions.{i}.team_id: no team {a.team_id}")
        elif isinstance(a, CallWebhook) and await tx.session.get(WebhookSubscription, a.webhook_id) is None:
            raise RuleError(f"actions.{i}.webhook_id: no outgoing webhook {a.webhook_id}")


_rules_cache: dict[str, tuple[float, list[AutomationRule]]] = {}
_events_cache: tuple[float, frozenset[str]] | None = None


def invalidate_cache() -> None:
    """Rules changed (in this process; others see the change within RULES_TTL)."""
    global _events_cache
    _rules_cache.clear()
    _events_cache = None


RULES_TTL = 5.0


async def _rules_for(ctx: AppContext, name: str) -> list[AutomationRule]:
    hit = _rules_cache.get(name)
    if hit and hit[0] > time.monotonic():
        return hit[1]
    async with ctx.db.session() as s:
        rules = list((await s.scalars(select(AutomationRule).where(AutomationRule.event == name,
                                                                   AutomationRule.active.is_(True))
                                      .order_by(AutomationRule.position, AutomationRule.id))).all())
    _rules_cache[name] = (time.monotonic() + RULES_TTL, rules)
    return rules


async def rule_events(ctx: AppContext) -> frozenset[str]:
    """The events some active rule runs on, cached like the rules (whether to log an event: event_interest.py)."""
    global _events_cache
    if _events_cache and _events_cache[0] > time.monotonic():
        return _events_cache[1]
    async with ctx.db.session() as s:
        with s.no_autoflush:  # in a consumer's batch: its pending writes are not this read's to flush
            names = frozenset((await s.scalars(select(AutomationRule.event).where(AutomationRule.active.is_(True))
                                               .distinct())).all())
    _events_cache = (time.monotonic() + RULES_TTL, names)
    return names


async def wants(ctx: AppContext, name: str) -> bool:
    """Does any active rule listen to this event (cached like the rules)?"""
    return name in RULE_EVENTS and bool(await _rules_for(ctx, name))


def _norm(value: str) -> str:
    return unicodedata.normalize("NFKC", value).casefold()


async def matches(tx: Tx, cond: Conditions, event: ev.Event, conv: Conversation | None, inbox: Inbox | None) -> bool:
    """Evaluate a rule's conditions against the event and the current conversation."""
    data = event.data
    if cond.inbox_ids is not None and (inbox is None or inbox.id not in cond.inbox_ids):
        return False
    if cond.channels is not None and (inbox is None or inbox.channel_type not in cond.channels):
        return False
    if cond.priority is not None and (conv is None or conv.priority not in cond.priority):
        return False
    if cond.status is not None and (conv is None or conv.status not in cond.status):
        return False
    if cond.direction is not None and data.get("direction") != cond.direction:
        return False
    if cond.sla_kind is not None and data.get("kind") not in cond.sla_kind:
        return False
    if cond.business_hours is not None:
        is_open = (await business_hours(tx.session)).is_open(conv_svc.utcnow())
        if is_open != (cond.business_hours == "open"):
            return False
    if cond.text_contains is not None:
        msg = await tx.session.get(Message, data["message_id"]) if data.get("message_id") else None
        body = _norm(msg.text or "") if msg else ""
        if not any(_norm(t) in body for t in cond.text_contains):
            return False
    if cond.labels is not None:
        labels = set((await tx.session.scalars(select(ConversationLabel.label).where(
            ConversationLabel.conversation_id == (conv.id if conv else 0)))).all())
        if not labels & set(cond.labels):
            return False
    if cond.contact_tags is not None or cond.contact_attributes is not None:
        contact = await tx.session.get(Contact, conv.contact_id) if conv else None
        if contact is None:
            return False
        if cond.contact_tags is not None:
            tags = set((await tx.session.scalars(select(ContactTag.tag).where(ContactTag.contact_id == contact.id))).all())
            if not tags & set(cond.contact_tags):
                return False
        attrs = contact.attributes or {}
        if cond.contact_attributes and any(attrs.get(k) != v for k, v in cond.contact_attributes.items()):
            return False
    return True


async def _canned_text(tx: Tx, shortcut: str) -> str | None:
    """The canned response's text, or None when this build has no canned responses table."""
    bind = tx.session.bind
    if bind is not None and bind.dialect.name == "postgresql":
        exists = await tx.session.scalar(text("SELECT to_regclass('canned_responses') IS NOT NULL"))
    else:
        exists = await tx.session.scalar(text("SELECT count(*) FROM sqlite_master WHERE type='table' AND name='canned_responses'"))
    if not exists:
        return None
    return await tx.session.scalar(text("SELECT text FROM canned_responses WHERE shortcut = :s"), {"s": shortcut})


async def _send(tx: Tx, conv: Conversation, body: str) -> str:
    conv_obj, inbox, identity = await conv_svc.load(tx, conv.id)
    window = await conv_svc.reply_window_counted(tx, inbox, identity)
    if not window["open"]:
        return f"not sent: {window['reason']}"
    from scrm.services.outbox import enqueue_message

    await enqueue_message(tx, inbox=inbox, conversation=conv_obj, identity=identity, sender_kind="bot", text=body,
                          automatic=True)
    return "sent"


async def _open_ticket(tx: Tx, conv: Conversation, action: OpenTicket, rule: AutomationRule) -> str:
    from sqlalchemy import func

    existing = await tx.session.scalar(select(Ticket.id).where(Ticket.conversation_id == conv.id,
                                                               Ticket.status.in_(("new", "open", "pending"))))
    if existing:
        return f"ticket {existing} already open"
    subject = action.subject or conv.subject or conv.last_message_preview or f"Conversation {conv.id}"
    try:  # the ticket service (numbering) when this build has it
        from scrm.services.tickets import records as tickets  # type: ignore[attr-defined]

        opener = getattr(tickets, "open_from_conversation", None)
    except ImportError:
        opener = None
    if opener is not None:
        ticket = await opener(tx, conv.id, None, subject=subject, priority=action.priority or conv.priority)
    else:
        number = (await tx.session.scalar(select(func.max(Ticket.number))) or 1000) + 1
        ticket = Ticket(number=number, subject=subject[:255], status="new", priority=action.priority or conv.priority,
                        conversation_id=conv.id, contact_id=conv.contact_id, fields={"rule_id": rule.id})
        tx.session.add(ticket)
        await tx.session.flush()
        tx.emit(ev.TICKET_OPENED, ticket_id=ticket.id, number=ticket.number, conversation_id=conv.id,
                inbox_id=conv.inbox_id)
    return f"ticket #{ticket.number}"


async def run_action(ctx: AppContext, tx: Tx, action: Any, conv: Conversation, rule: AutomationRule,
                     event: ev.Event) -> str:
    """Perform one action inside the rule's transaction; returns what was done."""
    if isinstance(action, AssignAgent):
        agent = await tx.session.get(Agent, action.agent_id)
        if agent is None or not agent.active:
            return f"skipped: agent {action.agent_id} is not active"
        if not await agent_sees_inbox(tx.session, agent.id, agent.role, conv.inbox_id):
            return f"skipped: agent {action.agent_id} is not a member of the conversation's inbox"
        conv.assignee_id = agent.id
        tx.emit(ev.CONVERSATION_ASSIGNED, conversation_id=conv.id, assignee_id=agent.id, inbox_id=conv.inbox_id)
        return f"assigned to {agent.display_name}"
    if isinstance(action, AssignTeam):
        got = await assignment.assign_team(tx, conv, action.team_id)
        return f"assigned to agent {got}" if got else "team has no available agent"
    if isinstance(action, AddLabel):
        if await tx.session.get(ConversationLabel, (conv.id, action.label)) is None:
            tx.session.add(ConversationLabel(conversation_id=conv.id, label=action.label))
        tx.emit(ev.CONVERSATION_UPDATED, conversation_id=conv.id, inbox_id=conv.inbox_id)
        return f"label {action.label}"
    if isinstance(action, AddTag):
        if await tx.session.get(ContactTag, (conv.contact_id, action.tag)) is None:
            tx.session.add(ContactTag(contact_id=conv.contact_id, tag=action.tag))
        tx.emit(ev.CONTACT_UPDATED, contact_id=conv.contact_id)
        return f"tag {action.tag}"
    if isinstance(action, SetPriority):
        conv.priority = action.priority
        tx.emit(ev.CONVERSATION_UPDATED, conversation_id=conv.id, inbox_id=conv.inbox_id)
        return f"priority {action.priority}"
    if isinstance(action, SendMessage):
        return await _send(tx, conv, action.text)
    if isinstance(action, SendCanned):
        body = await _canned_text(tx, action.shortcut)
        return f"skipped: no canned response {action.shortcut!r}" if body is None else await _send(tx, conv, body)
    if isinstance(action, Handoff):
        await conv_svc.do_set_handler(tx, conv.id, None, action.to, reason=f"rule: {rule.name}")
        return f"handed to {action.to}"
    if isinstance(action, OpenTicket):
        return await _open_ticket(tx, conv, action, rule)
    if isinstance(action, CallWebhook):
        from scrm.services.desk.webhooks_out import enqueue_for_webhook

        ok = await enqueue_for_webhook(tx, action.webhook_id, event, extra={"rule_id": rule.id, "rule": rule.name})
        return "webhook queued" if ok else "skipped: webhook inactive"
    raise AssertionError(f"unknown action {action!r}")


async def _conversation_id(ctx: AppContext, event: ev.Event) -> int | None:
    cid = event.data.get("conversation_id")
    if cid is None and event.data.get("ticket_id"):
        async with ctx.db.session() as s:
            cid = await s.scalar(select(Ticket.conversation_id).where(Ticket.id == event.data["ticket_id"]))
    return int(cid) if cid is not None else None


async def run_rules(ctx: AppContext, event: ev.Event) -> list[int]:
    """Run every active rule for this event in order; returns the ids of the rules that acted."""
    chain = [int(x) for x in event.data.get(CHAIN_KEY) or []]
    if len(chain) >= MAX_CHAIN:
        return []
    rules = [r for r in await _rules_for(ctx, event.name) if r.id not in chain]
    if not rules:
        return []
    cid = await _conversation_id(ctx, event)
    if cid is None:
        return []
    ran = []
    for rule in rules:
        try:
            done = await _run_one(ctx, rule, event, cid, chain)
        except Exception as exc:  # noqa: BLE001 - one broken rule must not stop the others
            log.exception("automation rule %s failed", rule.id)
            async with unit_of_work(ctx) as tx:
                tx.session.add(AutomationLog(rule_id=rule.id, event_id=event.id, event=event.name, conversation_id=cid,
                                             actions=[], error=f"{type(exc).__name__}: {exc}"[:2000]))
            continue
        if done:
            ran.append(rule.id)
    return ran


async def _run_one(ctx: AppContext, rule: AutomationRule, event: ev.Event, cid: int, chain: list[int]) -> bool:
    async with unit_of_work(ctx) as tx:
        conv = await take_turn(tx, cid)
        if conv is None:
            return False
        inbox = await tx.session.get(Inbox, conv.inbox_id)
        cond = Conditions.model_validate(rule.conditions or {})
        if not await matches(tx, cond, event, conv, inbox):
            return False
        done = []
        for raw in rule.actions:
            parsed = _parse_action(raw)
            done.append({"type": parsed.type, "result": await run_action(ctx, tx, parsed, conv, rule, event)})
        tx.session.add(AutomationLog(rule_id=rule.id, event_id=event.id, event=event.name, conversation_id=cid,
                                     actions=done))
        # Mark what this rule caused so it (and a chain through it) cannot retrigger itself.
        for caused in tx.events:
            caused.data[CHAIN_KEY] = [*chain, rule.id]
    return True


class _ActionBox(_Strict):
    action: Action


def _parse_action(raw: dict[str, Any]) -> Any:
    return _ActionBox.model_validate({"action": raw}).action
