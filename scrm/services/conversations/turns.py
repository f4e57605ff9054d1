"""Turns on a conversation: who may decide from its state and write, one transaction at a time.

Writers that read a conversation and act on what they read (bot rounds, desk bookkeeping, automation
rules, agents' actions) take turns on it across processes. On PostgreSQL a turn is a transaction-level
advisory lock on the conversation's id, held until commit, not a lock on its row: ingest does not take
turns, it only appends messages and moves the clocks relative to the stored row (ingest_writes,
migration 0013), so it must never wait behind a bot round. A row lock held for a whole round did make
it wait: every webhook of the batch waited while a busy (niced) worker computed an answer, 50-180 ms.
Agents' actions that change what ingest reads (status, handler) lock the row as well
(conversations.load). On SQLite the single writer takes turns already.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import BigInteger, bindparam, text

from scrm.db.database import shared_for
from scrm.db.models import Conversation
from scrm.db.sql import is_postgresql
from scrm.services.uow import Tx

TURNS = 0x5C13 << 48  # advisory key space of conversation turns; migrate.py locks 0x5C12_0001
_WAIT = text("SELECT pg_advisory_xact_lock(:key)").bindparams(bindparam("key", type_=BigInteger))


async def wait_turn(tx: Tx, conversation_ids: Iterable[int]) -> None:
    """Wait for this transaction's turn on each conversation (in id order, so two writers never deadlock)."""
    if not is_postgresql(tx.session):
        return
    shared = shared_for(tx.session)
    held = shared.turns if shared is not None else set()
    for conversation_id in sorted(set(conversation_ids) - held):
        await tx.session.execute(_WAIT, {"key": TURNS | conversation_id})


async def take_turn(tx: Tx, conversation_id: int) -> Conversation | None:
    """The conversation as its previous writer committed it, once it is this transaction's turn."""
    shared = shared_for(tx.session)
    if shared is not None and conversation_id in shared.turns:
        # The event log's consumer claimed the turn and loaded the row with its batch (event_batch.py).
        return await tx.session.get(Conversation, conversation_id)
    await wait_turn(tx, (conversation_id,))
    return await tx.session.get(Conversation, conversation_id, populate_existing=True)
