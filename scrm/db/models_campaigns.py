"""Campaign models: tracked links and clicks, conversions, campaigns with their WeChat QR codes and
touches (first / last touch), churn-risk scores."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from scrm.db import models_marketing  # noqa: F401  (broadcasts, referenced below, must be in the metadata)
from scrm.db.models import Base, BigId, utcnow


class TrackedLink(Base):
    """One link of one broadcast for one recipient: /r/{token} redirects only to this stored url.

    The token is the whole credential and names a row; nothing from the request decides where the
    redirect goes, so the short link can never become an open redirect.
    """

    __tablename__ = "tracked_links"
    __table_args__ = (Index("ix_tracked_links_broadcast", "broadcast_id", "contact_id"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    token: Mapped[str] = mapped_column(String(32), unique=True)
    broadcast_id: Mapped[int] = mapped_column(ForeignKey("broadcasts.id", ondelete="CASCADE"))
    contact_id: Mapped[int] = mapped_column(BigId)
    url: Mapped[str] = mapped_column(Text)
    clicks: Mapped[int] = mapped_column(Integer, default=0)
    first_clicked_at: Mapped[datetime | None]
    last_clicked_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Campaign(Base):
    """A marketing campaign: QR codes bring followers in, broadcasts and conversions are counted for it."""

    __tablename__ = "campaigns"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    description: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("agents.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class CampaignQrCode(Base):
    """A parametric QR code (qrcode/create with scene_str) of one official account for one campaign."""

    __tablename__ = "campaign_qr_codes"
    __table_args__ = (UniqueConstraint("inbox_id", "scene"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"), index=True)
    inbox_id: Mapped[int] = mapped_column(ForeignKey("inboxes.id", ondelete="CASCADE"))
    scene: Mapped[str] = mapped_column(String(64))
    permanent: Mapped[bool] = mapped_column(Boolean, default=False)
    ticket: Mapped[str | None] = mapped_column(Text)
    url: Mapped[str | None] = mapped_column(Text)  # what the QR code encodes
    expires_at: Mapped[datetime | None]
    welcome_text: Mapped[str | None] = mapped_column(Text)  # sent on subscribe through this code
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class CampaignTouch(Base):
    """A contact met a campaign: subscribed through its QR code, or scanned it as a follower."""

    __tablename__ = "campaign_touches"
    __table_args__ = (UniqueConstraint("inbox_id", "event_id"), Index("ix_campaign_touches_contact", "contact_id"),
                      Index("ix_campaign_touches_campaign", "campaign_id", "occurred_at"))
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    qr_code_id: Mapped[int | None] = mapped_column(ForeignKey("campaign_qr_codes.id", ondelete="SET NULL"))
    inbox_id: Mapped[int] = mapped_column(BigId)
    contact_id: Mapped[int] = mapped_column(BigId)
    kind: Mapped[str] = mapped_column(String(16))  # subscribe | scan
    event_id: Mapped[str] = mapped_column(String(255))  # the callback's id: a retried callback counts once
    occurred_at: Mapped[datetime] = mapped_column(default=utcnow)


class ContactAttribution(Base):
    """Which campaign brought the contact first, and which touched them last."""

    __tablename__ = "contact_attributions"
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True)
    first_campaign_id: Mapped[int | None] = mapped_column(ForeignKey("campaigns.id", ondelete="SET NULL"))
    first_touch_at: Mapped[datetime | None]
    last_campaign_id: Mapped[int | None] = mapped_column(ForeignKey("campaigns.id", ondelete="SET NULL"))
    last_touch_at: Mapped[datetime | None]


class Conversion(Base):
    """An order reported by the shop (POST /api/v1/conversions), attributed to a broadcast or campaign."""

    __tablename__ = "conversions"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    order_id: Mapped[str] = mapped_column(String(128), unique=True)
    contact_id: Mapped[int] = mapped_column(BigId, index=True)
    value_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    currency: Mapped[str] = mapped_column(String(3), default="CNY")
    broadcast_id: Mapped[int | None] = mapped_column(ForeignKey("broadcasts.id", ondelete="SET NULL"), index=True)
    campaign_id: Mapped[int | None] = mapped_column(ForeignKey("campaigns.id", ondelete="SET NULL"), index=True)
    occurred_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("agents.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ChurnScore(Base):
    """A contact's churn risk (0-100) with the reasons that make it up, recomputed daily."""

    __tablename__ = "churn_scores"
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True)
    score: Mapped[int] = mapped_column(Integer, index=True)
    reasons: Mapped[list[Any]] = mapped_column(default=list)
    at_risk: Mapped[bool] = mapped_column(Boolean, default=False)
    crossed_at: Mapped[datetime | None]  # when it last went over the threshold
    computed_at: Mapped[datetime] = mapped_column(default=utcnow)
