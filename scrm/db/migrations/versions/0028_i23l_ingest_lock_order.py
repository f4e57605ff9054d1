"""PostgreSQL: `scrm_ingest_batch` locks its batch's conversations in id order before it moves their clocks.

It updated them over `unnest(k_convs)`, which lists them in the senders' order (the order it locks their
identities in). The worker's event-log batch writes its conversations in id order (event_batch.
write_held_back). A batch of acknowledgements and a worker's batch that shared two conversations could
each lock one and wait for the other: PostgreSQL found the deadlock after `deadlock_timeout` (1 s),
aborted the acknowledgements' transaction and ingest ran it again. Every acknowledgement queued behind it
waited that second: bench/bot_reply.py's closed-loop ack runs stalled with p99 ≈ 1.05 s, and the server
log of a bench cluster showed "deadlock detected" between the two statements. Now the function takes the
row locks first, in id order (`SELECT ... ORDER BY id FOR NO KEY UPDATE` locks rows as the sort hands
them over), so both writers lock in one order and one waits for the other's commit instead.

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
CLOCKS = """    UPDATE conversations cv
    SET last_activity_at = p_now, last_message_preview = v.preview, unread_count = cv.unread_count + v.added,"""
LOCK = """    -- Locked in id order first, as every other writer of several conversations locks them (a worker's batch
    -- too): in the senders' order, this batch and a worker's could each hold one row the other waits for.
    PERFORM 1 FROM conversations WHERE id = ANY (k_convs) ORDER BY id FOR NO KEY UPDATE;
"""
assert PREVIOUS.count(CLOCKS) == 1
FUNCTION = PREVIOUS.replace(CLOCKS, LOCK + CLOCKS)


def _create(function: str) -> None:
    op.execute(function)
    op.execute(f"ALTER FUNCTION scrm_ingest_batch({INGEST_SIGNATURE}) SET plan_cache_mode = force_generic_plan")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _create(FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _create(PREVIOUS)
