"""The event log: what must follow a change, written in the transaction that made the change.

Consumers (scrm/event_log.py) work its rows in id order per conversation and set `worked_at` in the
transaction of their own writes, so a follow-up (a bot answer, desk bookkeeping) happens once even
when a process dies at any point. Worked rows stay for `events.retention_hours` (debugging), then
the periodic pruner deletes them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from scrm.db.models import Base, BigId, utcnow


class EventRecord(Base):
    """One committed event. `id` (allocated in the writing transaction) is the order of work."""

    __tablename__ = "events"
    __table_args__ = (
        # The consumers' queue: only rows still to work are indexed, so the index stays small.
        Index("ix_events_unworked", "id", postgresql_where=text("worked_at IS NULL"),
              sqlite_where=text("worked_at IS NULL")),
        Index("ix_events_worked_at", "worked_at"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    conversation_id: Mapped[int | None] = mapped_column(BigInteger)
    name: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    worked_at: Mapped[datetime | None]
    # Why a listener could not do its part (an exception, after the event was retried on its own).
    error: Mapped[str | None] = mapped_column(Text)
