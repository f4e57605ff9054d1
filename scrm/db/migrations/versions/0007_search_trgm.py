"""Trigram indexes for the inbox text search on PostgreSQL (ILIKE '%...%' without a full scan).

Skipped on SQLite, and on PostgreSQL servers where the pg_trgm extension cannot be created
(search still works there, only slower).

Revision ID: 0007_search_trgm
Revises: 0001
"""
from __future__ import annotations

import logging

import sqlalchemy as sa
from alembic import op

revision = "0007_search_trgm"
down_revision = "0001"
branch_labels = None
depends_on = None

log = logging.getLogger("alembic")
INDEXES = {
    "ix_messages_text_trgm": ("messages", "text"),
    "ix_contacts_name_trgm": ("contacts", "name"),
    "ix_contacts_email_trgm": ("contacts", "email"),
    "ix_contacts_phone_trgm": ("contacts", "phone"),
}


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    savepoint = bind.begin_nested()
    try:
        bind.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
        savepoint.commit()
    except sa.exc.DBAPIError as exc:
        savepoint.rollback()
        log.warning("pg_trgm unavailable (%s): text search will scan; ask your DBA to CREATE EXTENSION pg_trgm",
                    type(exc.orig).__name__)
        return
    for name, (table, column) in INDEXES.items():
        op.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {table} USING gin ({column} gin_trgm_ops)")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name in INDEXES:
        op.execute(f"DROP INDEX IF EXISTS {name}")
