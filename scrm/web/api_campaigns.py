"""Campaign endpoints: campaigns and their WeChat QR codes, conversions, marketing settings, churn risk,
OA follower sync; the public click redirect /r/{token}."""

from __future__ import annotations

import io
from datetime import datetime
from typing import Any

import segno
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from scrm.db.models import Contact, Inbox, utcnow
from scrm.db.models_campaigns import Campaign, CampaignQrCode, ChurnScore, Conversion, TrackedLink
from scrm.services.agents.accounts import Principal
from scrm.services.marketing import campaigns, churn, conversions
from scrm.services.marketing import settings as marketing_settings
from scrm.services.marketing.link_tracking import record_click
from scrm.services.uow import unit_of_work
from scrm.web.keys import CTX
from scrm.web.routing import ADMIN, ApiError, api, ok, path_int, query_int

MARKETING = frozenset({"admin", "marketer"})
TAG = "campaigns"


def _err(exc: Exception) -> ApiError:
    return ApiError(getattr(exc, "status", 400), str(exc), getattr(exc, "code", "invalid"))


# -- conversions ------------------------------------------------------------------------------------

class ContactRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: int | None = Field(None, ge=1)
    email: str | None = Field(None, max_length=255)
    phone: str | None = Field(None, max_length=64)
    inbox_id: int | None = Field(None, ge=1)
    external_id: str | None = Field(None, max_length=255)


class ConversionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    order_id: str = Field(min_length=1, max_length=128)
    contact: ContactRef
    value: float | str = Field(description="order value, e.g. 199.00")
    currency: str = Field("CNY", pattern=r"^[A-Za-z]{3}$")
    occurred_at: datetime | None = None


@api("POST", "/conversions", roles=MARKETING, body=ConversionIn, tag=TAG,
     summary="Report an order (idempotent on order_id): attributed to the contact's last broadcast or campaign "
             "within the window")
async def post_conversion(request: web.Request, principal: Principal, body: ConversionIn) -> web.Response:
    ctx = request.app[CTX]
    for attempt in range(2):
        try:
            async with unit_of_work(ctx) as tx:
                row, duplicate = await conversions.record(
                    tx, principal.agent_id, order_id=body.order_id, contact=body.contact.model_dump(),
                    value=body.value, currency=body.currency, occurred_at=body.occurred_at)
                out = conversions.conversion_json(row, duplicate)
            return ok(out, 200 if duplicate else 201)
        except conversions.ConversionError as exc:
            raise _err(exc) from None
        except IntegrityError:
            if attempt:
                raise
            # The same order reported concurrently: the other request stored it; answer with that one.
    raise AssertionError("unreachable")


@api("GET", "/conversions", roles=MARKETING, tag=TAG, summary="Recent conversions, newest first",
     query={"broadcast_id": "only this broadcast's", "campaign_id": "only this campaign's", "limit": "1-200"})
async def list_conversions(request: web.Request, principal: Principal) -> web.Response:
    limit = query_int(request, "limit", 50, 1, 200)
    stmt = select(Conversion).order_by(Conversion.id.desc()).limit(limit)
    for name, col in (("broadcast_id", Conversion.broadcast_id), ("campaign_id", Conversion.campaign_id)):
        value = query_int(request, name, 0, 0, 2**62)
        if value:
            stmt = stmt.where(col == value)
    async with request.app[CTX].db.session() as s:
        rows = (await s.scalars(stmt)).all()
    return ok({"items": [conversions.conversion_json(r) for r in rows]})


# -- marketing settings -----------------------------------------------------------------------------

@api("GET", "/marketing-settings", roles=MARKETING, tag=TAG,
     summary="Conversion window and churn-risk rules (weights, threshold)")
async def get_settings(request: web.Request, principal: Principal) -> web.Response:
    async with request.app[CTX].db.session() as s:
        return ok((await marketing_settings.load(s)).model_dump())


class SettingsIn(BaseModel):
    settings: dict[str, Any]


@api("PUT", "/marketing-settings", roles=ADMIN, body=SettingsIn, tag=TAG,
     summary="Change the conversion window or the churn-risk weights and threshold")
async def put_settings(request: web.Request, principal: Principal, body: SettingsIn) -> web.Response:
    try:
        async with unit_of_work(request.app[CTX]) as tx:
            clean = await marketing_settings.save(tx.session, body.settings)
            from scrm.services.agents import audit

            audit.record(tx, principal.agent_id, "settings.marketing", "settings", None, value=clean.model_dump())
    except ValueError as exc:
        raise ApiError(400, str(exc), "bad_settings") from None
    return ok(clean.model_dump())


# -- campaigns and QR codes -------------------------------------------------------------------------

class CampaignIn(BaseModel):
    name: str = Field(min_length=1, max_length=120)
    description: str | None = Field(None, max_length=2000)


class QrIn(BaseModel):
    inbox_id: int
    permanent: bool = False
    expire_seconds: int = Field(7 * 24 * 3600, ge=60, le=campaigns.MAX_TEMPORARY_SECONDS)
    scene: str | None = Field(None, max_length=64)
    welcome_text: str | None = Field(None, max_length=2000)


@api("GET", "/campaigns", roles=MARKETING, tag=TAG, summary="Campaigns with their counts")
async def list_campaigns(request: web.Request, principal: Principal) -> web.Response:
    async with request.app[CTX].db.session() as s:
        rows = (await s.scalars(select(Campaign).order_by(Campaign.id.desc()).limit(200))).all()
        items = [campaigns.campaign_json(c) | {"report": await campaigns.report(s, c.id)} for c in rows]
    return ok({"campaigns": items})


@api("POST", "/campaigns", roles=MARKETING, body=CampaignIn, tag=TAG, summary="Create a campaign")
async def create_campaign(request: web.Request, principal: Principal, body: CampaignIn) -> web.Response:
    try:
        async with unit_of_work(request.app[CTX]) as tx:
            c = await campaigns.create(tx, principal.agent_id, body.name, body.description)
            return ok(campaigns.campaign_json(c), 201)
    except campaigns.CampaignError as exc:
        raise _err(exc) from None


@api("GET", "/campaigns/{id}", roles=MARKETING, tag=TAG,
     summary="A campaign with its QR codes and report (scans, new followers, conversations, conversions)")
async def get_campaign(request: web.Request, principal: Principal) -> web.Response:
    async with request.app[CTX].db.session() as s:
        c = await s.get(Campaign, path_int(request, "id"))
        if c is None:
            raise ApiError(404, "campaign not found", "not_found")
        codes = (await s.scalars(select(CampaignQrCode).where(CampaignQrCode.campaign_id == c.id)
                                 .order_by(CampaignQrCode.id))).all()
        return ok(campaigns.campaign_json(c) | {"qr_codes": [campaigns.qr_json(q) for q in codes],
                                                "report": await campaigns.report(s, c.id)})


@api("POST", "/campaigns/{id}/qr-codes", roles=MARKETING, body=QrIn, tag=TAG,
     summary="Create a temporary or permanent parametric QR code (qrcode/create with scene_str) on an OA inbox")
async def create_qr(request: web.Request, principal: Principal, body: QrIn) -> web.Response:
    try:
        q = await campaigns.create_qr(request.app[CTX], path_int(request, "id"), body.inbox_id,
                                      permanent=body.permanent, expire_seconds=body.expire_seconds,
                                      welcome_text=body.welcome_text, scene=body.scene, agent_id=principal.agent_id)
    except campaigns.CampaignError as exc:
        raise _err(exc) from None
    return ok(campaigns.qr_json(q), 201)


@api("GET", "/campaign-qr-codes/{id}/qr.svg", roles=MARKETING, tag=TAG, summary="A campaign QR code as SVG")
async def qr_svg(request: web.Request, principal: Principal) -> web.StreamResponse:
    async with request.app[CTX].db.session() as s:
        q = await s.get(CampaignQrCode, path_int(request, "id"))
    if q is None or not q.url:
        raise ApiError(404, "QR code not found", "not_found")
    buf = io.BytesIO()
    segno.make(q.url, error="m").save(buf, kind="svg", scale=6, border=2)
    return web.Response(body=buf.getvalue(), content_type="image/svg+xml",
                        headers={"Cache-Control": "private, max-age=3600"})


# -- churn risk -------------------------------------------------------------------------------------

def _churn_json(r: ChurnScore, name: str | None = None) -> dict[str, Any]:
    return {"contact_id": r.contact_id, "name": name, "score": r.score, "at_risk": r.at_risk, "reasons": r.reasons,
            "crossed_at": r.crossed_at.isoformat() if r.crossed_at else None,
            "computed_at": r.computed_at.isoformat() if r.computed_at else None}


@api("GET", "/churn-risk", roles=MARKETING, tag=TAG, summary="Contacts at risk of churning, riskiest first, with why",
     query={"limit": "1-200", "all": "1: every scored contact, not only those at risk"})
async def list_churn(request: web.Request, principal: Principal) -> web.Response:
    limit = query_int(request, "limit", 50, 1, 200)
    stmt = select(ChurnScore, Contact.name).join(Contact, Contact.id == ChurnScore.contact_id)
    if request.query.get("all") not in ("1", "true"):
        stmt = stmt.where(ChurnScore.at_risk.is_(True))
    async with request.app[CTX].db.session() as s:
        rows = (await s.execute(stmt.order_by(ChurnScore.score.desc(), ChurnScore.contact_id).limit(limit))).all()
        threshold = (await marketing_settings.load(s)).churn.threshold
    return ok({"threshold": threshold, "items": [_churn_json(r, name) for r, name in rows]})


@api("GET", "/contacts/{id}/churn-risk", roles=MARKETING, tag=TAG,
     summary="A contact's churn-risk score now, with the rules that make it up")
async def contact_churn(request: web.Request, principal: Principal) -> web.Response:
    cid = path_int(request, "id")
    now = utcnow()
    async with request.app[CTX].db.session() as s:
        if await s.get(Contact, cid) is None:
            raise ApiError(404, "contact not found", "not_found")
        rules = (await marketing_settings.load(s)).churn
        sig = await churn.contact_signals(s, cid, rules, now)
    if sig is None:
        return ok({"contact_id": cid, "score": None, "at_risk": False, "reasons": [], "threshold": rules.threshold,
                   "note": "never wrote to us: not scored"})
    score, reasons = churn.explain(sig, rules, now)
    return ok({"contact_id": cid, "score": score, "at_risk": score >= rules.threshold, "reasons": reasons,
               "threshold": rules.threshold})


@api("POST", "/churn-risk/recompute", roles=MARKETING, tag=TAG,
     summary="Score every contact now (the daily job does this on its own) and notify about new risks")
async def recompute_churn(request: web.Request, principal: Principal) -> web.Response:
    result = await churn.recompute(request.app[CTX])
    return ok({"scored": result["scored"], "crossed": len(result["crossed"])})


# -- OA followers -----------------------------------------------------------------------------------

@api("POST", "/inboxes/{id}/wechat/follower-sync", roles=MARKETING, tag=TAG,
     summary="Sync the Official Account's followers (user/get, user/info/batchget) and tags both ways")
async def follower_sync(request: web.Request, principal: Principal) -> web.Response:
    from scrm.services.marketing import oa_followers

    ctx = request.app[CTX]
    async with ctx.db.session() as s:
        inbox = await s.get(Inbox, path_int(request, "id"))
    if inbox is None or inbox.channel_type != "wechat_oa":
        raise ApiError(404, "no WeChat Official Account inbox with this id", "not_found")
    try:
        result = await oa_followers.sync(ctx, inbox)
    except oa_followers.SyncError as exc:
        raise _err(exc) from None
    return ok(result)


# -- public click redirect --------------------------------------------------------------------------

NOT_FOUND_PAGE = ("<!doctype html><meta charset='utf-8'><meta name='viewport' content='width=device-width'>"
                  "<title>链接无效 / Link not found</title><body style='font-family:sans-serif;max-width:32em;"
                  "margin:3em auto'><p>链接无效或已过期。<br>This link is not valid.</p></body>")


async def click_redirect(request: web.Request) -> web.StreamResponse:
    """/r/{token}: count the click, then redirect to the URL stored for this token (never one from the request)."""
    token = request.match_info.get("token", "")
    if request.method == "HEAD":  # link checkers probe with HEAD: answer, but it is nobody's click
        async with request.app[CTX].db.session() as s:
            url = await s.scalar(select(TrackedLink.url).where(TrackedLink.token == token)) if len(token) <= 32 else None
    else:
        async with unit_of_work(request.app[CTX]) as tx:
            url = await record_click(tx.session, token, utcnow())
    if url is None:
        return web.Response(status=404, text=NOT_FOUND_PAGE, content_type="text/html")
    return web.Response(status=302, headers={"Location": url, "Cache-Control": "no-store",
                                             "Referrer-Policy": "no-referrer"})


PAGES = ("/campaigns", "/campaigns/{sub:new|churn|\\d+}")


def add_routes(app: web.Application) -> None:
    """Register the campaign pages of the SPA and the click redirect (the endpoints: scrm.web.routes)."""
    from scrm.web.ui import page

    for path in PAGES:
        app.router.add_get(path, page)
    app.router.add_get("/r/{token}", click_redirect)
