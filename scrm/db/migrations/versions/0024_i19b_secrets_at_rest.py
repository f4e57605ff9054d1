"""Secrets at rest: an outgoing webhook's signing secret is stored encrypted, longer than 128 characters.

The encryption itself is no migration: it needs the key, which migrations do not have. Rows written
before it are read as they are and sealed when a process starts (scrm/secret_box.py).

Revision ID: i19b_secrets_at_rest
Revises: i21b_ticket_indexes
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "i19b_secrets_at_rest"
down_revision = "i21b_ticket_indexes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # SQLite does not enforce VARCHAR lengths: only PostgreSQL needs the wider type.
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("desk_webhooks", "secret", type_=sa.Text(), existing_type=sa.String(128),
                        existing_nullable=False)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("desk_webhooks", "secret", type_=sa.String(128), existing_type=sa.Text(),
                        existing_nullable=False)
