"""WeCom admin endpoints: acquisition links with QR codes and their counts, sync now, pull status."""

from __future__ import annotations

import io
from typing import Any

import segno
from aiohttp import web
from pydantic import BaseModel, Field
from sqlalchemy import select

from scrm.db.models import Inbox
from scrm.db.models_wecom import WeComContactWay, WeComKfCursor
from scrm.serializers import iso
from scrm.services.agents.accounts import Principal
from scrm.services.wecom.ways import WayError, create_way, list_ways
from scrm.web.keys import CTX
from scrm.web.routing import ADMIN, ApiError, api, ok, path_int

MARKETING_ADMIN = ADMIN | {"marketer"}


class WayIn(BaseModel):
    name: str = Field(min_length=1, max_length=120)
    scene: str = Field(min_length=1, max_length=32, description="kf scene / 渠道活码 state: the source's key")
    users: list[str] = Field(default_factory=list, description="staff userids (渠道活码 only)")
    welcome_text: str | None = Field(None, max_length=1000)


async def _wecom_inbox(request: web.Request) -> Inbox:
    ctx = request.app[CTX]
    async with ctx.db.session() as s:
        inbox = await s.get(Inbox, path_int(request, "id"))
    if inbox is None or inbox.channel_type not in ("wecom_kf", "wecom_contacts"):
        raise ApiError(404, "no WeCom inbox with this id", "not_found")
    return inbox


@api("GET", "/inboxes/{id}/wecom/ways", roles=MARKETING_ADMIN, tag="wecom",
     summary="Acquisition links (kf links, 渠道活码) with customers and conversations per source")
async def get_ways(request: web.Request, principal: Principal) -> web.Response:
    inbox = await _wecom_inbox(request)
    return ok({"items": await list_ways(request.app[CTX], inbox)})


@api("POST", "/inboxes/{id}/wecom/ways", roles=MARKETING_ADMIN, body=WayIn, tag="wecom",
     summary="Create a kf link (scene) or a 渠道活码 (state) in WeCom")
async def post_way(request: web.Request, principal: Principal, body: WayIn) -> web.Response:
    inbox = await _wecom_inbox(request)
    try:
        way = await create_way(request.app[CTX], inbox, principal.agent_id, name=body.name, scene=body.scene,
                               users=body.users, welcome_text=body.welcome_text)
    except WayError as exc:
        raise ApiError(exc.status, str(exc), exc.code) from None
    return ok({"id": way.id, "scene": way.scene, "url": way.url, "qr_code": way.qr_code}, 201)


@api("GET", "/wecom/ways/{id}/qr.svg", roles=MARKETING_ADMIN, tag="wecom", summary="A kf link's QR code (SVG)")
async def way_qr(request: web.Request, principal: Principal) -> web.StreamResponse:
    ctx = request.app[CTX]
    async with ctx.db.session() as s:
        way = await s.get(WeComContactWay, path_int(request, "id"))
    if way is None or not way.url:
        raise ApiError(404, "no kf link with this id", "not_found")
    buf = io.BytesIO()
    segno.make(way.url, error="m").save(buf, kind="svg", scale=6, border=2)
    return web.Response(body=buf.getvalue(), content_type="image/svg+xml",
                        headers={"Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff"})


@api("POST", "/inboxes/{id}/wecom/sync", roles=ADMIN, tag="wecom",
     summary="Sync now: external contacts (客户联系) or a token-less kf pull (微信客服)")
async def sync_now(request: web.Request, principal: Principal) -> web.Response:
    ctx = request.app[CTX]
    inbox = await _wecom_inbox(request)
    try:
        if inbox.channel_type == "wecom_contacts":
            from scrm.services.wecom.contacts import full_sync

            return ok({"contacts": await full_sync(ctx, inbox.id)})
        from scrm.services.wecom.kf_sync import pull

        return ok({"stored": await pull(ctx, inbox.id, str(inbox.settings.get("open_kfid")))})
    except Exception as exc:  # noqa: BLE001 - WeCom trouble is shown to the admin
        raise ApiError(502, f"WeCom sync failed: {exc}", "wecom_error") from None


@api("GET", "/inboxes/{id}/wecom/status", roles=ADMIN, tag="wecom", summary="kf pull state: cursor, owed pulls, errors")
async def status(request: web.Request, principal: Principal) -> web.Response:
    ctx = request.app[CTX]
    inbox = await _wecom_inbox(request)
    async with ctx.db.session() as s:
        rows = (await s.scalars(select(WeComKfCursor).where(WeComKfCursor.inbox_id == inbox.id))).all()
    items: list[dict[str, Any]] = [{"open_kfid": r.open_kfid, "owed": r.requested_seq > r.pulled_seq,
                                    "last_pull_at": iso(r.last_pull_at), "last_error": r.last_error,
                                    "pulled_total": r.pulled_total, "pulling": r.lease_owner is not None}
                                   for r in rows]
    return ok({"items": items})
