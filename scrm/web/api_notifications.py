"""The agent's own notifications (assigned, replied, @mentions, SLA; churn warnings for marketers) and preferences (signature,
saved ticket filters, notification choices)."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from scrm.db.models_desk_ui import AgentPreference
from scrm.services.agents import preferences
from scrm.services.agents.accounts import Principal
from scrm.services.desk import notifications as svc
from scrm.services.uow import unit_of_work
from scrm.web.keys import CTX
from scrm.web.routing import ALL_ROLES, SUPPORT, ApiError, api, ok, query_int

TAG = "notifications"


@api("GET", "/notifications", roles=ALL_ROLES, tag=TAG, summary="My notifications, newest first, with the unread count",
     query={"unread": "1: only unread", "kind": ", ".join(svc.KINDS) + " (mention: where I was @mentioned)",
            "before_id": "paging", "limit": "1-100 (default 30)"})
async def list_notifications(request: web.Request, principal: Principal) -> web.Response:
    kind = request.query.get("kind") or None
    if kind is not None and kind not in svc.KINDS:
        raise ApiError(400, f"kind must be one of {', '.join(svc.KINDS)}", "bad_query")
    before = query_int(request, "before_id", 0, 0, 2**62)
    limit = query_int(request, "limit", 30, 1, 100)
    async with request.app[CTX].db.session() as s:
        rows, unread = await svc.list_for(s, principal.agent_id, unread=request.query.get("unread") in ("1", "true"),
                                          kind=kind, before_id=before or None, limit=limit)
    return ok({"items": [svc.notification_json(n) for n in rows], "unread": unread,
               "next_before_id": rows[-1].id if len(rows) == limit else None})


@api("GET", "/notifications/unread_count", roles=ALL_ROLES, tag=TAG, summary="How many of my notifications are unread")
async def unread_count(request: web.Request, principal: Principal) -> web.Response:
    async with request.app[CTX].db.session() as s:
        return ok({"unread": await svc.unread_count(s, principal.agent_id)})


class ReadIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ids: list[int] | None = Field(None, max_length=500, description="these notifications")
    conversation_id: int | None = Field(None, description="or every notification about this conversation")
    all: bool = Field(False, description="or all of mine")


@api("POST", "/notifications/read", roles=ALL_ROLES, body=ReadIn, tag=TAG,
     summary="Mark my notifications read: some ids, one conversation's, or all")
async def mark_read(request: web.Request, principal: Principal, body: ReadIn) -> web.Response:
    if body.ids is None and body.conversation_id is None and not body.all:
        raise ApiError(400, "say which: ids, conversation_id or all=true", "bad_request")
    async with unit_of_work(request.app[CTX]) as tx:
        count = await svc.mark_read(tx, principal.agent_id, body.ids, conversation_id=body.conversation_id)
        unread = await svc.unread_count(tx.session, principal.agent_id)
    return ok({"marked": count, "unread": unread})


@api("GET", "/me/preferences", roles=SUPPORT, tag="agents",
     summary="My preferences: e-mail signature, saved ticket filters, notification sound / browser notifications")
async def get_preferences(request: web.Request, principal: Principal) -> web.Response:
    async with request.app[CTX].db.session() as s:
        row = await s.get(AgentPreference, principal.agent_id)
    return ok(preferences.preferences_json(row))


@api("PUT", "/me/preferences", roles=SUPPORT, body=preferences.PreferencesIn, tag="agents",
     summary="Save my preferences (fields left out keep their value)")
async def put_preferences(request: web.Request, principal: Principal, body: preferences.PreferencesIn) -> web.Response:
    async with unit_of_work(request.app[CTX]) as tx:
        row = await preferences.save(tx, principal.agent_id, body)
        data = preferences.preferences_json(row)
    return ok(data)
