"""Membership guards for handlers: a row in an inbox the caller cannot see answers 404, like a missing one."""

from __future__ import annotations

from aiohttp import web
from sqlalchemy import select

from scrm.db.models import Message
from scrm.services.agents import inbox_access
from scrm.services.agents.accounts import Principal
from scrm.web.keys import CTX
from scrm.web.routing import ApiError


async def require_conversation(request: web.Request, principal: Principal | None, conversation_id: int) -> None:
    """404 unless the caller may see the conversation (missing ones are left to the handler's own 404)."""
    if inbox_access.scope(principal) is None:
        return
    async with request.app[CTX].db.session() as s:
        if not await inbox_access.can_see_conversation(s, principal, conversation_id):
            raise ApiError(404, "conversation not found", "not_found")


async def require_message(request: web.Request, principal: Principal | None, message_id: int) -> None:
    if inbox_access.scope(principal) is None:
        return
    async with request.app[CTX].db.session() as s:
        cid = await s.scalar(select(Message.conversation_id).where(Message.id == message_id))
        if cid is None or not await inbox_access.can_see_conversation(s, principal, cid):
            raise ApiError(404, "message not found", "not_found")


async def require_contact(request: web.Request, principal: Principal | None, contact_id: int) -> None:
    if not inbox_access.contact_filter(principal):
        return
    async with request.app[CTX].db.session() as s:
        if not await inbox_access.can_see_contact(s, principal, contact_id):
            raise ApiError(404, "contact not found", "not_found")


async def require_ticket(request: web.Request, principal: Principal | None, ticket_id: int) -> None:
    if inbox_access.scope(principal) is None:
        return
    async with request.app[CTX].db.session() as s:
        if not await inbox_access.can_see_ticket(s, principal, ticket_id):
            raise ApiError(404, "ticket not found", "not_found")


async def require_inbox(request: web.Request, principal: Principal | None, inbox_id: int) -> None:
    if inbox_access.scope(principal) is None:
        return
    async with request.app[CTX].db.session() as s:
        if not await inbox_access.can_see_inbox(s, principal, inbox_id):
            raise ApiError(404, "inbox not found", "not_found")
