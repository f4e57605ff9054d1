"""Index messages by creation time for date-range reports.

Revision ID: 0008_messages_created
Revises: 0001
"""
from __future__ import annotations

from alembic import op

revision = "0008_messages_created"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_messages_created_at", "messages", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_messages_created_at", table_name="messages")
