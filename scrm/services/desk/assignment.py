"""Teams and automatic assignment: round robin among online agents, within a per-agent limit.

A conversation entering the queue goes to the next online member of its inbox's team (after the
one who got the previous conversation) who has fewer open conversations than the team's limit;
when nobody qualifies it stays unassigned in the queue.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Integer, bindparam, delete, func, or_, select

from scrm import events as ev
from scrm.db.database import shared_for
from scrm.db.models import Agent, Conversation
from scrm.db.models_desk import ConversationStats, Team, TeamMember
from scrm.services.agents.inbox_access import sees_inbox
from scrm.services.conversations.actions import add_system_note
from scrm.services.conversations.turns import wait_turn
from scrm.services.uow import Tx

OPEN_STATUSES = ("open", "pending", "snoozed")


class TeamIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=120)
    inbox_id: int | None = None
    auto_assign: bool = True
    max_open_per_agent: int = Field(10, ge=1, le=1000)
    reassign_on_offline: bool = False
    members: list[int] = Field(default_factory=list, max_length=500)


class AssignmentError(ValueError):
    """A team cannot be saved as given."""


async def save_team(tx: Tx, data: TeamIn, team_id: int | None = None) -> Team:
    """Create or update a team and its members (members must be active agents)."""
    members = sorted(set(data.members))
    if members:
        found = set((await tx.session.scalars(select(Agent.id).where(Agent.id.in_(members), Agent.active.is_(True)))).all())
        missing = [m for m in members if m not in found]
        if missing:
            raise AssignmentError(f"members: no active agent with id {missing[0]}")
    clash = await tx.session.scalar(select(Team.id).where(Team.name == data.name, Team.id != (team_id or 0)))
    if clash:
        raise AssignmentError(f"a team called {data.name!r} already exists")
    team = await tx.session.get(Team, team_id) if team_id else Team()
    if team is None:
        raise AssignmentError("team not found")
    for key in ("name", "inbox_id", "auto_assign", "max_open_per_agent", "reassign_on_offline"):
        setattr(team, key, getattr(data, key))
    tx.session.add(team)
    await tx.session.flush()
    await tx.session.execute(delete(TeamMember).where(TeamMember.team_id == team.id))
    tx.session.add_all(TeamMember(team_id=team.id, agent_id=a) for a in members)
    await tx.session.flush()
    return team


async def team_members(tx: Tx, team_id: int) -> list[int]:
    return list((await tx.session.scalars(select(TeamMember.agent_id).where(TeamMember.team_id == team_id)
                                          .order_by(TeamMember.agent_id))).all())


@functools.cache
def _team_for_inbox_statement() -> Any:
    """Built once (every handoff to the queue asks): building and hashing it cost more than running it."""
    inbox_id = bindparam("inbox_id", type_=Integer)
    return (select(Team).where(or_(Team.inbox_id == inbox_id, Team.inbox_id.is_(None)))
            .order_by(Team.inbox_id.is_(None), Team.id).limit(1))


# A consumer batch's fact: the team serving each inbox, by id (event_batch drops it if the batch writes the
# teams): a batch's handoffs on one inbox ask once.
TEAMS_FOR_INBOX = "teams_for_inbox"


async def team_for_inbox(tx: Tx, inbox_id: int) -> Team | None:
    """The team serving an inbox (an inbox-specific team first, else a team for every inbox)."""
    shared = shared_for(tx.session)
    known: dict[int, int | None] | None = None
    if shared is not None:
        known = shared.facts.setdefault(TEAMS_FOR_INBOX, {})
        if inbox_id in known:
            team_id = known[inbox_id]
            return None if team_id is None else await tx.session.get(Team, team_id)
    team = (await tx.session.scalars(_team_for_inbox_statement(), {"inbox_id": inbox_id})).first()
    if known is not None:
        known[inbox_id] = team.id if team is not None else None
    return team


async def open_counts(tx: Tx, agent_ids: Sequence[int]) -> dict[int, int]:
    """Open conversations per agent (one grouped query)."""
    if not agent_ids:
        return {}
    rows = await tx.session.execute(
        select(Conversation.assignee_id, func.count())
        .where(Conversation.assignee_id.in_(agent_ids), Conversation.status.in_(OPEN_STATUSES))
        .group_by(Conversation.assignee_id)
    )
    return {a: n for a, n in rows.all() if a is not None}  # IN already excludes NULL; for the type


def pick_round_robin(candidates: Sequence[int], last: int | None, counts: dict[int, int], limit: int) -> int | None:
    """The first candidate after `last` (in id order, wrapping) below the limit; None if all are full."""
    ordered = sorted(candidates)
    if not ordered:
        return None
    start = next((i for i, a in enumerate(ordered) if last is not None and a > last), 0)
    for offset in range(len(ordered)):
        agent = ordered[(start + offset) % len(ordered)]
        if counts.get(agent, 0) < limit:
            return agent
    return None


async def auto_assign(tx: Tx, conv: Conversation, *, exclude: Sequence[int] = ()) -> int | None:
    """Assign a queued conversation to the next online team member; returns the agent id or None."""
    if conv.assignee_id is not None or conv.status not in OPEN_STATUSES:
        return None
    team = await team_for_inbox(tx, conv.inbox_id)
    if team is None or not team.auto_assign:
        return None
    # Lock the team row: two conversations queued at once must not both go to the same "next" agent.
    team = await tx.session.get(Team, team.id, with_for_update=True, populate_existing=True)
    assert team is not None
    online = list((await tx.session.scalars(
        select(Agent.id).join(TeamMember, TeamMember.agent_id == Agent.id)
        .where(TeamMember.team_id == team.id, Agent.active.is_(True), Agent.availability == "online",
               sees_inbox(conv.inbox_id))
    )).all())
    online = [a for a in online if a not in exclude]
    agent_id = pick_round_robin(online, team.last_assigned_agent_id, await open_counts(tx, online),
                                team.max_open_per_agent)
    if agent_id is None:
        return None
    team.last_assigned_agent_id = agent_id
    conv.assignee_id = agent_id
    agent = await tx.session.get(Agent, agent_id)
    name = agent.display_name if agent else f"#{agent_id}"
    await add_system_note(tx, conv, f"已自动分配给 {name}（{team.name}） / Auto-assigned to {name} ({team.name})",
                          assignment={"agent_id": agent_id, "team_id": team.id, "auto": True})
    stats = await tx.session.get(ConversationStats, conv.id)
    if stats is not None:
        stats.team_id, stats.agent_id = team.id, agent_id
    tx.emit(ev.CONVERSATION_ASSIGNED, conversation_id=conv.id, assignee_id=agent_id, inbox_id=conv.inbox_id,
            team_id=team.id, auto=True)
    tx.emit(ev.CONVERSATION_UPDATED, conversation_id=conv.id, inbox_id=conv.inbox_id)
    return agent_id


async def assign_team(tx: Tx, conv: Conversation, team_id: int) -> int | None:
    """Automation's "assign to team": round robin within that team (ignores the inbox's team)."""
    team = await tx.session.get(Team, team_id, with_for_update=True)
    if team is None:
        raise AssignmentError(f"team {team_id} does not exist")
    online = list((await tx.session.scalars(
        select(Agent.id).join(TeamMember, TeamMember.agent_id == Agent.id)
        .where(TeamMember.team_id == team.id, Agent.active.is_(True), Agent.availability == "online",
               sees_inbox(conv.inbox_id))
    )).all())
    agent_id = pick_round_robin(online, team.last_assigned_agent_id, await open_counts(tx, online),
                                team.max_open_per_agent)
    stats = await tx.session.get(ConversationStats, conv.id)
    if stats is not None:
        stats.team_id = team.id
    if agent_id is None:
        return None
    team.last_assigned_agent_id = agent_id
    conv.assignee_id = agent_id
    if stats is not None:
        stats.agent_id = agent_id
    tx.emit(ev.CONVERSATION_ASSIGNED, conversation_id=conv.id, assignee_id=agent_id, inbox_id=conv.inbox_id,
            team_id=team.id)
    tx.emit(ev.CONVERSATION_UPDATED, conversation_id=conv.id, inbox_id=conv.inbox_id)
    return agent_id


async def reassign_from_offline(tx: Tx, agent_id: int) -> list[int]:
    """An agent went offline: their queued/open conversations go back to the team's round robin
    (only for teams with reassign_on_offline). Returns the conversation ids moved."""
    teams = list((await tx.session.scalars(
        select(Team).join(TeamMember, TeamMember.team_id == Team.id)
        .where(TeamMember.agent_id == agent_id, Team.reassign_on_offline.is_(True))
    )).all())
    if not teams:
        return []
    all_inboxes = any(t.inbox_id is None for t in teams)
    stmt = select(Conversation).where(Conversation.assignee_id == agent_id, Conversation.status == "open",
                                      Conversation.handler.in_(("queue", "human")))
    if not all_inboxes:
        stmt = stmt.where(Conversation.inbox_id.in_([t.inbox_id for t in teams]))
    moved = []
    await wait_turn(tx, (await tx.session.scalars(stmt.with_only_columns(Conversation.id))).all())
    for conv in (await tx.session.scalars(stmt.order_by(Conversation.id).with_for_update())).all():
        conv.assignee_id = None
        if conv.handler == "human":
            conv.handler = "queue"  # nobody is answering any more
            tx.emit(ev.CONVERSATION_HANDLER_CHANGED, conversation_id=conv.id, handler="queue", previous="human",
                    agent_id=None, inbox_id=conv.inbox_id)
        await add_system_note(tx, conv, "客服已离线，会话重新分配 / The agent went offline; reassigning",
                              assignment={"from_agent_id": agent_id, "offline": True})
        new = await auto_assign(tx, conv, exclude=[agent_id])
        if new is None:
            tx.emit(ev.CONVERSATION_ASSIGNED, conversation_id=conv.id, assignee_id=None, inbox_id=conv.inbox_id)
        moved.append(conv.id)
    return moved
