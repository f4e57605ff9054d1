"""Agent productivity endpoints: bulk actions on the conversation list and agent-started conversations."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from scrm.db.models import Conversation
from scrm.serializers import message_json
from scrm.services.agents import inbox_access
from scrm.services.agents.accounts import Principal
from scrm.services.conversations import outreach
from scrm.services.conversations.actions import ConversationError
from scrm.services.desk import bulk
from scrm.services.uow import unit_of_work
from scrm.web.access import require_contact, require_inbox
from scrm.web.keys import CTX
from scrm.web.routing import SUPPORT, ApiError, api, ok


@api("POST", "/conversations/bulk", roles=SUPPORT, body=bulk.BulkIn, tag="conversations",
     summary="One action on up to 100 conversations: assign, label, unlabel, resolve, reopen, snooze")
async def bulk_action(request: web.Request, principal: Principal, body: bulk.BulkIn) -> web.Response:
    hidden: list[int] = []
    if (ids := inbox_access.scope(principal)) is not None:
        async with request.app[CTX].db.session() as s:
            seen = set((await s.scalars(select(Conversation.id).where(Conversation.id.in_(body.ids),
                                                                       Conversation.inbox_id.in_(ids)))).all())
        hidden = list(dict.fromkeys(i for i in body.ids if i not in seen))
        body = body.model_copy(update={"ids": [i for i in body.ids if i in seen]})
    result = await bulk.do_bulk(request.app[CTX], principal.agent_id, body) if body.ids else {"done": [], "failed": []}
    # Another inbox's conversation fails exactly like a missing one.
    result["failed"] += [{"id": i, "code": "not_found", "error": "conversation not found"} for i in hidden]
    return ok(result)


class StartIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    contact_id: int
    inbox_id: int
    text: str = Field(min_length=1, max_length=20000)
    subject: str | None = Field(None, max_length=500, description="e-mail: the subject of the new thread")


@api("POST", "/conversations", roles=SUPPORT, body=StartIn, tag="conversations",
     summary="Write to a contact first (e-mail; Telegram to a known chat; WeChat inside its 48 h window)")
async def start_conversation(request: web.Request, principal: Principal, body: StartIn) -> web.Response:
    await require_contact(request, principal, body.contact_id)
    await require_inbox(request, principal, body.inbox_id)
    try:
        async with unit_of_work(request.app[CTX]) as tx:
            conv, message = await outreach.do_start_conversation(tx, principal.agent_id, body.contact_id, body.inbox_id,
                                                                 body.text, body.subject)
            data = {"conversation_id": conv.id, "message": message_json(message)}
    except ConversationError as exc:
        raise ApiError(exc.status, str(exc), exc.code) from None
    return ok(data, 201)
