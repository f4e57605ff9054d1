"""Agent/admin endpoints for web chat: block a visitor, and the widget's embed code for an inbox."""

from __future__ import annotations

import json
import secrets

from aiohttp import web
from sqlalchemy import select

from channels.web.adapter import visitor_topic
from scrm.db.models import Conversation, Inbox
from scrm.serializers import mask_secret
from scrm.services.agents import audit
from scrm.services.agents.accounts import Principal
from scrm.services.uow import unit_of_work
from scrm.services.webchat import visitors as chat_svc
from scrm.services.webchat.push import publish
from scrm.web.access import require_conversation
from scrm.web.keys import CTX
from scrm.web.routing import ADMIN, SUPPORT, ApiError, api, ok, path_int


async def _web_conversation(request: web.Request) -> Conversation:
    async with request.app[CTX].db.session() as s:
        row = (await s.execute(select(Conversation, Inbox.channel_type).join(Inbox, Inbox.id == Conversation.inbox_id)
                               .where(Conversation.id == path_int(request, "id")))).first()
    if row is None:
        raise ApiError(404, "conversation not found", "not_found")
    if row[1] != "web":
        raise ApiError(409, "only web chat visitors can be blocked here", "not_web_chat")
    return row[0]


async def _set_blocked(request: web.Request, principal: Principal, blocked: bool) -> web.Response:
    ctx = request.app[CTX]
    await require_conversation(request, principal, path_int(request, "id"))
    conv = await _web_conversation(request)
    async with unit_of_work(ctx) as tx:
        identity, _contact = await chat_svc.set_blocked(tx, conv.id, principal.agent_id, blocked)
    if blocked:  # open sockets close at once, wherever they are
        await publish(ctx, visitor_topic(conv.inbox_id, identity.external_id), json.dumps({"t": "kick"}))
    return ok({"conversation_id": conv.id, "blocked": blocked})


@api("POST", "/webchat/conversations/{id}/block", roles=SUPPORT, tag="webchat",
     summary="Block the web chat visitor of a conversation (no more messages or sessions)")
async def block(request: web.Request, principal: Principal) -> web.Response:
    return await _set_blocked(request, principal, True)


@api("POST", "/webchat/conversations/{id}/unblock", roles=SUPPORT, tag="webchat",
     summary="Unblock the web chat visitor of a conversation")
async def unblock(request: web.Request, principal: Principal) -> web.Response:
    return await _set_blocked(request, principal, False)


@api("GET", "/inboxes/{id}/webchat", roles=ADMIN, tag="webchat",
     summary="A web inbox's embed code, H5 link, QR code and identity-validation secret")
async def embed_info(request: web.Request, principal: Principal) -> web.Response:
    ctx = request.app[CTX]
    async with ctx.db.session() as s:
        inbox = await s.get(Inbox, path_int(request, "id"))
    if inbox is None or inbox.channel_type != "web":
        raise ApiError(404, "web inbox not found", "not_found")
    base = (ctx.settings.server.public_url or f"{request.scheme}://{request.host}").rstrip("/")
    script = f'<script src="{base}/static/widget/loader.js" data-inbox="{inbox.id}" async></script>'
    from channels.web.config import WebSettings

    return ok({
        "inbox_id": inbox.id, "script": script, "settings": WebSettings.model_validate(inbox.settings or {}).model_dump(), "h5_url": f"{base}/chat/{inbox.id}",
        # Masked like every stored secret: a new one is shown once by POST .../webchat/identity-secret.
        "qr_path": f"/chat/{inbox.id}/qr.svg", "hmac_secret": mask_secret((inbox.secrets or {}).get("hmac_secret")),
        "identity_example": ("window.scrmSettings = {identifier: 'user-42', identifier_hash: "
                             "HMAC_SHA256_hex(hmac_secret, 'user-42'), name: '张三', email: 'z@example.com'};"),
    })


@api("POST", "/inboxes/{id}/webchat/identity-secret", roles=ADMIN, tag="webchat",
     summary="Replace a web inbox's identity-validation secret; the new one is shown once")
async def new_identity_secret(request: web.Request, principal: Principal) -> web.Response:
    ctx = request.app[CTX]
    async with unit_of_work(ctx) as tx:
        inbox = await tx.session.get(Inbox, path_int(request, "id"), with_for_update=True)
        if inbox is None or inbox.channel_type != "web":
            raise ApiError(404, "web inbox not found", "not_found")
        fresh = secrets.token_hex(32)
        inbox.secrets = {**inbox.secrets, "hmac_secret": fresh}
        audit.record(tx, principal.agent_id, "inbox.identity_secret", "inbox", inbox.id)
    return ok({"inbox_id": inbox.id, "hmac_secret": fresh})
