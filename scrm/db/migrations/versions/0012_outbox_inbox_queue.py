"""The worker claims each inbox's oldest queued deliveries: the queue index carries the inbox too.

The claim asks, per inbox, for its oldest due queued rows. With the inbox as a second key column of
the partial queue index, rows of other inboxes are passed over in the index, never fetched from the
table (a 100k-recipient broadcast on a slow channel queued ahead of a fast one's costs a fast claim
an index walk, not 100k row reads). The id stays the leading column on purpose: the planner keeps
choosing this index for "oldest first" (it took the primary key, walking every sent row, for an index
led by the inbox: 100 ms a claim with 150k sent rows), and a broadcast's rows still go in at the
index's right edge.

Revision ID: 0012_outbox_inbox_queue
Revises: 0006_outbox_queue
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_outbox_inbox_queue"
down_revision = "0006_outbox_queue"
branch_labels = None
depends_on = None

QUEUED = sa.text("status = 'queued'")


def upgrade() -> None:
    op.create_index("ix_deliveries_queue_inbox", "deliveries", ["id", "inbox_id"], postgresql_where=QUEUED,
                    sqlite_where=QUEUED)
    op.drop_index("ix_deliveries_queue", table_name="deliveries")


def downgrade() -> None:
    op.create_index("ix_deliveries_queue", "deliveries", ["id"], postgresql_where=QUEUED, sqlite_where=QUEUED)
    op.drop_index("ix_deliveries_queue_inbox", table_name="deliveries")
