"""Campaigns and their WeChat parametric QR codes: creation (qrcode/create with scene_str), attribution of
the `subscribe` (EventKey qrscene_…) and `SCAN` callbacks to the campaign (first and last touch kept),
the welcome message of a QR code, and the per-campaign counts.
"""

from __future__ import annotations

import logging
import re
import secrets
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, func, select

from scrm import events as ev
from scrm.db.models import Contact, ContactIdentity, Conversation, Inbox, utcnow
from scrm.db.models_campaigns import Campaign, CampaignQrCode, CampaignTouch, ContactAttribution
from scrm.domain import ChannelEvent, ChannelEventKind
from scrm.services.agents import audit
from scrm.services.marketing.conversions import campaign_conversions
from scrm.services.outbox import enqueue_delivery
from scrm.services.uow import Tx

if TYPE_CHECKING:
    from scrm.context import AppContext

log = logging.getLogger("scrm.campaigns")
SCENE_RE = re.compile(r"^[A-Za-z0-9_\-.]{1,64}$")  # scene_str: 1-64 characters; kept to URL-safe ones
MAX_TEMPORARY_SECONDS = 30 * 24 * 3600  # WeChat's limit for temporary QR codes (2592000 s)


class CampaignError(ValueError):
    """The campaign operation cannot be done; `status` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400, code: str = "invalid") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def campaign_json(c: Campaign) -> dict[str, Any]:
    return {"id": c.id, "name": c.name, "description": c.description,
            "created_at": c.created_at.isoformat() if c.created_at else None}


def qr_json(q: CampaignQrCode) -> dict[str, Any]:
    return {"id": q.id, "campaign_id": q.campaign_id, "inbox_id": q.inbox_id, "scene": q.scene,
            "permanent": q.permanent, "url": q.url, "ticket": q.ticket, "welcome_text": q.welcome_text,
            "expires_at": q.expires_at.isoformat() if q.expires_at else None,
            "image_url": f"/api/v1/campaign-qr-codes/{q.id}/qr.svg"}


async def create_qr(ctx: AppContext, campaign_id: int, inbox_id: int, *, permanent: bool, expire_seconds: int,
                    welcome_text: str | None, scene: str | None, agent_id: int | None) -> CampaignQrCode:
    """Ask WeChat for a parametric QR code of the campaign and store it."""
    from channels.wechat.followers import create_qrcode
    from channels.wechat.transport import WeChatAPIError, WeChatNetworkError

    scene = scene or f"c{campaign_id}-{secrets.token_hex(4)}"
    if not SCENE_RE.match(scene):
        raise CampaignError("scene must be 1-64 letters, digits, '-', '_' or '.'", 400, "bad_scene")
    if not permanent and not 60 <= expire_seconds <= MAX_TEMPORARY_SECONDS:
        raise CampaignError(f"a temporary QR code lasts 60 to {MAX_TEMPORARY_SECONDS} seconds", 400, "bad_expiry")
    async with ctx.db.session() as s:
        if await s.get(Campaign, campaign_id) is None:
            raise CampaignError("campaign not found", 404, "not_found")
        inbox = await s.get(Inbox, inbox_id)
        if inbox is None or inbox.channel_type != "wechat_oa":
            raise CampaignError("QR codes need a WeChat Official Account inbox (wechat_oa)", 400, "bad_inbox")
        if await s.scalar(select(CampaignQrCode.id).where(CampaignQrCode.inbox_id == inbox_id,
                                                          CampaignQrCode.scene == scene)):
            raise CampaignError(f"scene {scene!r} is used by another QR code of this account", 409, "scene_taken")
    adapter = ctx.adapters.for_inbox(inbox)
    try:
        answer = await create_qrcode(adapter.client, scene, permanent=permanent,  # type: ignore[attr-defined]
                                     expire_seconds=expire_seconds)
    except WeChatAPIError as exc:
        log.warning("qrcode/create for campaign %s refused: %s %s", campaign_id, exc.errcode, exc.errmsg)
        raise CampaignError(f"WeChat refused the QR code: {exc.errcode} {exc.errmsg}", 502, "wechat_error") from None
    except WeChatNetworkError as exc:
        raise CampaignError(f"WeChat could not be reached: {exc}", 502, "wechat_unreachable") from None
    now = utcnow()
    async with ctx.db.transaction() as s:
        q = CampaignQrCode(campaign_id=campaign_id, inbox_id=inbox_id, scene=scene, permanent=permanent,
                           ticket=answer.get("ticket"), url=answer.get("url"), welcome_text=welcome_text or None,
                           expires_at=None if permanent else now + timedelta(
                               seconds=int(answer.get("expire_seconds") or expire_seconds)),
                           created_at=now)
        s.add(q)
        await s.flush()
        await s.refresh(q)
    log.info("campaign %s: %s QR code %s created on inbox %s", campaign_id,
             "permanent" if permanent else "temporary", scene, inbox_id)
    return q


def scene_of(event: ChannelEvent) -> tuple[str, str] | None:
    """(kind, scene) when the callback came from a parametric QR code: subscribe or SCAN."""
    if event.kind == ChannelEventKind.CONTACT_SUBSCRIBED and event.data.get("source"):
        return "subscribe", str(event.data["source"])
    if event.kind == ChannelEventKind.INTERACTION and str(event.data.get("event", "")).lower() == "scan":
        scene = event.data.get("scene")
        return ("scan", str(scene)) if scene else None
    return None


async def touch_from_event(tx: Tx, inbox: Inbox, contact: Contact, identity: ContactIdentity, event: ChannelEvent,
                           now: datetime) -> CampaignTouch | None:
    """Attribute a QR-code callback to its campaign (once per callback) and send the code's welcome text."""
    found = scene_of(event)
    if found is None:
        return None
    kind, scene = found
    q = await tx.session.scalar(select(CampaignQrCode).where(CampaignQrCode.inbox_id == inbox.id,
                                                             CampaignQrCode.scene == scene))
    if q is None:
        return None  # a QR code made elsewhere (another tool, the WeChat console)
    event_id = event.external_id or f"{identity.external_id}:{now.timestamp()}:{kind}"
    if await tx.session.scalar(select(CampaignTouch.id).where(CampaignTouch.inbox_id == inbox.id,
                                                             CampaignTouch.event_id == event_id)):
        return None  # WeChat retried the callback
    at = event.occurred_at or now
    touch = CampaignTouch(campaign_id=q.campaign_id, qr_code_id=q.id, inbox_id=inbox.id, contact_id=contact.id,
                          kind=kind, event_id=event_id[:255], occurred_at=at)
    tx.session.add(touch)
    attribution = await tx.session.get(ContactAttribution, contact.id, with_for_update=True)
    if attribution is None:
        tx.session.add(ContactAttribution(contact_id=contact.id, first_campaign_id=q.campaign_id, first_touch_at=at,
                                          last_campaign_id=q.campaign_id, last_touch_at=at))
    else:
        if attribution.first_campaign_id is None:
            attribution.first_campaign_id, attribution.first_touch_at = q.campaign_id, at
        if attribution.last_touch_at is None or at >= attribution.last_touch_at:
            attribution.last_campaign_id, attribution.last_touch_at = q.campaign_id, at
    await tx.session.flush()
    if kind == "subscribe" and q.welcome_text:
        # They just followed: inside the customer-service window, so a normal message may go out.
        enqueue_delivery(tx, inbox=inbox, identity=identity, conversation_id=None, message_id=None,
                         text=q.welcome_text, automatic=True, metadata={"campaign_id": q.campaign_id,
                                                                        "welcome": True})
        tx.emit(ev.OUTBOX_ENQUEUED, inbox_id=inbox.id)
    log.info("contact %s %s campaign %s (QR %s)", contact.id, "followed through" if kind == "subscribe"
             else "scanned the code of", q.campaign_id, scene)
    return touch


async def report(session: Any, campaign_id: int) -> dict[str, Any]:
    """Scans, new followers, contacts reached and conversations started after their first touch; conversions."""
    counts = dict((await session.execute(
        select(CampaignTouch.kind, func.count()).where(CampaignTouch.campaign_id == campaign_id)
        .group_by(CampaignTouch.kind))).all())
    contacts = await session.scalar(select(func.count(func.distinct(CampaignTouch.contact_id)))
                                    .where(CampaignTouch.campaign_id == campaign_id))
    first = (select(CampaignTouch.contact_id, func.min(CampaignTouch.occurred_at).label("at"))
             .where(CampaignTouch.campaign_id == campaign_id).group_by(CampaignTouch.contact_id).subquery())
    conversations = await session.scalar(select(func.count(Conversation.id)).join(
        first, and_(first.c.contact_id == Conversation.contact_id, Conversation.created_at >= first.c.at)))
    firsts = await session.scalar(select(func.count()).select_from(ContactAttribution)
                                  .where(ContactAttribution.first_campaign_id == campaign_id))
    return {"scans": int(counts.get("scan", 0)), "new_followers": int(counts.get("subscribe", 0)),
            "contacts": int(contacts or 0), "first_touch_contacts": int(firsts or 0),
            "conversations": int(conversations or 0), **await campaign_conversions(session, campaign_id)}


async def create(tx: Tx, agent_id: int | None, name: str, description: str | None) -> Campaign:
    c = Campaign(name=name.strip(), description=description, created_by=agent_id)
    if not c.name:
        raise CampaignError("the name is empty", 400, "bad_name")
    tx.session.add(c)
    await tx.session.flush()
    audit.record(tx, agent_id, "campaign.create", "campaign", c.id, name=c.name)
    return c


async def merge_contacts(session: Any, target_id: int, source_id: int) -> None:
    """Contacts merged: touches, clicks and conversions follow; first touch = the earlier, last = the later."""
    from sqlalchemy import delete, update

    from scrm.db.models_campaigns import ChurnScore, Conversion, TrackedLink

    for model in (CampaignTouch, TrackedLink, Conversion):
        await session.execute(update(model).where(model.contact_id == source_id).values(contact_id=target_id)
                              .execution_options(synchronize_session=False))
    src = await session.get(ContactAttribution, source_id)
    if src is not None:
        dst = await session.get(ContactAttribution, target_id)
        if dst is None:
            session.add(ContactAttribution(contact_id=target_id, first_campaign_id=src.first_campaign_id,
                                           first_touch_at=src.first_touch_at, last_campaign_id=src.last_campaign_id,
                                           last_touch_at=src.last_touch_at))
        else:
            if src.first_touch_at and (dst.first_touch_at is None or src.first_touch_at < dst.first_touch_at):
                dst.first_campaign_id, dst.first_touch_at = src.first_campaign_id, src.first_touch_at
            if src.last_touch_at and (dst.last_touch_at is None or src.last_touch_at > dst.last_touch_at):
                dst.last_campaign_id, dst.last_touch_at = src.last_campaign_id, src.last_touch_at
        await session.delete(src)
    # The survivor is scored again by the next run; the merged contact has no score of its own.
    await session.execute(delete(ChurnScore).where(ChurnScore.contact_id == source_id))
