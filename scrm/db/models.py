"""SQLAlchemy 2.0 typed models. Identical on SQLite and PostgreSQL; times are stored in UTC."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from scrm.secret_box import SealedDict

# BIGINT ids on PostgreSQL, INTEGER (rowid alias) on SQLite.
BigId = BigInteger().with_variant(Integer(), "sqlite")

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both backends (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON(), list[Any]: JSON()}
    if TYPE_CHECKING:  # every model maps one Table; SQLAlchemy types __table__ as any FromClause
        __table__: ClassVar[Table]


class Agent(Base):
    __tablename__ = "agents"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    login: Mapped[str] = mapped_column(String(120), unique=True)
    email: Mapped[str | None] = mapped_column(String(255))
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))  # admin | agent | marketer
    display_name: Mapped[str] = mapped_column(String(120))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    availability: Mapped[str] = mapped_column(String(16), default="online")  # online | away | offline
    language: Mapped[str | None] = mapped_column(String(8))
    timezone: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime | None]


class ApiToken(Base):
    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(120))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex; token shown once
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class AgentSession(Base):
    __tablename__ = "agent_sessions"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]


class Inbox(Base):
    __tablename__ = "inboxes"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    channel_type: Mapped[str] = mapped_column(String(32))
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    secrets: Mapped[dict[str, Any]] = mapped_column(SealedDict(), default=dict)  # encrypted at rest
    # What a customer message on a resolved conversation does: "reopen" it or open a "new" one.
    reopen_policy: Mapped[str] = mapped_column(String(16), default="reopen")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class InboxState(Base):
    """Durable per-inbox adapter state (poll offsets, IMAP UIDs)."""

    __tablename__ = "inbox_state"
    inbox_id: Mapped[int] = mapped_column(ForeignKey("inboxes.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(120), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Contact(Base):
    __tablename__ = "contacts"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str | None] = mapped_column(String(255))
    email: Mapped[str | None] = mapped_column(String(255), index=True)
    phone: Mapped[str | None] = mapped_column(String(64), index=True)
    language: Mapped[str | None] = mapped_column(String(16))
    avatar_url: Mapped[str | None] = mapped_column(Text)
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # {"broadcast:<channel>": true, ...}: the contact refuses broadcasts on that channel
    opt_outs: Mapped[dict[str, Any]] = mapped_column(default=dict)
    first_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    merged_into_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id"))


class ContactTag(Base):
    __tablename__ = "contact_tags"
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)


class ContactIdentity(Base):
    """A contact's account on one inbox: (inbox, external user id) is unique."""

    __tablename__ = "contact_identities"
    __table_args__ = (UniqueConstraint("inbox_id", "external_id"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    inbox_id: Mapped[int] = mapped_column(ForeignKey("inboxes.id", ondelete="CASCADE"))
    external_id: Mapped[str] = mapped_column(String(255))
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id"), index=True)
    username: Mapped[str | None] = mapped_column(String(255))
    reachable: Mapped[bool] = mapped_column(Boolean, default=True)  # false: blocked us / bounced
    unreachable_reason: Mapped[str | None] = mapped_column(Text)
    subscribed: Mapped[bool] = mapped_column(Boolean, default=True)  # false: unsubscribed (WeChat)
    source: Mapped[str | None] = mapped_column(String(255))  # campaign / scene attribution
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)  # channel data (chat id, ...)
    last_inbound_at: Mapped[datetime | None]  # opens the channel's reply window
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Conversation(Base):
    __tablename__ = "conversations"
    __table_args__ = (
        Index("ix_conversations_activity", "last_activity_at", "id"),
        Index("ix_conversations_status_activity", "status", "last_activity_at", "id"),
        Index("ix_conversations_assignee_activity", "assignee_id", "status", "last_activity_at"),
        Index("ix_conversations_inbox_activity", "inbox_id", "last_activity_at"),
        Index("ix_conversations_identity_status", "identity_id", "status"),
        Index("ix_conversations_snoozed", "snoozed_until", postgresql_where=text("status = 'snoozed'"),
              sqlite_where=text("status = 'snoozed'")),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    inbox_id: Mapped[int] = mapped_column(ForeignKey("inboxes.id"))
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id"), index=True)
    identity_id: Mapped[int] = mapped_column(ForeignKey("contact_identities.id"))
    status: Mapped[str] = mapped_column(String(16), default="open")
    handler: Mapped[str] = mapped_column(String(16), default="bot")
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id"))
    priority: Mapped[str] = mapped_column(String(16), default="normal")  # low|normal|high|urgent
    subject: Mapped[str | None] = mapped_column(Text)
    waiting_since: Mapped[datetime | None]  # oldest customer message not yet answered by a human/bot
    first_reply_at: Mapped[datetime | None]
    last_activity_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_message_preview: Mapped[str | None] = mapped_column(String(200))
    unread_count: Mapped[int] = mapped_column(Integer, default=0)  # customer messages since agent read
    snoozed_until: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    bot_state: Mapped[dict[str, Any]] = mapped_column(default=dict)  # flow engine state
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)  # participants, channel thread data


class ConversationLabel(Base):
    __tablename__ = "conversation_labels"
    conversation_id: Mapped[int] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), primary_key=True
    )
    label: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("inbox_id", "external_id"),
        Index("ix_messages_conversation_id_id", "conversation_id", "id"),
        # Reports by date range; on PostgreSQL the index carries what they group by (index-only scans).
        Index("ix_messages_created_at", "created_at",
              postgresql_include=["direction", "sender_kind", "private", "conversation_id", "inbox_id"]),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    inbox_id: Mapped[int] = mapped_column(ForeignKey("inboxes.id"))
    direction: Mapped[str] = mapped_column(String(4))  # in | out
    sender_kind: Mapped[str] = mapped_column(String(16))  # contact | agent | bot | system
    sender_agent_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id"))
    content_type: Mapped[str] = mapped_column(String(32), default="text")
    text: Mapped[str | None] = mapped_column(Text)
    attachments: Mapped[list[Any]] = mapped_column(default=list)
    external_id: Mapped[str | None] = mapped_column(String(255))  # platform id; unique per inbox
    reply_to_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id"))
    delivery_status: Mapped[str | None] = mapped_column(String(16))  # outbound only
    delivery_error: Mapped[str | None] = mapped_column(Text)
    private: Mapped[bool] = mapped_column(Boolean, default=False)  # agent note, never sent
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)  # choices, channel data
    edit_history: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]  # the platform's timestamp for inbound messages


class Delivery(Base):
    """The outbox: one row per outbound send, written before the channel is called."""

    __tablename__ = "deliveries"
    __table_args__ = (
        Index("ix_deliveries_ready", "status", "next_attempt_at"),
        Index("ix_deliveries_ordering", "ordering_key", "status", "id"),
        # The claim takes each inbox's oldest queued rows: queued rows in id order, the inbox checked in
        # the index itself; sent rows (the vast majority) stay out of it. See migration 0012.
        Index("ix_deliveries_queue_inbox", "id", "inbox_id", postgresql_where=text("status = 'queued'"),
              sqlite_where=text("status = 'queued'")),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(64), unique=True)
    inbox_id: Mapped[int] = mapped_column(ForeignKey("inboxes.id"), index=True)
    message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), index=True)
    conversation_id: Mapped[int | None] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    identity_id: Mapped[int | None] = mapped_column(ForeignKey("contact_identities.id"))
    recipient_id: Mapped[str] = mapped_column(String(255))
    # Deliveries sharing an ordering key go out one at a time, in id order.
    ordering_key: Mapped[str] = mapped_column(String(300))
    kind: Mapped[str] = mapped_column(String(16), default="message")  # message | broadcast | notice
    status: Mapped[str] = mapped_column(String(16), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    claimed_by: Mapped[str | None] = mapped_column(String(120))
    lease_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    error_code: Mapped[str | None] = mapped_column(String(64))
    external_id: Mapped[str | None] = mapped_column(String(255))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)  # text, choices, metadata
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]


class Ticket(Base):
    __tablename__ = "tickets"
    __table_args__ = (
        Index("ix_tickets_status_id", "status", "id"),
        Index("ix_tickets_assignee_id", "assignee_id", "id"),
        Index("ix_tickets_team_id", "team_id", "id"),
        Index("ix_tickets_priority_id", "priority", "id"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    number: Mapped[int] = mapped_column(BigInteger, unique=True)  # shown to customers: #1042
    subject: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="new")  # new|open|pending|solved|closed
    priority: Mapped[str] = mapped_column(String(16), default="normal")
    conversation_id: Mapped[int | None] = mapped_column(ForeignKey("conversations.id"), index=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id"), index=True)
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id"))
    team_id: Mapped[int | None] = mapped_column(ForeignKey("desk_teams.id", ondelete="SET NULL"))
    merged_into_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"))  # a duplicate merged into that one
    fields: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class AuditLog(Base):
    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_target", "target_type", "target_id"),
                      Index("ix_audit_log_agent", "agent_id", "id"), Index("ix_audit_log_action", "action", "id"))
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    agent_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id"))
    action: Mapped[str] = mapped_column(String(64))
    target_type: Mapped[str] = mapped_column(String(32))
    target_id: Mapped[int | None] = mapped_column(BigInteger)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=text("CURRENT_TIMESTAMP"))


class FaqEntryRow(Base):
    """FAQ knowledge base entries (the bot's answers)."""

    __tablename__ = "faq_entries"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    key: Mapped[str] = mapped_column(String(120), unique=True)
    question: Mapped[str] = mapped_column(Text)
    paraphrases: Mapped[list[Any]] = mapped_column(default=list)
    answer: Mapped[str] = mapped_column(Text)
    buttons: Mapped[list[Any]] = mapped_column(default=list)
    category: Mapped[str | None] = mapped_column(String(64))
    language: Mapped[str] = mapped_column(String(8), default="zh")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    # What indexing the entry costs, kept with it: the matcher's analysis of its sentences and the
    # re-ranker's embeddings, each with the hash of what it was computed from. Loaded only by the FAQ
    # index (deferred).
    analysis: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    analysis_key: Mapped[str | None] = mapped_column(String(64))
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    embedding_key: Mapped[str | None] = mapped_column(String(64))


class UnansweredQuestion(Base):
    __tablename__ = "unanswered_questions"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    conversation_id: Mapped[int | None] = mapped_column(ForeignKey("conversations.id", ondelete="SET NULL"))
    text: Mapped[str] = mapped_column(Text)
    resolved: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WorkerHeartbeat(Base):
    """A running outbox worker (`name` as in Delivery.claimed_by), counting `beats` while it lives.

    Other workers tell a dead one by a count that stopped moving, watched on their own clocks, not by
    comparing timestamps written by hosts whose clocks may differ (see scrm/delivery/liveness.py).
    """

    __tablename__ = "worker_heartbeats"
    name: Mapped[str] = mapped_column(String(120), primary_key=True)
    beats: Mapped[int] = mapped_column(BigInteger, default=0)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    beat_at: Mapped[datetime] = mapped_column(default=utcnow)  # informative (for operators)
