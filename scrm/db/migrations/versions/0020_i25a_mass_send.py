"""WeChat OA 群发 batches (clientmsgid recorded before sending), subscription-message consents, broadcast delivery modes

Revision ID: i25a_mass_send
Revises: i26_worker_heartbeats
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "i25a_mass_send"
down_revision = "i26_worker_heartbeats"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("broadcasts") as batch:
        batch.add_column(sa.Column("delivery_mode", sa.String(16), nullable=False, server_default="standard"))
        batch.add_column(sa.Column("delivery_options", sa.JSON(), nullable=False, server_default="{}"))
    op.create_table(
        "wechat_mass_batches",
        sa.Column("id", BigId, nullable=False),
        sa.Column("broadcast_id", BigId, nullable=True),
        sa.Column("inbox_id", BigId, nullable=False),
        sa.Column("clientmsgid", sa.String(64), nullable=False),
        sa.Column("target", sa.String(8), nullable=False),
        sa.Column("tag_id", sa.Integer(), nullable=True),
        sa.Column("recipients", sa.Integer(), nullable=False),
        sa.Column("first_delivery_id", BigId, nullable=True),
        sa.Column("last_delivery_id", BigId, nullable=True),
        sa.Column("control_delivery_id", BigId, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("msg_id", sa.String(32), nullable=True),
        sa.Column("msg_status", sa.String(32), nullable=True),
        sa.Column("job_status", sa.String(64), nullable=True),
        sa.Column("total_count", sa.Integer(), nullable=True),
        sa.Column("filter_count", sa.Integer(), nullable=True),
        sa.Column("sent_count", sa.Integer(), nullable=True),
        sa.Column("error_count", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("submitted_at", TS, nullable=True),
        sa.Column("finished_at", TS, nullable=True),
        sa.ForeignKeyConstraint(["broadcast_id"], ["broadcasts.id"],
                                name=op.f("fk_wechat_mass_batches_broadcast_id_broadcasts"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["inbox_id"], ["inboxes.id"], name=op.f("fk_wechat_mass_batches_inbox_id_inboxes"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["control_delivery_id"], ["deliveries.id"],
                                name=op.f("fk_wechat_mass_batches_control_delivery_id_deliveries"),
                                ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_wechat_mass_batches")),
        sa.UniqueConstraint("clientmsgid", name=op.f("uq_wechat_mass_batches_clientmsgid")),
    )
    op.create_index(op.f("ix_wechat_mass_batches_broadcast_id"), "wechat_mass_batches", ["broadcast_id"])
    op.create_index(op.f("ix_wechat_mass_batches_msg_id"), "wechat_mass_batches", ["msg_id"])
    op.create_table(
        "wechat_subscribe_consents",
        sa.Column("identity_id", BigId, nullable=False),
        sa.Column("template_id", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("remaining", sa.Integer(), nullable=False),
        sa.Column("long_term", sa.Boolean(), nullable=False),
        sa.Column("popup_scene", sa.String(16), nullable=True),
        sa.Column("last_event", sa.String(160), nullable=True),
        sa.Column("last_result", sa.String(120), nullable=True),
        sa.Column("updated_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["identity_id"], ["contact_identities.id"],
                                name=op.f("fk_wechat_subscribe_consents_identity_id_contact_identities"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("identity_id", "template_id", name=op.f("pk_wechat_subscribe_consents")),
    )


def downgrade() -> None:
    op.drop_table("wechat_subscribe_consents")
    op.drop_table("wechat_mass_batches")
    with op.batch_alter_table("broadcasts") as batch:
        batch.drop_column("delivery_options")
        batch.drop_column("delivery_mode")
