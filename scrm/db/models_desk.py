"""Service-desk tables: teams, SLA, automation rules, outgoing webhooks, CSAT, per-conversation metrics.

They live beside the core tables (same Base, same migration runner) and never alter them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from scrm.db.models import Base, BigId, utcnow
from scrm.secret_box import SealedText


class DeskSetting(Base):
    """Desk-wide configuration by key: business_hours, assignment, csat, tickets."""

    __tablename__ = "desk_settings"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column(default=dict)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Team(Base):
    __tablename__ = "desk_teams"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    inbox_id: Mapped[int | None] = mapped_column(ForeignKey("inboxes.id", ondelete="CASCADE"), index=True)
    auto_assign: Mapped[bool] = mapped_column(Boolean, default=True)
    max_open_per_agent: Mapped[int] = mapped_column(Integer, default=10)
    reassign_on_offline: Mapped[bool] = mapped_column(Boolean, default=False)
    last_assigned_agent_id: Mapped[int | None] = mapped_column(BigId)  # the round-robin cursor
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TeamMember(Base):
    __tablename__ = "desk_team_members"
    team_id: Mapped[int] = mapped_column(ForeignKey("desk_teams.id", ondelete="CASCADE"), primary_key=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True, index=True)


class SlaPolicy(Base):
    __tablename__ = "desk_sla_policies"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    priority: Mapped[str | None] = mapped_column(String(16))  # None: any priority
    inbox_id: Mapped[int | None] = mapped_column(ForeignKey("inboxes.id", ondelete="CASCADE"))  # None: any inbox
    first_response_minutes: Mapped[int | None] = mapped_column(Integer)
    next_response_minutes: Mapped[int | None] = mapped_column(Integer)
    resolution_minutes: Mapped[int | None] = mapped_column(Integer)
    warn_before_minutes: Mapped[int] = mapped_column(Integer, default=15)
    business_hours: Mapped[bool] = mapped_column(Boolean, default=True)  # false: 24x7 clock
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ConversationStats(Base):
    """One row per conversation the desk has seen: SLA clocks and the figures reports aggregate.

    Durations are stored in business seconds when computed, so reports are plain SQL aggregates.
    """

    __tablename__ = "desk_conversation_stats"
    __table_args__ = (
        Index("ix_desk_stats_check", "next_check_at"),
        Index("ix_desk_stats_created", "created_at"),
        Index("ix_desk_stats_resolved", "resolved_at"),
        Index("ix_desk_stats_first_response", "first_response_at"),
    )
    conversation_id: Mapped[int] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), primary_key=True
    )
    inbox_id: Mapped[int] = mapped_column(BigId)
    team_id: Mapped[int | None] = mapped_column(BigId)
    agent_id: Mapped[int | None] = mapped_column(BigId)  # the assignee (last human owner)
    priority: Mapped[str] = mapped_column(String(16), default="normal")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    human_involved: Mapped[bool] = mapped_column(Boolean, default=False)
    handoffs: Mapped[int] = mapped_column(Integer, default=0)
    # SLA clock (started when a human is expected to answer)
    policy_id: Mapped[int | None] = mapped_column(BigId)
    sla_started_at: Mapped[datetime | None]
    first_response_due: Mapped[datetime | None]
    first_response_at: Mapped[datetime | None]
    first_response_secs: Mapped[float | None]
    next_response_due: Mapped[datetime | None]
    resolution_due: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    resolution_secs: Mapped[float | None]
    warned: Mapped[list[Any]] = mapped_column(default=list)  # kinds already warned
    breached: Mapped[list[Any]] = mapped_column(default=list)  # kinds breached (ever)
    sla_met: Mapped[bool | None] = mapped_column(Boolean)  # set on resolve: no breach at all
    next_check_at: Mapped[datetime | None]


class AutomationRule(Base):
    __tablename__ = "desk_automation_rules"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    event: Mapped[str] = mapped_column(String(64), index=True)
    conditions: Mapped[dict[str, Any]] = mapped_column(default=dict)
    actions: Mapped[list[Any]] = mapped_column(default=list)
    position: Mapped[int] = mapped_column(Integer, default=0)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class AutomationLog(Base):
    __tablename__ = "desk_automation_log"
    __table_args__ = (
        UniqueConstraint("rule_id", "event_id"),  # one run per rule and event, even across processes
        Index("ix_desk_automation_log_conversation", "conversation_id", "id"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    rule_id: Mapped[int] = mapped_column(ForeignKey("desk_automation_rules.id", ondelete="CASCADE"))
    event_id: Mapped[str] = mapped_column(String(64))
    event: Mapped[str] = mapped_column(String(64))
    conversation_id: Mapped[int | None] = mapped_column(BigId)
    actions: Mapped[list[Any]] = mapped_column(default=list)  # what was done, one entry per action
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookSubscription(Base):
    __tablename__ = "desk_webhooks"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    url: Mapped[str] = mapped_column(Text)
    secret: Mapped[str] = mapped_column(SealedText())  # encrypted at rest (scrm/secret_box.py)
    events: Mapped[list[Any]] = mapped_column(default=list)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookDelivery(Base):
    __tablename__ = "desk_webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("webhook_id", "event_id"),
        Index("ix_desk_webhook_deliveries_ready", "status", "next_attempt_at"),
        Index("ix_desk_webhook_deliveries_hook", "webhook_id", "id"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    webhook_id: Mapped[int] = mapped_column(ForeignKey("desk_webhooks.id", ondelete="CASCADE"))
    event_id: Mapped[str] = mapped_column(String(64))
    event: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default="queued")  # queued|sending|delivered|failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    response_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None]


class CsatSurvey(Base):
    __tablename__ = "desk_csat"
    __table_args__ = (
        Index("ix_desk_csat_conversation", "conversation_id", "id"),
        Index("ix_desk_csat_asked", "asked_at"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    inbox_id: Mapped[int] = mapped_column(BigId)
    contact_id: Mapped[int] = mapped_column(BigId)
    agent_id: Mapped[int | None] = mapped_column(BigId)
    team_id: Mapped[int | None] = mapped_column(BigId)
    ticket_id: Mapped[int | None] = mapped_column(BigId)
    status: Mapped[str] = mapped_column(String(16), default="asked")  # asked | answered | expired
    rating: Mapped[int | None] = mapped_column(Integer)
    comment: Mapped[str | None] = mapped_column(Text)
    asked_at: Mapped[datetime] = mapped_column(default=utcnow)
    answered_at: Mapped[datetime | None]


class TicketComment(Base):
    """Internal comment thread on a ticket (agents only)."""

    __tablename__ = "desk_ticket_comments"
    __table_args__ = (Index("ix_desk_ticket_comments_ticket", "ticket_id", "id"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"))
    agent_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id", ondelete="SET NULL"))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class FaqOutcome(Base):
    """How the bot's FAQ handled one customer question (one row per outcome; reports count them).

    outcome: answer (answered directly), clarify (offered candidates), picked (the customer chose a
    candidate), reject (no match), none (the customer said none of the candidates fit).
    """

    __tablename__ = "desk_faq_outcomes"
    __table_args__ = (Index("ix_desk_faq_outcomes_created", "created_at"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    inbox_id: Mapped[int] = mapped_column(BigId)
    message_id: Mapped[int | None] = mapped_column(BigId)  # the bot reply (none when it could not be sent)
    outcome: Mapped[str] = mapped_column(String(16))
    entry_key: Mapped[str | None] = mapped_column(String(120))
    confidence: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
