"""PostgreSQL: `scrm_ingest_batch` locks its batch's conversations in id order before it moves their clocks.

It updated them over `unnest(k_convs)`, which lists them in the senders' order (the order it locks their
identities in). The worker's event-log batch writes its conversations in id order (event_batch.
write_held_back). A batch of acknowledgements and a worker's batch that shared two conversations could
each lock one and wait for the other: PostgreSQL found the deadlock after `deadlock_timeout` (1 s),
aborted the acknowledgements' transaction and ingest ran it again. Every acknowledgement queued behind it
waited that second: bench/bot_reply.py's closed-loop ack runs stalled with p99 ≈ 1.05 s, and the server
log of a bench cluster showed "deadlock detected" between the two statements. Now the function takes the
row locks first, in id order (`SELECT ... ORDER BY id FOR NO KEY UPDATE` locks rows as the sort hands
them over), so both writers lock in one order and one waits for the other's commit instead. A conversation
that opens again (resolved: to the bot, afresh; pending or snoozed: same handler) is no longer updated in
the senders' loop, which locked it in the senders' order too: the final statement does it, with the clocks.

`CREATE OR REPLACE` resets the function's settings, so `plan_cache_mode` (0027) is set again.

Revision ID: i23l_ingest_lock_order
Revises: i23n_pg_cpu
"""
from __future__ import annotations

import importlib

from alembic import op

revision = "i23l_ingest_lock_order"
down_revision = "i23n_pg_cpu"
branch_labels = None
depends_on = None

INGEST_SIGNATURE = ("bigint, boolean, timestamptz, text[], text[], text[], text[], text[], text[], text[], "
                    "timestamptz[], text[], text[], text[], text[], text[], text[], text[], text[]")
PREVIOUS = importlib.import_module("scrm.db.migrations.versions.0026_i17b_ingest_attributes").FUNCTION
# (old text, new text) in order: the reopening writes leave the senders' loop for the final statement, which
# locks the batch's conversations in id order first.
EDITS = [
    ("""    k_added integer[] := '{}';
""", """    k_added integer[] := '{}';
    k_reset smallint[] := '{}';  -- 1: reopened to the bot, afresh; 2: pending or snoozed, open again
    v_reset smallint;
"""),
    ("""        v_previous := NULL;
        v_open_new := true;
""", """        v_previous := NULL;
        v_open_new := true;
        v_reset := 0;
"""),
    ("""            UPDATE conversations SET status = 'open', snoozed_until = NULL, resolved_at = NULL, handler = 'bot',
                                     bot_state = '{}', waiting_since = NULL
            WHERE id = conv.id;
            v_conv := conv.id;""", """            v_reset := 1;
            v_conv := conv.id;"""),
    ("""                UPDATE conversations SET status = 'open', snoozed_until = NULL, resolved_at = NULL WHERE id = conv.id;
                v_previous := conv.status;""", """                v_reset := 2;
                v_previous := conv.status;"""),
    ("""        k_added := k_added || array_length(s.idxs, 1);
""", """        k_added := k_added || array_length(s.idxs, 1);
        k_reset := k_reset || v_reset;
"""),
    ("""    UPDATE conversations cv
    SET last_activity_at = p_now, last_message_preview = v.preview, unread_count = cv.unread_count + v.added,
        waiting_since = coalesce(cv.waiting_since, p_now)
    FROM unnest(k_convs, k_previews, k_added) AS v(id, preview, added)
    WHERE cv.id = v.id;""", """    -- Locked in id order first, as every other writer of several conversations locks them (a worker's batch
    -- too): in the senders' order, this batch and a worker's could each hold one row the other waits for.
    PERFORM 1 FROM conversations WHERE id = ANY (k_convs) ORDER BY id FOR NO KEY UPDATE;
    UPDATE conversations cv
    SET status = CASE WHEN v.reset > 0 THEN 'open' ELSE cv.status END,
        snoozed_until = CASE WHEN v.reset > 0 THEN NULL ELSE cv.snoozed_until END,
        resolved_at = CASE WHEN v.reset > 0 THEN NULL ELSE cv.resolved_at END,
        handler = CASE WHEN v.reset = 1 THEN 'bot' ELSE cv.handler END,
        bot_state = CASE WHEN v.reset = 1 THEN '{}' ELSE cv.bot_state END,
        last_activity_at = p_now, last_message_preview = v.preview, unread_count = cv.unread_count + v.added,
        waiting_since = CASE WHEN v.reset = 1 THEN p_now ELSE coalesce(cv.waiting_since, p_now) END
    FROM unnest(k_convs, k_previews, k_added, k_reset) AS v(id, preview, added, reset)
    WHERE cv.id = v.id;"""),
]
FUNCTION = PREVIOUS
for old, new in EDITS:
    assert FUNCTION.count(old) == 1, old
    FUNCTION = FUNCTION.replace(old, new)


def statements(function: str = FUNCTION) -> list[str]:
    """The function created, with its setting (tests restore it with these after dropping it)."""
    return [function,
            f"ALTER FUNCTION scrm_ingest_batch({INGEST_SIGNATURE}) SET plan_cache_mode = force_generic_plan"]


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for statement in statements(FUNCTION):
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for statement in statements(PREVIOUS):
            op.execute(statement)
