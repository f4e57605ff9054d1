"""WeChat OA marketing endpoints: the 群发 quota before sending, a preview to a test follower, the
群发 results of a broadcast (and message/mass/get), a contact's subscription-message consents."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel, Field
from sqlalchemy import select

from scrm.db.models import ContactIdentity, Inbox
from scrm.db.models_marketing import Broadcast
from scrm.services.agents import inbox_access
from scrm.services.agents.accounts import Principal
from scrm.services.marketing import wechat_mass, wechat_subscribe
from scrm.services.uow import unit_of_work
from scrm.web.keys import CTX
from scrm.web.routing import ApiError, api, ok, path_int

MARKETING = frozenset({"admin", "marketer"})


class PreviewIn(BaseModel):
    openid: str | None = Field(None, min_length=1, max_length=64, description="the test follower's OpenID")
    contact_id: int | None = Field(None, description="or a contact following the account (yourself)")


async def _wechat_inbox(s: Any, inbox_id: int) -> Inbox:
    inbox = await s.get(Inbox, inbox_id)
    if inbox is None or inbox.channel_type != "wechat_oa":
        raise ApiError(404, "no WeChat Official Account inbox with this id", "not_found")
    return inbox


@api("GET", "/inboxes/{id}/wechat/mass-quota", roles=MARKETING, tag="wechat",
     summary="The account's 群发 quota: used and remaining (subscription: 1/day; service: 4/month per follower)")
async def mass_quota(request: web.Request, principal: Principal) -> web.Response:
    async with unit_of_work(request.app[CTX]) as tx:
        inbox = await _wechat_inbox(tx.session, path_int(request, "id"))
        return ok(await wechat_mass.quota(tx, inbox))


async def _broadcast(s: Any, request: web.Request) -> Broadcast:
    b = await s.get(Broadcast, path_int(request, "id"))
    if b is None:
        raise ApiError(404, "broadcast not found", "not_found")
    return b


@api("GET", "/broadcasts/{id}/wechat", roles=MARKETING, tag="wechat",
     summary="A broadcast's WeChat mode, the account's 群发 quota and the 群发 results (MASSSENDJOBFINISH counts)")
async def broadcast_wechat(request: web.Request, principal: Principal) -> web.Response:
    async with unit_of_work(request.app[CTX]) as tx:
        b = await _broadcast(tx.session, request)
        inboxes = (await tx.session.scalars(select(Inbox).where(Inbox.id.in_(list(b.inbox_ids or [])),
                                                                 Inbox.channel_type == "wechat_oa"))).all()
        quotas = [await wechat_mass.quota(tx, i) for i in inboxes]
        mass = await wechat_mass.results(tx.session, b.id)
    return ok({"id": b.id, "delivery_mode": b.delivery_mode, "delivery_options": b.delivery_options,
               "quota": quotas, "mass": mass})


@api("POST", "/broadcasts/{id}/wechat/preview", roles=MARKETING, body=PreviewIn, tag="wechat",
     summary="Send the 群发 to one test follower first (message/mass/preview)")
async def broadcast_preview(request: web.Request, principal: Principal, body: PreviewIn) -> web.Response:
    async with unit_of_work(request.app[CTX]) as tx:
        b = await _broadcast(tx.session, request)
        if b.delivery_mode != "mass" or len(b.inbox_ids or []) != 1:
            raise ApiError(409, "only a 群发 (mass mode) broadcast has a WeChat preview", "not_mass")
        inbox = await _wechat_inbox(tx.session, int(b.inbox_ids[0]))
        openid = body.openid
        if openid is None and body.contact_id is not None:
            openid = await tx.session.scalar(select(ContactIdentity.external_id).where(
                ContactIdentity.contact_id == body.contact_id, ContactIdentity.inbox_id == inbox.id))
            if openid is None:
                raise ApiError(409, "this contact does not follow the account", "not_a_follower")
        if not openid:
            raise ApiError(400, "openid or contact_id is required", "invalid_request")
        delivery = await wechat_mass.enqueue_preview(tx, b, inbox, openid)
        from scrm import events as ev

        tx.emit(ev.OUTBOX_ENQUEUED, inbox_id=inbox.id)
        return ok({"delivery_id": delivery.id, "openid": openid}, 202)


@api("POST", "/broadcasts/{id}/wechat/refresh", roles=MARKETING, tag="wechat",
     summary="Ask WeChat where each 群发 batch stands (message/mass/get)")
async def broadcast_refresh(request: web.Request, principal: Principal) -> web.Response:
    ctx = request.app[CTX]
    async with ctx.db.session() as s:
        b = await _broadcast(s, request)
    try:
        return ok({"batches": await wechat_mass.refresh_status(ctx, b.id)})
    except Exception as exc:  # a SendError from WeChat: say why
        raise ApiError(502, f"WeChat did not answer: {getattr(exc, 'reason', exc)}", "wechat_error") from None


@api("GET", "/contacts/{id}/wechat-subscriptions", roles=MARKETING | {"agent"}, tag="wechat",
     summary="A contact's subscription-message (订阅通知) consents per template")
async def contact_subscriptions(request: web.Request, principal: Principal) -> web.Response:
    cid = path_int(request, "id")
    async with request.app[CTX].db.session() as s:
        if not await inbox_access.can_see_contact(s, principal, cid):  # another inbox's customer: as if absent
            raise ApiError(404, "contact not found", "not_found")
        return ok({"consents": await wechat_subscribe.consents(s, cid)})
