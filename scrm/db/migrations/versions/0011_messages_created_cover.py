"""Date-range reports read messages from the index alone (PostgreSQL).

The reports count messages per day, direction and sender over up to a year: with the columns they
filter and group on carried in the created_at index, PostgreSQL answers from the index without
visiting each (wide) message row. SQLite keeps the plain index.

Revision ID: 0011_messages_created_cover
Revises: 0008_messages_created
"""
from __future__ import annotations

from alembic import op

revision = "0011_messages_created_cover"
down_revision = "0008_messages_created"
branch_labels = None
depends_on = None

COVERED = ["direction", "sender_kind", "private", "conversation_id", "inbox_id"]


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_index("ix_messages_created_at", table_name="messages")
    op.create_index("ix_messages_created_at", "messages", ["created_at"], postgresql_include=COVERED)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_index("ix_messages_created_at", table_name="messages")
    op.create_index("ix_messages_created_at", "messages", ["created_at"])
