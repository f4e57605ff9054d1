"""Tables of the email channel: mail that no contact can be made from."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from scrm.db.models import Base, BigId, utcnow


class UnroutableMail(Base):
    """A received mail without any usable sender address, kept with its raw source for an admin
    (refusing it would lose it: the sending side rarely tells anyone)."""

    __tablename__ = "unroutable_mail"
    __table_args__ = (UniqueConstraint("inbox_id", "external_id"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    inbox_id: Mapped[int] = mapped_column(ForeignKey("inboxes.id", ondelete="CASCADE"))
    external_id: Mapped[str] = mapped_column(String(255))  # Message-ID, or a hash of the raw bytes
    reason: Mapped[str] = mapped_column(Text)
    subject: Mapped[str] = mapped_column(String(500), default="")
    headers: Mapped[dict[str, Any]] = mapped_column(default=dict)  # sender/recipient headers as written
    warnings: Mapped[list[Any]] = mapped_column(default=list)
    raw_storage_key: Mapped[str | None] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(Integer, default=0)
    sent_at: Mapped[datetime | None]  # the mail's Date header
    received_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
