"""Inbox membership (admin): which agents and teams see an inbox. No members: every agent sees it."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import delete, select

from scrm import events as ev
from scrm.db.models import Agent, Conversation, Inbox
from scrm.db.models_access import InboxAgent, InboxTeam
from scrm.db.models_desk import Team
from scrm.services import audit, inbox_access
from scrm.services.agents import Principal
from scrm.services.uow import unit_of_work
from scrm.web.keys import CTX
from scrm.web.routing import ADMIN, ApiError, api, ok, path_int

MEMBERS_CHANGED = "inbox.members_changed"  # realtime hubs re-read their sockets' visible inboxes


class MembersIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    agent_ids: list[int] = Field(default_factory=list, max_length=1000)
    team_ids: list[int] = Field(default_factory=list, max_length=200)


@api("GET", "/inboxes/{id}/members", roles=ADMIN, tag="inboxes",
     summary="The agents and teams that see this inbox (both empty: every agent sees it)")
async def get_members(request: web.Request, principal: Principal) -> web.Response:
    inbox_id = path_int(request, "id")
    async with request.app[CTX].db.session() as s:
        if await s.get(Inbox, inbox_id) is None:
            raise ApiError(404, "inbox not found", "not_found")
        members = await inbox_access.inbox_members(s, inbox_id)
    return ok({**members, "open_to_all": not members["agent_ids"] and not members["team_ids"]})


@api("PUT", "/inboxes/{id}/members", roles=ADMIN, body=MembersIn, tag="inboxes",
     summary="Replace the inbox's member agents and teams; open conversations assigned to an agent who "
             "no longer sees the inbox are unassigned")
async def put_members(request: web.Request, principal: Principal, body: MembersIn) -> web.Response:
    inbox_id = path_int(request, "id")
    agent_ids, team_ids = sorted(set(body.agent_ids)), sorted(set(body.team_ids))
    async with unit_of_work(request.app[CTX]) as tx:
        s = tx.session
        if await s.get(Inbox, inbox_id, with_for_update=True) is None:
            raise ApiError(404, "inbox not found", "not_found")
        found = set((await s.scalars(select(Agent.id).where(Agent.id.in_(agent_ids)))).all()) if agent_ids else set()
        if missing := [a for a in agent_ids if a not in found]:
            raise ApiError(400, f"no agent with id {missing[0]}", "bad_member")
        teams = set((await s.scalars(select(Team.id).where(Team.id.in_(team_ids)))).all()) if team_ids else set()
        if missing := [t for t in team_ids if t not in teams]:
            raise ApiError(400, f"no team with id {missing[0]}", "bad_member")
        await s.execute(delete(InboxAgent).where(InboxAgent.inbox_id == inbox_id))
        await s.execute(delete(InboxTeam).where(InboxTeam.inbox_id == inbox_id))
        s.add_all(InboxAgent(inbox_id=inbox_id, agent_id=a) for a in agent_ids)
        s.add_all(InboxTeam(inbox_id=inbox_id, team_id=t) for t in team_ids)
        await s.flush()
        # An assignee who lost the inbox could no longer open their own conversation: put it back in the queue.
        lost = (await s.scalars(
            select(Conversation.id).join(Agent, Agent.id == Conversation.assignee_id)
            .where(Conversation.inbox_id == inbox_id, Conversation.status != "resolved", ~inbox_access.sees_inbox(inbox_id))
        )).all()
        for cid in lost:
            conv = await s.get(Conversation, cid)
            if conv is not None:
                conv.assignee_id = None
                tx.emit(ev.CONVERSATION_ASSIGNED, conversation_id=cid, assignee_id=None, inbox_id=inbox_id,
                        by=principal.agent_id)
                tx.emit(ev.CONVERSATION_UPDATED, conversation_id=cid, inbox_id=inbox_id)
        audit.record(tx, principal.agent_id, "inbox.members", "inbox", inbox_id, agent_ids=agent_ids,
                     team_ids=team_ids, unassigned=list(lost))
        tx.emit(MEMBERS_CHANGED, inbox_id=inbox_id)
        members = await inbox_access.inbox_members(s, inbox_id)
    return ok({**members, "open_to_all": not members["agent_ids"] and not members["team_ids"],
               "unassigned_conversations": list(lost)})
