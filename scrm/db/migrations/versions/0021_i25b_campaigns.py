"""Campaigns: tracked links, conversions, campaign QR codes and touches, attribution, churn scores

Revision ID: i25b_campaigns
Revises: i26_worker_heartbeats
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "i25b_campaigns"
down_revision = "i25a_mass_send"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def _fk(table: str, column: str, target: str, ondelete: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint([column], [f"{target}.id"], name=op.f(f"fk_{table}_{column}_{target}"),
                                   ondelete=ondelete)


def upgrade() -> None:
    op.create_table(
        "tracked_links",
        sa.Column("id", BigId, nullable=False),
        sa.Column("token", sa.String(32), nullable=False),
        sa.Column("broadcast_id", BigId, nullable=False),
        sa.Column("contact_id", BigId, nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("clicks", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("first_clicked_at", TS, nullable=True),
        sa.Column("last_clicked_at", TS, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        _fk("tracked_links", "broadcast_id", "broadcasts", "CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tracked_links")),
        sa.UniqueConstraint("token", name=op.f("uq_tracked_links_token")),
    )
    op.create_index("ix_tracked_links_broadcast", "tracked_links", ["broadcast_id", "contact_id"])
    op.create_table(
        "campaigns",
        sa.Column("id", BigId, nullable=False),
        sa.Column("name", sa.String(120), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_by", BigId, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        _fk("campaigns", "created_by", "agents", "SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaigns")),
    )
    op.create_table(
        "campaign_qr_codes",
        sa.Column("id", BigId, nullable=False),
        sa.Column("campaign_id", BigId, nullable=False),
        sa.Column("inbox_id", BigId, nullable=False),
        sa.Column("scene", sa.String(64), nullable=False),
        sa.Column("permanent", sa.Boolean(), nullable=False),
        sa.Column("ticket", sa.Text(), nullable=True),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("expires_at", TS, nullable=True),
        sa.Column("welcome_text", sa.Text(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        _fk("campaign_qr_codes", "campaign_id", "campaigns", "CASCADE"),
        _fk("campaign_qr_codes", "inbox_id", "inboxes", "CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaign_qr_codes")),
        sa.UniqueConstraint("inbox_id", "scene", name=op.f("uq_campaign_qr_codes_inbox_id")),
    )
    op.create_index(op.f("ix_campaign_qr_codes_campaign_id"), "campaign_qr_codes", ["campaign_id"])
    op.create_table(
        "campaign_touches",
        sa.Column("id", BigId, nullable=False),
        sa.Column("campaign_id", BigId, nullable=False),
        sa.Column("qr_code_id", BigId, nullable=True),
        sa.Column("inbox_id", BigId, nullable=False),
        sa.Column("contact_id", BigId, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("event_id", sa.String(255), nullable=False),
        sa.Column("occurred_at", TS, nullable=False),
        _fk("campaign_touches", "campaign_id", "campaigns", "CASCADE"),
        _fk("campaign_touches", "qr_code_id", "campaign_qr_codes", "SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaign_touches")),
        sa.UniqueConstraint("inbox_id", "event_id", name=op.f("uq_campaign_touches_inbox_id")),
    )
    op.create_index("ix_campaign_touches_contact", "campaign_touches", ["contact_id"])
    op.create_index("ix_campaign_touches_campaign", "campaign_touches", ["campaign_id", "occurred_at"])
    op.create_table(
        "contact_attributions",
        sa.Column("contact_id", BigId, nullable=False),
        sa.Column("first_campaign_id", BigId, nullable=True),
        sa.Column("first_touch_at", TS, nullable=True),
        sa.Column("last_campaign_id", BigId, nullable=True),
        sa.Column("last_touch_at", TS, nullable=True),
        _fk("contact_attributions", "contact_id", "contacts", "CASCADE"),
        _fk("contact_attributions", "first_campaign_id", "campaigns", "SET NULL"),
        _fk("contact_attributions", "last_campaign_id", "campaigns", "SET NULL"),
        sa.PrimaryKeyConstraint("contact_id", name=op.f("pk_contact_attributions")),
    )
    op.create_table(
        "conversions",
        sa.Column("id", BigId, nullable=False),
        sa.Column("order_id", sa.String(128), nullable=False),
        sa.Column("contact_id", BigId, nullable=False),
        sa.Column("value_cents", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("broadcast_id", BigId, nullable=True),
        sa.Column("campaign_id", BigId, nullable=True),
        sa.Column("occurred_at", TS, nullable=False),
        sa.Column("created_by", BigId, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        _fk("conversions", "broadcast_id", "broadcasts", "SET NULL"),
        _fk("conversions", "campaign_id", "campaigns", "SET NULL"),
        _fk("conversions", "created_by", "agents", "SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_conversions")),
        sa.UniqueConstraint("order_id", name=op.f("uq_conversions_order_id")),
    )
    op.create_index(op.f("ix_conversions_contact_id"), "conversions", ["contact_id"])
    op.create_index(op.f("ix_conversions_broadcast_id"), "conversions", ["broadcast_id"])
    op.create_index(op.f("ix_conversions_campaign_id"), "conversions", ["campaign_id"])
    op.create_table(
        "churn_scores",
        sa.Column("contact_id", BigId, nullable=False),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("at_risk", sa.Boolean(), nullable=False),
        sa.Column("crossed_at", TS, nullable=True),
        sa.Column("computed_at", TS, nullable=False),
        _fk("churn_scores", "contact_id", "contacts", "CASCADE"),
        sa.PrimaryKeyConstraint("contact_id", name=op.f("pk_churn_scores")),
    )
    op.create_index(op.f("ix_churn_scores_score"), "churn_scores", ["score"])


def downgrade() -> None:
    for table in ("churn_scores", "conversions", "contact_attributions", "campaign_touches", "campaign_qr_codes",
                  "campaigns", "tracked_links"):
        op.drop_table(table)
