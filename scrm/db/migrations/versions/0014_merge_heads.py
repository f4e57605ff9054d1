"""Merge the eight heads that earlier migrations left off 0001 into one line.

From here on every migration revises the one before it (`alembic heads` shows one head;
tests/core/test_migrations.py keeps it so).

Revision ID: 0014_merge
Revises: the eight earlier heads
"""
from __future__ import annotations

revision = "0014_merge"
down_revision = (
    "0002_canned",
    "0005_desk",
    "0009_faq_outcomes",
    "0009_search_gin",
    "0010_broadcast_snapshot",
    "0011_messages_created_cover",
    "0012_outbox_inbox_queue",
    "0013_ingest_batch",
)
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Nothing to change: a merge point only."""


def downgrade() -> None:
    """Nothing to change: a merge point only."""
