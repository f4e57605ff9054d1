"""WeCom: kf sync cursors and pull leases, UnionID links, contact ways, corp tags, 群发 tasks

Revision ID: i17_wecom
Revises: i24_faq_precomputed
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "i17_wecom"
down_revision = "i24_faq_precomputed"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "wecom_kf_cursors",
        sa.Column("inbox_id", BigId, nullable=False),
        sa.Column("open_kfid", sa.String(64), nullable=False),
        sa.Column("cursor", sa.String(128), nullable=True),
        sa.Column("requested_seq", sa.Integer(), nullable=False),
        sa.Column("pulled_seq", sa.Integer(), nullable=False),
        sa.Column("pending_token", sa.Text(), nullable=True),
        sa.Column("pending_at", TS, nullable=True),
        sa.Column("lease_owner", sa.String(160), nullable=True),
        sa.Column("lease_until", TS, nullable=True),
        sa.Column("last_pull_at", TS, nullable=True),
        sa.Column("last_catchup_at", TS, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("pulled_total", sa.Integer(), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["inbox_id"], ["inboxes.id"], name=op.f("fk_wecom_kf_cursors_inbox_id_inboxes"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("inbox_id", "open_kfid", name=op.f("pk_wecom_kf_cursors")),
    )
    op.create_table(
        "wechat_unionids",
        sa.Column("identity_id", BigId, nullable=False),
        sa.Column("unionid", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["identity_id"], ["contact_identities.id"],
                                name=op.f("fk_wechat_unionids_identity_id_contact_identities"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("identity_id", name=op.f("pk_wechat_unionids")),
    )
    op.create_index(op.f("ix_wechat_unionids_unionid"), "wechat_unionids", ["unionid"], unique=False)
    op.create_table(
        "wecom_contact_ways",
        sa.Column("id", BigId, nullable=False),
        sa.Column("inbox_id", BigId, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(120), nullable=False),
        sa.Column("scene", sa.String(64), nullable=False),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("qr_code", sa.Text(), nullable=True),
        sa.Column("config_id", sa.String(64), nullable=True),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("created_by", BigId, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["inbox_id"], ["inboxes.id"], name=op.f("fk_wecom_contact_ways_inbox_id_inboxes"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["created_by"], ["agents.id"], name=op.f("fk_wecom_contact_ways_created_by_agents"),
                                ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_wecom_contact_ways")),
        sa.UniqueConstraint("inbox_id", "scene", name=op.f("uq_wecom_contact_ways_inbox_id")),
    )
    op.create_table(
        "wecom_corp_tags",
        sa.Column("inbox_id", BigId, nullable=False),
        sa.Column("tag_id", sa.String(64), nullable=False),
        sa.Column("group_id", sa.String(64), nullable=True),
        sa.Column("group_name", sa.String(64), nullable=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("ours", sa.Boolean(), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["inbox_id"], ["inboxes.id"], name=op.f("fk_wecom_corp_tags_inbox_id_inboxes"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("inbox_id", "tag_id", name=op.f("pk_wecom_corp_tags")),
    )
    op.create_index(op.f("ix_wecom_corp_tags_name"), "wecom_corp_tags", ["name"], unique=False)
    op.create_table(
        "wecom_mass_tasks",
        sa.Column("id", BigId, nullable=False),
        sa.Column("broadcast_id", BigId, nullable=True),
        sa.Column("inbox_id", BigId, nullable=False),
        sa.Column("sender_userid", sa.String(64), nullable=False),
        sa.Column("control_delivery_id", BigId, nullable=True),
        sa.Column("msgid", sa.String(128), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("delivery_ids", sa.JSON(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("polled_at", TS, nullable=True),
        sa.ForeignKeyConstraint(["broadcast_id"], ["broadcasts.id"],
                                name=op.f("fk_wecom_mass_tasks_broadcast_id_broadcasts"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["inbox_id"], ["inboxes.id"], name=op.f("fk_wecom_mass_tasks_inbox_id_inboxes"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["control_delivery_id"], ["deliveries.id"],
                                name=op.f("fk_wecom_mass_tasks_control_delivery_id_deliveries"), ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_wecom_mass_tasks")),
    )
    op.create_index(op.f("ix_wecom_mass_tasks_broadcast_id"), "wecom_mass_tasks", ["broadcast_id"], unique=False)


def downgrade() -> None:
    for table in ("wecom_mass_tasks", "wecom_corp_tags", "wecom_contact_ways", "wechat_unionids", "wecom_kf_cursors"):
        op.drop_table(table)
