"""Who sees an inbox (its member agents and teams), and what follows a change of it.

An assignee who loses an inbox (taken off its members, off a member team, or the team deleted) could no
longer open their own conversation: those conversations go back to the queue, unassigned, in the same
transaction, and the realtime hubs are told to re-read their sockets' visible inboxes."""

from __future__ import annotations

from sqlalchemy import delete, select

from scrm import events as ev
from scrm.db.models import Agent, Conversation, Inbox
from scrm.db.models_access import InboxAgent, InboxTeam
from scrm.db.models_desk import Team
from scrm.services.agents import audit, inbox_access
from scrm.services.uow import Tx

MEMBERS_CHANGED = "inbox.members_changed"  # realtime hubs re-read their sockets' visible inboxes


class MemberError(ValueError):
    """A member that does not exist."""


async def set_members(tx: Tx, by: int | None, inbox_id: int, agent_ids: list[int],
                      team_ids: list[int]) -> list[int] | None:
    """Replace the inbox's members; returns the conversations unassigned, None when there is no such inbox."""
    s = tx.session
    agent_ids, team_ids = sorted(set(agent_ids)), sorted(set(team_ids))
    if await s.get(Inbox, inbox_id, with_for_update=True) is None:
        return None
    found = set((await s.scalars(select(Agent.id).where(Agent.id.in_(agent_ids)))).all()) if agent_ids else set()
    if missing := [a for a in agent_ids if a not in found]:
        raise MemberError(f"no agent with id {missing[0]}")
    teams = set((await s.scalars(select(Team.id).where(Team.id.in_(team_ids)))).all()) if team_ids else set()
    if missing := [t for t in team_ids if t not in teams]:
        raise MemberError(f"no team with id {missing[0]}")
    await s.execute(delete(InboxAgent).where(InboxAgent.inbox_id == inbox_id))
    await s.execute(delete(InboxTeam).where(InboxTeam.inbox_id == inbox_id))
    s.add_all(InboxAgent(inbox_id=inbox_id, agent_id=a) for a in agent_ids)
    s.add_all(InboxTeam(inbox_id=inbox_id, team_id=t) for t in team_ids)
    await s.flush()
    lost = await requeue_unseen(tx, [inbox_id], by)
    audit.record(tx, by, "inbox.members", "inbox", inbox_id, agent_ids=agent_ids, team_ids=team_ids,
                 unassigned=lost)
    return lost


async def team_inboxes(tx: Tx, team_id: int) -> list[int]:
    """The inboxes a team is a member of (read before the team changes)."""
    return list((await tx.session.scalars(select(InboxTeam.inbox_id).where(InboxTeam.team_id == team_id))).all())


async def requeue_unseen(tx: Tx, inbox_ids: list[int], by: int | None) -> list[int]:
    """Unassign the open conversations of these inboxes whose assignee no longer sees them."""
    s = tx.session
    lost: list[int] = []
    for inbox_id in sorted(set(inbox_ids)):
        ids = (await s.scalars(
            select(Conversation.id).join(Agent, Agent.id == Conversation.assignee_id)
            .where(Conversation.inbox_id == inbox_id, Conversation.status != "resolved",
                   ~inbox_access.sees_inbox(inbox_id)).order_by(Conversation.id)
        )).all()
        for cid in ids:
            conv = await s.get(Conversation, cid)
            if conv is not None:
                conv.assignee_id = None
                tx.emit(ev.CONVERSATION_ASSIGNED, conversation_id=cid, assignee_id=None, inbox_id=inbox_id, by=by)
                tx.emit(ev.CONVERSATION_UPDATED, conversation_id=cid, inbox_id=inbox_id)
                lost.append(cid)
        tx.emit(MEMBERS_CHANGED, inbox_id=inbox_id)
    return lost
