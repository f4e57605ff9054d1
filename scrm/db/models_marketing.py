"""Marketing models: custom attribute definitions, segments, broadcasts and their recipients."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from scrm.db.models import Base, BigId, utcnow


class AttributeDefinition(Base):
    """A typed custom contact attribute (text, number, date, choice)."""

    __tablename__ = "attribute_definitions"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(120))
    type: Mapped[str] = mapped_column(String(16))  # text | number | date | choice
    choices: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Segment(Base):
    """Saved rules selecting contacts; evaluated live, as one query."""

    __tablename__ = "segments"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    rules: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("agents.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Broadcast(Base):
    """One message to a segment over one or more inboxes."""

    __tablename__ = "broadcasts"
    __table_args__ = (Index("ix_broadcasts_status_scheduled", "status", "scheduled_at"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    segment_id: Mapped[int | None] = mapped_column(ForeignKey("segments.id", ondelete="SET NULL"))
    rules: Mapped[dict[str, Any]] = mapped_column(default=dict)  # the segment's rules when started
    inbox_ids: Mapped[list[Any]] = mapped_column(default=list)  # in order of preference
    template: Mapped[str] = mapped_column(Text)
    subject: Mapped[str | None] = mapped_column(String(255))  # email subject (personalized too)
    # draft | scheduled | running | paused | completed | cancelled
    status: Mapped[str] = mapped_column(String(16), default="draft")
    scheduled_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)  # why a scheduled start failed
    reply_window_days: Mapped[int] = mapped_column(default=3)  # replies within N days count for it
    # How WeChat OA followers get it: standard (customer-service message inside the 48 h window,
    # subscription message outside it when they consented) | mass (群发) | subscribe (订阅通知).
    delivery_mode: Mapped[str] = mapped_column(String(16), default="standard")
    # mass: {"target": "list" | "tag" | "all", "tag_id"}; subscribe / fallback: {"template_id", "fields", "url"}
    delivery_options: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("agents.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class BroadcastRecipient(Base):
    """One targeted contact of a started broadcast: queued (with its delivery row) or skipped (with why).

    The live send status is the linked delivery's status, so the report cannot drift from the outbox.
    A snapshot: contact, inbox and identity are plain ids (no foreign keys), so the broadcast keeps its
    counts whatever later happens to them, and 100k rows insert without 300k key lookups.
    """

    __tablename__ = "broadcast_recipients"
    __table_args__ = (
        UniqueConstraint("broadcast_id", "contact_id"),
        Index("ix_broadcast_recipients_contact", "contact_id", "inbox_id"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    broadcast_id: Mapped[int] = mapped_column(ForeignKey("broadcasts.id", ondelete="CASCADE"))
    contact_id: Mapped[int] = mapped_column(BigId)
    inbox_id: Mapped[int | None] = mapped_column(BigId)
    identity_id: Mapped[int | None] = mapped_column(BigId)
    channel: Mapped[str | None] = mapped_column(String(32))
    delivery_id: Mapped[int | None] = mapped_column(ForeignKey("deliveries.id", ondelete="SET NULL"), index=True)
    status: Mapped[str] = mapped_column(String(16))  # queued | skipped (then: the delivery's status)
    reason: Mapped[str | None] = mapped_column(String(64))  # skip reason
    unsubscribe_token: Mapped[str | None] = mapped_column(String(64), unique=True)
    replied_at: Mapped[datetime | None]
    opted_out_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
