"""Inbox search: small GIN pending lists, and trigram indexes for one- or two-character CJK terms.

1. GIN indexes buffer new entries in an unsorted "pending list" (4 MB by default) that every search must
scan in full: measured at 1M messages, a full pending list added ~50 ms to each text search. A 128 kB
limit keeps that under ~2 ms while inserts stay batched (~20% slower bulk inserts, unmeasurable per message).
2. pg_trgm needs three characters in a word, so "王五" or "退款" could only be found by scanning every
message. These expression indexes space out each non-ASCII character so it is a word of its own; the
search (scrm/services/conversations/search.py) repeats the expressions verbatim. The messages one is
partial (rows with non-ASCII text only), so English-only inboxes pay nothing for it.
PostgreSQL only; skipped where pg_trgm is not installed (0007 logs that).

Revision ID: 0009_search_gin
Revises: 0007_search_trgm
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_search_gin"
down_revision = "0007_search_trgm"
branch_labels = None
depends_on = None

PENDING_LIMIT_KB = 128
SPACED = {
    "ix_messages_text_spaced": r"messages USING gin ((regexp_replace(text, '([^\x01-\x7f])', ' \1 ', 'g')) gin_trgm_ops)"
                               r" WHERE text ~ '[^\x01-\x7f]'",
    "ix_contacts_spaced": r"contacts USING gin ((regexp_replace(coalesce(name, '') || ' ' || coalesce(email, '') || ' ' || "
                          r"coalesce(phone, ''), '([^\x01-\x7f])', ' \1 ', 'g')) gin_trgm_ops)",
}
INDEXES = ("ix_messages_text_trgm", "ix_contacts_name_trgm", "ix_contacts_email_trgm", "ix_contacts_phone_trgm", *SPACED)


def _existing(bind: sa.engine.Connection) -> list[str]:
    rows = bind.execute(sa.text("SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() "
                                "AND indexname = ANY(:names)"), {"names": list(INDEXES)})
    return [r[0] for r in rows]


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    if bind.execute(sa.text("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'")).first():
        for name, definition in SPACED.items():
            op.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {definition}")
    for name in _existing(bind):
        op.execute(f"ALTER INDEX {name} SET (gin_pending_list_limit = {PENDING_LIMIT_KB})")
        # Merge what is already pending now rather than on some user's search.
        bind.execute(sa.text("SELECT gin_clean_pending_list(CAST(:name AS regclass))"), {"name": name})


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    for name in SPACED:
        op.execute(f"DROP INDEX IF EXISTS {name}")
    for name in _existing(bind):
        op.execute(f"ALTER INDEX {name} RESET (gin_pending_list_limit)")
