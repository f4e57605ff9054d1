"""The desk in the browser: notifications, agent preferences, ticket team and merge, and the indexes
the ticket list, the snooze waker and the audit log query need.

Revision ID: i21_desk_ui
Revises: i18_unroutable
"""
from __future__ import annotations

import logging

import sqlalchemy as sa
from alembic import op

revision = "i21_desk_ui"
down_revision = "i18_unroutable"
branch_labels = None
depends_on = None

log = logging.getLogger("alembic")
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "notifications",
        sa.Column("id", ID, nullable=False),
        sa.Column("agent_id", ID, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("conversation_id", ID, nullable=True),
        sa.Column("ticket_id", ID, nullable=True),
        sa.Column("message_id", ID, nullable=True),
        sa.Column("actor_id", ID, nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("dedup_key", sa.String(160), nullable=False),
        sa.Column("read_at", TS, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["agent_id"], ["agents.id"], name=op.f("fk_notifications_agent_id_agents"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["conversation_id"], ["conversations.id"],
                                name=op.f("fk_notifications_conversation_id_conversations"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["actor_id"], ["agents.id"], name=op.f("fk_notifications_actor_id_agents"),
                                ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
        sa.UniqueConstraint("dedup_key", name=op.f("uq_notifications_dedup_key")),
    )
    op.create_index("ix_notifications_agent", "notifications", ["agent_id", "id"])
    op.create_index("ix_notifications_unread", "notifications", ["agent_id", "read_at"])
    op.create_table(
        "agent_preferences",
        sa.Column("agent_id", ID, nullable=False),
        sa.Column("signature", sa.Text(), nullable=True),
        sa.Column("ticket_filters", sa.JSON(), nullable=False),
        sa.Column("notify", sa.JSON(), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["agent_id"], ["agents.id"], name=op.f("fk_agent_preferences_agent_id_agents"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("agent_id", name=op.f("pk_agent_preferences")),
    )
    with op.batch_alter_table("tickets") as batch:
        batch.add_column(sa.Column("team_id", ID, nullable=True))
        batch.add_column(sa.Column("merged_into_id", ID, nullable=True))
        batch.create_foreign_key(op.f("fk_tickets_team_id_desk_teams"), "desk_teams", ["team_id"], ["id"],
                                 ondelete="SET NULL")
        batch.create_foreign_key(op.f("fk_tickets_merged_into_id_tickets"), "tickets", ["merged_into_id"], ["id"])
    # The ticket list: newest first within a status, an assignee or a team.
    op.create_index("ix_tickets_status_id", "tickets", ["status", "id"])
    op.create_index("ix_tickets_assignee_id", "tickets", ["assignee_id", "id"])
    op.create_index("ix_tickets_team_id", "tickets", ["team_id", "id"])
    op.create_index("ix_tickets_priority_id", "tickets", ["priority", "id"])
    # The snooze waker reads only snoozed conversations, by their wake-up time.
    op.create_index("ix_conversations_snoozed", "conversations", ["snoozed_until"],
                    postgresql_where=sa.text("status = 'snoozed'"), sqlite_where=sa.text("status = 'snoozed'"))
    op.create_index("ix_audit_log_agent", "audit_log", ["agent_id", "id"])
    op.create_index("ix_audit_log_action", "audit_log", ["action", "id"])
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        # Ticket subject search (ILIKE '%...%') uses the trigram index when pg_trgm exists (see 0007).
        has_trgm = bind.execute(sa.text("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'")).scalar()
        if has_trgm:
            op.execute("CREATE INDEX IF NOT EXISTS ix_tickets_subject_trgm ON tickets USING gin (subject gin_trgm_ops)")
        else:
            log.warning("pg_trgm unavailable: the ticket text filter will scan")


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_tickets_subject_trgm")
    op.drop_index("ix_audit_log_action", "audit_log")
    op.drop_index("ix_audit_log_agent", "audit_log")
    op.drop_index("ix_conversations_snoozed", "conversations")
    for name in ("ix_tickets_priority_id", "ix_tickets_team_id", "ix_tickets_assignee_id", "ix_tickets_status_id"):
        op.drop_index(name, "tickets")
    with op.batch_alter_table("tickets") as batch:
        batch.drop_constraint(op.f("fk_tickets_merged_into_id_tickets"), type_="foreignkey")
        batch.drop_constraint(op.f("fk_tickets_team_id_desk_teams"), type_="foreignkey")
        batch.drop_column("merged_into_id")
        batch.drop_column("team_id")
    op.drop_table("agent_preferences")
    op.drop_index("ix_notifications_unread", "notifications")
    op.drop_index("ix_notifications_agent", "notifications")
    op.drop_table("notifications")
