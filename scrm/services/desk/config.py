"""The rows admins configure the desk with: teams, SLA policies, automation rules, outgoing webhooks.

Each verb runs inside the caller's transaction. Caches of rules and webhooks are per process and are
dropped by the caller after the commit (`invalidate_caches`), so no process reads a rolled-back rule."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete

from scrm.db.models_desk import AutomationRule, SlaPolicy, Team, WebhookSubscription
from scrm.services.agents import inbox_members
from scrm.services.desk import assignment, automation, sla, webhooks_out
from scrm.services.uow import Tx

DELETABLE: dict[str, Any] = {"team": Team, "sla_policy": SlaPolicy, "rule": AutomationRule,
                             "webhook": WebhookSubscription}


def invalidate_caches() -> None:
    """Drop this process's cached rules and webhooks (call after a commit that changed them)."""
    automation.invalidate_cache()
    webhooks_out.invalidate_cache()


async def save_team(tx: Tx, by: int | None, data: assignment.TeamIn, team_id: int | None) -> Team:
    """Create or update a team; assignees who lost an inbox with it go back to the queue."""
    before = await inbox_members.team_inboxes(tx, team_id) if team_id else []
    team = await assignment.save_team(tx, data, team_id)
    await inbox_members.requeue_unseen(tx, before, by)
    tx.emit(inbox_members.MEMBERS_CHANGED, team_id=team.id)  # a team may give its members an inbox
    return team


async def delete_row(tx: Tx, by: int | None, kind: str, row_id: int) -> bool:
    """Delete a team, SLA policy, rule or webhook; False when there is no such row."""
    model = DELETABLE[kind]
    inboxes = await inbox_members.team_inboxes(tx, row_id) if model is Team else []
    res = await tx.session.execute(delete(model).where(model.id == row_id))
    if not res.rowcount:  # type: ignore[attr-defined]
        return False
    if inboxes:
        await tx.session.flush()
        await inbox_members.requeue_unseen(tx, inboxes, by)
    return True


async def save_sla_policy(tx: Tx, data: sla.SlaPolicyIn, policy_id: int | None) -> SlaPolicy | None:
    """Create or replace an SLA policy; None when `policy_id` names no policy."""
    policy = await tx.session.get(SlaPolicy, policy_id) if policy_id else SlaPolicy()
    if policy is None:
        return None
    for k, v in data.model_dump().items():
        setattr(policy, k, v)
    tx.session.add(policy)
    await tx.session.flush()
    return policy


async def save_rule(tx: Tx, data: automation.RuleIn, rule_id: int | None) -> AutomationRule | None:
    """Create or replace an automation rule after checking its targets (RuleError); None when missing."""
    await automation.check_targets(tx, data)
    rule = await tx.session.get(AutomationRule, rule_id) if rule_id else AutomationRule()
    if rule is None:
        return None
    values = data.model_dump(mode="json", exclude_none=False)
    values["conditions"] = data.conditions.model_dump(mode="json", exclude_none=True)
    for k, v in values.items():
        setattr(rule, k, v)
    tx.session.add(rule)
    await tx.session.flush()
    return rule


async def save_webhook(tx: Tx, data: webhooks_out.WebhookIn, hook_id: int | None) -> WebhookSubscription | None:
    """Create (with a new signing secret unless one is given) or update a webhook; None when missing."""
    if hook_id is None:
        hook = WebhookSubscription(name=data.name, url=data.url, events=data.events, active=data.active,
                                   secret=data.secret or webhooks_out.new_secret())
        tx.session.add(hook)
    else:
        found = await tx.session.get(WebhookSubscription, hook_id)
        if found is None:
            return None
        hook = found
        hook.name, hook.url, hook.events, hook.active = data.name, data.url, data.events, data.active
        if data.secret:
            hook.secret = data.secret
    await tx.session.flush()
    return hook
