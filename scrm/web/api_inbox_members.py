"""Inbox membership (admin): which agents and teams see an inbox. No members: every agent sees it."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from scrm.db.models import Inbox
from scrm.services.agents import inbox_access, inbox_members
from scrm.services.agents.accounts import Principal
from scrm.services.uow import unit_of_work
from scrm.web.keys import CTX
from scrm.web.routing import ADMIN, ApiError, api, ok, path_int


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
    try:
        async with unit_of_work(request.app[CTX]) as tx:
            lost = await inbox_members.set_members(tx, principal.agent_id, inbox_id, body.agent_ids, body.team_ids)
            if lost is None:
                raise ApiError(404, "inbox not found", "not_found")
            members = await inbox_access.inbox_members(tx.session, inbox_id)
    except inbox_members.MemberError as exc:
        raise ApiError(400, str(exc), "bad_member") from None
    return ok({**members, "open_to_all": not members["agent_ids"] and not members["team_ids"],
               "unassigned_conversations": list(lost)})
