"""Conversions: orders the shop reports, attributed to the contact's most recent broadcast or campaign touch
within the configured window (last touch wins), and the broadcast funnel reached -> clicked -> replied -> converted.

Idempotent on the order id: reporting an order again returns the first record and changes nothing,
so a shop may retry its webhook as often as it likes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from scrm.db.models import Contact, ContactIdentity, Delivery, utcnow
from scrm.db.models_campaigns import CampaignTouch, Conversion, TrackedLink
from scrm.db.models_marketing import Broadcast, BroadcastRecipient
from scrm.services.agents import audit
from scrm.services.marketing import settings as marketing_settings
from scrm.services.marketing.link_tracking import clicked_contacts
from scrm.services.uow import Tx

log = logging.getLogger("scrm.conversions")
REACHED = ("sent", "delivered")


class ConversionError(ValueError):
    """Bad conversion input; `status` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400, code: str = "invalid") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(frozen=True)
class Touch:
    at: datetime
    kind: str  # broadcast | campaign
    id: int


def to_cents(value: Any) -> int:
    """A money amount (number or decimal string, 2 decimals at most) in cents."""
    try:
        amount = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise ConversionError(f"value must be a number, not {value!r}", 400, "bad_value") from None
    if not amount.is_finite() or amount < 0 or amount > Decimal("1e12"):
        raise ConversionError("value must be a positive amount below 10^12", 400, "bad_value")
    return int((amount * 100).quantize(Decimal("1"), rounding=ROUND_HALF_UP))


async def find_contact(session: AsyncSession, who: dict[str, Any]) -> Contact:
    """The live contact named by id, email, phone or (inbox_id, external_id); merges are followed."""
    contact: Contact | None = None
    if who.get("id") is not None:
        contact = await session.get(Contact, who["id"])
    elif who.get("inbox_id") is not None and who.get("external_id"):
        identity = await session.scalar(select(ContactIdentity).where(
            ContactIdentity.inbox_id == who["inbox_id"], ContactIdentity.external_id == str(who["external_id"])))
        contact = await session.get(Contact, identity.contact_id) if identity else None
    elif who.get("email"):
        contact = await session.scalar(select(Contact).where(
            func.lower(Contact.email) == str(who["email"]).strip().lower(), Contact.merged_into_id.is_(None))
            .order_by(Contact.id).limit(1))
    elif who.get("phone"):
        contact = await session.scalar(select(Contact).where(
            Contact.phone == str(who["phone"]).strip(), Contact.merged_into_id.is_(None)).order_by(Contact.id).limit(1))
    else:
        raise ConversionError("contact needs one of: id, email, phone, or inbox_id with external_id", 400,
                              "bad_contact")
    while contact is not None and contact.merged_into_id is not None:
        contact = await session.get(Contact, contact.merged_into_id)
    if contact is None:
        raise ConversionError("contact not found", 404, "contact_not_found")
    return contact


async def last_touch(session: AsyncSession, contact_id: int, at: datetime, window: timedelta) -> Touch | None:
    """The contact's most recent broadcast (sent or clicked) or campaign touch in [at - window, at]."""
    since = at - window
    # Broadcast snapshots keep the contact id of the time: include contacts merged into this one.
    ids = [contact_id, *(await session.scalars(select(Contact.id).where(Contact.merged_into_id == contact_id))).all()]
    touches: list[Touch] = []
    sent_at = func.coalesce(Delivery.sent_at, BroadcastRecipient.created_at)
    row: Any = (await session.execute(  # one name for three differently shaped rows
        select(BroadcastRecipient.broadcast_id, sent_at.label("at"))
        .join(Delivery, Delivery.id == BroadcastRecipient.delivery_id)
        .where(BroadcastRecipient.contact_id.in_(ids), Delivery.status.in_(REACHED), sent_at >= since, sent_at <= at)
        .order_by(sent_at.desc()).limit(1))).first()
    if row is not None:
        touches.append(Touch(row.at, "broadcast", row.broadcast_id))
    row = (await session.execute(
        select(TrackedLink.broadcast_id, TrackedLink.last_clicked_at)
        .where(TrackedLink.contact_id.in_(ids), TrackedLink.last_clicked_at >= since, TrackedLink.last_clicked_at <= at)
        .order_by(TrackedLink.last_clicked_at.desc()).limit(1))).first()
    if row is not None:
        touches.append(Touch(row.last_clicked_at, "broadcast", row.broadcast_id))
    row = (await session.execute(
        select(CampaignTouch.campaign_id, CampaignTouch.occurred_at)
        .where(CampaignTouch.contact_id.in_(ids), CampaignTouch.occurred_at >= since, CampaignTouch.occurred_at <= at)
        .order_by(CampaignTouch.occurred_at.desc()).limit(1))).first()
    if row is not None:
        touches.append(Touch(row.occurred_at, "campaign", row.campaign_id))
    return max(touches, key=lambda t: t.at) if touches else None


def conversion_json(c: Conversion, duplicate: bool = False) -> dict[str, Any]:
    return {"id": c.id, "order_id": c.order_id, "contact_id": c.contact_id, "value": c.value_cents / 100,
            "currency": c.currency, "broadcast_id": c.broadcast_id, "campaign_id": c.campaign_id,
            "occurred_at": c.occurred_at.isoformat(), "duplicate": duplicate}


async def record(tx: Tx, agent_id: int | None, *, order_id: str, contact: dict[str, Any], value: Any,
                 currency: str, occurred_at: datetime | None) -> tuple[Conversion, bool]:
    """Store a conversion once per order id; returns (row, True when it was stored before)."""
    s = tx.session
    cents = to_cents(value)
    if occurred_at is not None and occurred_at.tzinfo is None:
        raise ConversionError("occurred_at needs a timezone (e.g. 2026-05-01T09:00:00+08:00)", 400, "bad_time")
    existing = await s.scalar(select(Conversion).where(Conversion.order_id == order_id))
    person = await find_contact(s, contact)
    if existing is not None:
        if existing.contact_id != person.id or existing.value_cents != cents:
            raise ConversionError(f"order {order_id!r} was already reported for another contact or value", 409,
                                  "order_conflict")
        return existing, True
    now = utcnow()
    at = min(occurred_at or now, now)
    settings = await marketing_settings.load(s)
    touch = await last_touch(s, person.id, at, timedelta(days=settings.conversion_window_days))
    row = Conversion(order_id=order_id, contact_id=person.id, value_cents=cents, currency=currency.upper(),
                     occurred_at=at, created_by=agent_id, created_at=now,
                     broadcast_id=touch.id if touch and touch.kind == "broadcast" else None,
                     campaign_id=touch.id if touch and touch.kind == "campaign" else None)
    s.add(row)
    await s.flush()
    audit.record(tx, agent_id, "conversion.record", "contact", person.id, order_id=order_id, value_cents=cents,
                 broadcast_id=row.broadcast_id, campaign_id=row.campaign_id)
    log.info("conversion %s of contact %s attributed to %s", order_id, person.id,
             f"{touch.kind} {touch.id}" if touch else "nothing (no touch in the window)")
    return row, False


async def funnel(session: AsyncSession, b: Broadcast, reached: int, replied: int) -> dict[str, Any]:
    """Reached -> clicked -> replied -> converted (contacts), with clicks, orders and their value."""
    clicked, clicks = await clicked_contacts(session, b.id)
    row = (await session.execute(
        select(func.count(func.distinct(Conversion.contact_id)), func.count(), func.coalesce(func.sum(Conversion.value_cents), 0))
        .where(Conversion.broadcast_id == b.id))).one()
    return {"reached": reached, "clicked": clicked, "clicks": clicks, "replied": replied, "converted": int(row[0] or 0),
            "orders": int(row[1] or 0), "value": int(row[2] or 0) / 100}


async def campaign_conversions(session: AsyncSession, campaign_id: int) -> dict[str, Any]:
    row = (await session.execute(
        select(func.count(), func.coalesce(func.sum(Conversion.value_cents), 0))
        .where(or_(Conversion.campaign_id == campaign_id)))).one()
    return {"orders": int(row[0] or 0), "value": int(row[1] or 0) / 100}
