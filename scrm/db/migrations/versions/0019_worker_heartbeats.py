"""Worker heartbeats: a dead worker's deliveries are recovered within seconds, not at the end of their lease.

Revision ID: i26_worker_heartbeats
Revises: i17_wecom
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "i26_worker_heartbeats"
down_revision = "i17_wecom"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "worker_heartbeats",
        sa.Column("name", sa.String(120), primary_key=True),
        sa.Column("beats", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("beat_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("worker_heartbeats")
