"""PostgreSQL CPU per customer message: ingest's statements keep their plans, GIN inserts merge in larger runs.

1. `scrm_ingest_batch` keeps generic plans for its statements (`plan_cache_mode = force_generic_plan`, for
   the function's own statements only). PL/pgSQL passes its variables as parameters; with the default
   `auto` the planner found each custom plan cheaper (it sees the arrays' sizes) and planned the clock
   updates and the messages INSERT anew on every call (pg_stat_statements at 200 msg/s: ~0.14 ms of
   planning per message), and on small tables the custom plans of `id = ANY(k_contacts)` were sequential
   scans (1,500 scans of contacts, identities and conversations in a 10 s run; 105 after). Every
   statement in it looks rows up by key, which is what the generic plans do.
2. `scrm_ingest_logged` is the call ingest_pg.py made (the batch function, then the event-log rows of what
   it stored, one statement) as a function of its own with generic plans: sent as a CTE of 25 parameters
   it was planned anew on every call (its custom plans drop the UNION branches a false flag disables, so
   they always looked cheaper): ~0.27 ms per call, ~0.17 ms per message.
3. The messages trigram GIN indexes (0009_search_gin) buffer up to 512 kB of new entries instead of 128 kB.
   Every message is inserted into them, and every delivered bot reply again (its delivery update sets the
   platform's message id, an indexed column, so it is not HOT). The pending list is merged into the index
   each time it fills, at a cost per distinct trigram, so a longer list merges frequent trigrams less
   often. Measured as backend CPU on a copy of the table (20k rows, then 4,000 single-row inserts of FAQ
   texts and their delivery updates): the two GIN indexes cost ~0.13 ms per insert and per update at
   128 kB; 512 kB saves ~0.05 ms of each, 1 MB ~0.07. A text search scans the pending list: at most ~8 ms
   more at 512 kB (0009 measured ~50 ms for the 4 MB default), hence not more.

Revision ID: i23n_pg_cpu
Revises: i17b_ingest_attributes
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "i23n_pg_cpu"
down_revision = "i17b_ingest_attributes"
branch_labels = None
depends_on = None

INGEST_SIGNATURE = ("bigint, boolean, timestamptz, text[], text[], text[], text[], text[], text[], text[], "
                    "timestamptz[], text[], text[], text[], text[], text[], text[], text[], text[]")
PENDING_LIMIT_KB = 512
OLD_PENDING_LIMIT_KB = 128  # 0009_search_gin
MESSAGE_GIN = ("ix_messages_text_trgm", "ix_messages_text_spaced")


LOGGED = r"""
CREATE OR REPLACE FUNCTION scrm_ingest_logged(
    p_inbox bigint, p_new_on_resolved boolean, p_now timestamptz,
    p_external_ids text[], p_senders text[], p_texts text[], p_content_types text[], p_previews text[],
    p_attachments text[], p_payloads text[], p_sent_ats timestamptz[], p_subjects text[],
    p_names text[], p_emails text[], p_phones text[], p_languages text[], p_avatars text[], p_usernames text[],
    p_attributes text[], p_channel text, p_event_content_types text[], p_auto_submitted boolean[],
    p_log_new_contacts boolean, p_log_changed_contacts boolean)
RETURNS TABLE (idx integer, outcome text, message_id bigint, conversation_id bigint, contact_id bigint,
               handler text, previous_status text, contact_changed boolean, contact_created boolean)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
AS $fn$
#variable_conflict use_column
BEGIN
    -- The rows are the events the Python path logs (uow/event_log), in the order ingest_pg.store_fast lists
    -- them: new people by sender id (code-point order), then per message its contact and status changes,
    -- then per message its conversation.created / reopen / message.created. A data-modifying CTE always runs.
    RETURN QUERY
    WITH r AS MATERIALIZED (
        SELECT b.idx, b.outcome, b.message_id, b.conversation_id, b.contact_id, b.handler, b.previous_status,
               b.contact_changed, b.contact_created
        FROM scrm_ingest_batch(p_inbox, p_new_on_resolved, p_now, p_external_ids, p_senders, p_texts,
                               p_content_types, p_previews, p_attachments, p_payloads, p_sent_ats, p_subjects,
                               p_names, p_emails, p_phones, p_languages, p_avatars, p_usernames, p_attributes) AS b
    ), st AS (
        SELECT * FROM r WHERE r.outcome NOT IN ('slow', 'duplicate')
    ), logged AS (
        INSERT INTO events (conversation_id, name, payload, created_at)
        SELECT e.conv, e.name, e.payload, p_now FROM (
            SELECT 1 AS part, p_senders[st.idx] COLLATE "C" AS who, st.idx AS i, 0 AS step, NULL::bigint AS conv,
                   'contact.updated' AS name,
                   json_build_object('contact_id', st.contact_id, 'created', true) AS payload
            FROM st WHERE st.contact_created AND p_log_new_contacts
            UNION ALL
            SELECT 2, '', st.idx, 0, NULL, 'contact.updated', json_build_object('contact_id', st.contact_id)
            FROM st WHERE st.contact_changed AND p_log_changed_contacts
            UNION ALL
            SELECT 2, '', st.idx, 1, st.conversation_id, 'conversation.status_changed',
                   json_build_object('conversation_id', st.conversation_id, 'status', 'open',
                                     'previous', st.previous_status, 'by', 'contact')
            FROM st WHERE st.previous_status IS NOT NULL
            UNION ALL
            SELECT 3, '', st.idx, 0, st.conversation_id, 'conversation.created',
                   json_build_object('conversation_id', st.conversation_id, 'inbox_id', p_inbox,
                                     'contact_id', st.contact_id)
            FROM st WHERE st.outcome = 'created'
            UNION ALL
            SELECT 3, '', st.idx, 1, st.conversation_id, 'conversation.status_changed',
                   json_build_object('conversation_id', st.conversation_id, 'status', 'open',
                                     'previous', 'resolved', 'by', 'contact')
            FROM st WHERE st.outcome = 'reopened'
            UNION ALL
            SELECT 3, '', st.idx, 2, st.conversation_id, 'message.created',
                   json_build_object('message_id', st.message_id, 'conversation_id', st.conversation_id,
                                     'inbox_id', p_inbox, 'channel', p_channel, 'direction', 'in',
                                     'sender_kind', 'contact', 'handler', st.handler,
                                     'content_type', p_event_content_types[st.idx],
                                     'auto_submitted', p_auto_submitted[st.idx])
            FROM st
        ) AS e
        ORDER BY e.part, e.who, e.i, e.step
    )
    SELECT * FROM r;
END
$fn$
"""
LOGGED_SIGNATURE = f"{INGEST_SIGNATURE}, text, text[], boolean[], boolean, boolean"


def _existing(bind: sa.engine.Connection, names: tuple[str, ...]) -> list[str]:
    rows = bind.execute(sa.text("SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() "
                                "AND indexname = ANY(:names)"), {"names": list(names)})
    return [r[0] for r in rows]


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    op.execute(f"ALTER FUNCTION scrm_ingest_batch({INGEST_SIGNATURE}) SET plan_cache_mode = force_generic_plan")
    op.execute(LOGGED)
    for name in _existing(bind, MESSAGE_GIN):  # absent without pg_trgm (0007)
        op.execute(f"ALTER INDEX {name} SET (gin_pending_list_limit = {PENDING_LIMIT_KB})")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    for name in _existing(bind, MESSAGE_GIN):
        op.execute(f"ALTER INDEX {name} SET (gin_pending_list_limit = {OLD_PENDING_LIMIT_KB})")
    op.execute(f"DROP FUNCTION IF EXISTS scrm_ingest_logged({LOGGED_SIGNATURE})")
    op.execute(f"ALTER FUNCTION scrm_ingest_batch({INGEST_SIGNATURE}) RESET plan_cache_mode")
