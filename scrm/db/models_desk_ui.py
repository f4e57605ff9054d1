"""Tables of the desk UI: per-agent notifications and per-agent preferences (signature, saved filters).

Kept beside the other desk tables (same Base and migration runner) without altering them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from scrm.db.models import Base, BigId, utcnow


class Notification(Base):
    """Something an agent should notice: assigned to them, a customer replied, an @mention, an SLA warning.

    `dedup_key` makes recording idempotent: an event handled twice (a worker taking over another's
    claimed events) still notifies once.
    """

    __tablename__ = "notifications"
    __table_args__ = (
        Index("ix_notifications_agent", "agent_id", "id"),
        Index("ix_notifications_unread", "agent_id", "read_at"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))  # assigned | replied | mention | sla_warning | sla_breached
    conversation_id: Mapped[int | None] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    ticket_id: Mapped[int | None] = mapped_column(BigId)
    message_id: Mapped[int | None] = mapped_column(BigId)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id", ondelete="SET NULL"))
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)  # contact name, snippet, SLA kind and due time
    dedup_key: Mapped[str] = mapped_column(String(160), unique=True)
    read_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AgentPreference(Base):
    """One agent's own settings: e-mail signature, saved ticket filters, notification choices."""

    __tablename__ = "agent_preferences"
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True)
    signature: Mapped[str | None] = mapped_column(Text)
    ticket_filters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    notify: Mapped[dict[str, Any]] = mapped_column(default=dict)  # {"sound": bool, "browser": bool}
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
