"""Who may see what: inbox membership (agents and teams per inbox) and who uploaded a file.

An inbox with no member rows at all is open to every agent (the behaviour before membership existed,
so a fresh install and the demo keep working); once an admin adds a member it is visible only to its
member agents, the members of its member teams, and admins.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from scrm.db.models import Base, utcnow


class InboxAgent(Base):
    __tablename__ = "inbox_agents"
    inbox_id: Mapped[int] = mapped_column(ForeignKey("inboxes.id", ondelete="CASCADE"), primary_key=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True, index=True)


class InboxTeam(Base):
    __tablename__ = "inbox_teams"
    inbox_id: Mapped[int] = mapped_column(ForeignKey("inboxes.id", ondelete="CASCADE"), primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("desk_teams.id", ondelete="CASCADE"), primary_key=True,
                                         index=True)


class FileUpload(Base):
    """A file an agent uploaded (before any message carries it, only the uploader may fetch it)."""

    __tablename__ = "file_uploads"
    storage_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
