"""broadcast_recipients is a snapshot: no foreign keys to contacts, inboxes, contact identities

A started broadcast's recipient rows record who was targeted over which channel; they must keep the
broadcast's counts whatever later happens to the contact, inbox or identity. The per-row checks of
these three keys also dominated materializing a large broadcast on PostgreSQL. The keys to the
broadcast (cascade) and to the delivery (set null) stay.

Revision ID: 0010_broadcast_snapshot
Revises: 0004_marketing
"""
from __future__ import annotations

from alembic import op

revision = "0010_broadcast_snapshot"
down_revision = "0004_marketing"
branch_labels = None
depends_on = None

# (constraint name, column, referred table) as created by 0004_marketing.
SNAPSHOT_FKS = (
    ("fk_broadcast_recipients_contact_id_contacts", "contact_id", "contacts"),
    ("fk_broadcast_recipients_inbox_id_inboxes", "inbox_id", "inboxes"),
    ("fk_broadcast_recipients_identity_id_contact_identities", "identity_id", "contact_identities"),
)


def upgrade() -> None:
    # On SQLite the batch rebuilds the table (copy, drop, rename); on PostgreSQL it is three ALTERs.
    with op.batch_alter_table("broadcast_recipients") as batch:
        for name, _column, _table in SNAPSHOT_FKS:
            batch.drop_constraint(name, type_="foreignkey")


def downgrade() -> None:
    with op.batch_alter_table("broadcast_recipients") as batch:
        for name, column, table in SNAPSHOT_FKS:
            batch.create_foreign_key(name, table, [column], ["id"])
