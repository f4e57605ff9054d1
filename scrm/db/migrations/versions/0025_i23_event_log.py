"""The event log: events written in the transaction that caused them, worked by durable consumers.

Revision ID: i23_event_log
Revises: i19b_secrets_at_rest
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "i23_event_log"
down_revision = "i19b_secrets_at_rest"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("conversation_id", sa.BigInteger(), nullable=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("worked_at", TS, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
    )
    op.create_index("ix_events_unworked", "events", ["id"], postgresql_where=sa.text("worked_at IS NULL"),
                    sqlite_where=sa.text("worked_at IS NULL"))
    op.create_index("ix_events_worked_at", "events", ["worked_at"])


def downgrade() -> None:
    op.drop_index("ix_events_worked_at", table_name="events")
    op.drop_index("ix_events_unworked", table_name="events")
    op.drop_table("events")
