"""unroutable mail: received mail without a usable sender, kept for an admin

Revision ID: i18_unroutable
Revises: 0014_merge
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "i18_unroutable"
down_revision = "0014_merge"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "unroutable_mail",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("inbox_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("external_id", sa.String(length=255), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("subject", sa.String(length=500), nullable=False),
        sa.Column("headers", sa.JSON(), nullable=False),
        sa.Column("warnings", sa.JSON(), nullable=False),
        sa.Column("raw_storage_key", sa.String(length=255), nullable=True),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["inbox_id"], ["inboxes.id"], name=op.f("fk_unroutable_mail_inbox_id_inboxes"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_unroutable_mail")),
        sa.UniqueConstraint("inbox_id", "external_id", name=op.f("uq_unroutable_mail_inbox_id")),
    )
    op.create_index(op.f("ix_unroutable_mail_received_at"), "unroutable_mail", ["received_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_unroutable_mail_received_at"), table_name="unroutable_mail")
    op.drop_table("unroutable_mail")
