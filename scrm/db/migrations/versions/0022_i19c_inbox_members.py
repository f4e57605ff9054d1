"""Inbox membership (agents and teams per inbox) and file uploaders: agents see only their inboxes.

Revision ID: i19c_inbox_members
Revises: i26_worker_heartbeats
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "i19c_inbox_members"
down_revision = "i25b_campaigns"
branch_labels = None
depends_on = None


def upgrade() -> None:
    big = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.create_table(
        "inbox_agents",
        sa.Column("inbox_id", big, sa.ForeignKey("inboxes.id", ondelete="CASCADE",
                                                 name="fk_inbox_agents_inbox_id_inboxes"), nullable=False),
        sa.Column("agent_id", big, sa.ForeignKey("agents.id", ondelete="CASCADE",
                                                 name="fk_inbox_agents_agent_id_agents"), nullable=False),
        sa.PrimaryKeyConstraint("inbox_id", "agent_id", name="pk_inbox_agents"),
    )
    op.create_index("ix_inbox_agents_agent_id", "inbox_agents", ["agent_id"])
    op.create_table(
        "inbox_teams",
        sa.Column("inbox_id", big, sa.ForeignKey("inboxes.id", ondelete="CASCADE",
                                                 name="fk_inbox_teams_inbox_id_inboxes"), nullable=False),
        sa.Column("team_id", big, sa.ForeignKey("desk_teams.id", ondelete="CASCADE",
                                                name="fk_inbox_teams_team_id_desk_teams"), nullable=False),
        sa.PrimaryKeyConstraint("inbox_id", "team_id", name="pk_inbox_teams"),
    )
    op.create_index("ix_inbox_teams_team_id", "inbox_teams", ["team_id"])
    op.create_table(
        "file_uploads",
        sa.Column("storage_key", sa.String(64), nullable=False),
        sa.Column("agent_id", big, sa.ForeignKey("agents.id", ondelete="CASCADE",
                                                 name="fk_file_uploads_agent_id_agents"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("storage_key", name="pk_file_uploads"),
    )


def downgrade() -> None:
    op.drop_table("file_uploads")
    op.drop_table("inbox_teams")
    op.drop_table("inbox_agents")
