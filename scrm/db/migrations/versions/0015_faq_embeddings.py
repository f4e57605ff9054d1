"""FAQ entries keep the semantic re-ranker's sentence embeddings, so a start or an index refresh does not
run the encoder over the whole knowledge base again (only entries whose text changed are re-encoded).

`embedding` holds float16 rows (one per sentence: the question, then the paraphrases); `embedding_key`
is a hash of the model and the sentences it was computed from: when either changes it no longer matches
and the embedding is recomputed.

Revision ID: i24_faq_embeddings
Revises: 0014_merge
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "i24_faq_embeddings"
down_revision = "0014_merge"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("faq_entries") as batch:
        batch.add_column(sa.Column("embedding", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("embedding_key", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("faq_entries") as batch:
        batch.drop_column("embedding_key")
        batch.drop_column("embedding")
