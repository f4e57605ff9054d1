"""Partial index over queued deliveries for the worker's claim.

Revision ID: 0006_outbox_queue
Revises: 0001
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_outbox_queue"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_deliveries_queue", "deliveries", ["id"], postgresql_where=sa.text("status = 'queued'"),
                    sqlite_where=sa.text("status = 'queued'"))


def downgrade() -> None:
    op.drop_index("ix_deliveries_queue", table_name="deliveries")
