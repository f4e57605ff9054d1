"""FAQ entries keep what indexing them costs: the matcher's analysis of their sentences (jieba words,
English stems, n-grams) and the semantic re-ranker's sentence embeddings. A start or an index refresh
then reads them instead of running jieba and the encoder over the whole knowledge base again; only
entries whose text changed (or all, after the dictionaries or the model changed) are recomputed.

`analysis` is zlib-compressed JSON, `embedding` float16 rows (one per sentence: the question, then the
paraphrases). Each `*_key` is a hash of what it was computed from (dictionaries or model, and the
sentences): when it no longer matches, the value is recomputed.

Revision ID: i24_faq_precomputed
Revises: i21_desk_ui
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "i24_faq_precomputed"
down_revision = "i21_desk_ui"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("faq_entries") as batch:
        batch.add_column(sa.Column("analysis", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("analysis_key", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("embedding", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("embedding_key", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("faq_entries") as batch:
        batch.drop_column("embedding_key")
        batch.drop_column("embedding")
        batch.drop_column("analysis_key")
        batch.drop_column("analysis")
