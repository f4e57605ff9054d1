"""marketing: attribute definitions, segments, broadcasts, broadcast recipients

Revision ID: 0004_marketing
Revises: 0001
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_marketing"
down_revision = "0001"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "attribute_definitions",
        sa.Column("id", BigId, nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("label", sa.String(120), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("choices", sa.JSON(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_attribute_definitions")),
        sa.UniqueConstraint("key", name=op.f("uq_attribute_definitions_key")),
    )
    op.create_table(
        "segments",
        sa.Column("id", BigId, nullable=False),
        sa.Column("name", sa.String(120), nullable=False),
        sa.Column("rules", sa.JSON(), nullable=False),
        sa.Column("created_by", BigId, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["created_by"], ["agents.id"], name=op.f("fk_segments_created_by_agents")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_segments")),
    )
    op.create_table(
        "broadcasts",
        sa.Column("id", BigId, nullable=False),
        sa.Column("name", sa.String(120), nullable=False),
        sa.Column("segment_id", BigId, nullable=True),
        sa.Column("rules", sa.JSON(), nullable=False),
        sa.Column("inbox_ids", sa.JSON(), nullable=False),
        sa.Column("template", sa.Text(), nullable=False),
        sa.Column("subject", sa.String(255), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("scheduled_at", TS, nullable=True),
        sa.Column("started_at", TS, nullable=True),
        sa.Column("finished_at", TS, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("reply_window_days", sa.Integer(), nullable=False),
        sa.Column("created_by", BigId, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["segment_id"], ["segments.id"], name=op.f("fk_broadcasts_segment_id_segments"),
                                ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["created_by"], ["agents.id"], name=op.f("fk_broadcasts_created_by_agents")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_broadcasts")),
    )
    op.create_index("ix_broadcasts_status_scheduled", "broadcasts", ["status", "scheduled_at"])
    op.create_table(
        "broadcast_recipients",
        sa.Column("id", BigId, nullable=False),
        sa.Column("broadcast_id", BigId, nullable=False),
        sa.Column("contact_id", BigId, nullable=False),
        sa.Column("inbox_id", BigId, nullable=True),
        sa.Column("identity_id", BigId, nullable=True),
        sa.Column("channel", sa.String(32), nullable=True),
        sa.Column("delivery_id", BigId, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(64), nullable=True),
        sa.Column("unsubscribe_token", sa.String(64), nullable=True),
        sa.Column("replied_at", TS, nullable=True),
        sa.Column("opted_out_at", TS, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["broadcast_id"], ["broadcasts.id"],
                                name=op.f("fk_broadcast_recipients_broadcast_id_broadcasts"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["contact_id"], ["contacts.id"], name=op.f("fk_broadcast_recipients_contact_id_contacts")),
        sa.ForeignKeyConstraint(["inbox_id"], ["inboxes.id"], name=op.f("fk_broadcast_recipients_inbox_id_inboxes")),
        sa.ForeignKeyConstraint(["identity_id"], ["contact_identities.id"],
                                name=op.f("fk_broadcast_recipients_identity_id_contact_identities")),
        sa.ForeignKeyConstraint(["delivery_id"], ["deliveries.id"],
                                name=op.f("fk_broadcast_recipients_delivery_id_deliveries"), ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_broadcast_recipients")),
        sa.UniqueConstraint("broadcast_id", "contact_id", name=op.f("uq_broadcast_recipients_broadcast_id")),
        sa.UniqueConstraint("unsubscribe_token", name=op.f("uq_broadcast_recipients_unsubscribe_token")),
    )
    op.create_index("ix_broadcast_recipients_contact", "broadcast_recipients", ["contact_id", "inbox_id"])
    op.create_index(op.f("ix_broadcast_recipients_delivery_id"), "broadcast_recipients", ["delivery_id"])


def downgrade() -> None:
    op.drop_table("broadcast_recipients")
    op.drop_index("ix_broadcasts_status_scheduled", table_name="broadcasts")
    op.drop_table("broadcasts")
    op.drop_table("segments")
    op.drop_table("attribute_definitions")
